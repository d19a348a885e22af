#!/usr/bin/env bash
# The prepared GPU check: the CUDA path of the adapters and of nnU-Net training with our trainers, in about 5 minutes.
#
#   on the GPU machine (repo root; wheels in .whl/ and the data sample in .gpu_sample/ from scripts/gpu_wheels.sh):
#       bash scripts/gpu_check.sh                 # writes to $OUT (the device tool's folder) or --out DIR
#   here, on the CPU (tiny presets, bf16 autocast and a CPU GradScaler, phantoms; what the tests run):
#       bash scripts/gpu_check.sh --dry-run --out /tmp/gpu_check
#
# Steps (each under its own timeout; GPU_CHECK_TIMEOUT_<STEP>=seconds overrides; --steps a,b picks some):
#   versions  versions, GPU name, which imports work
#   adapters  every method x backbone (tiny): exact start, merge, gradients with autocast + GradScaler; compile
#   train     nnUNetv2_train LoRA-PT (UNETR), HyPS and PDoRA (SwinUNETR), full fine-tuning (UNETR) for N iterations
#             from a seeded random source checkpoint; nnUNetv2_predict with the adapted and with the merged model
#   bench     benchmarks/adapters.py, one process per backbone (paper presets on the GPU, tiny in the dry run)
# Output, written after every step (a step that times out leaves the earlier ones reported): results.jsonl (one
# JSON line per thing checked, plus a status line per step), summary.md, logs.tar.gz.
set -uo pipefail
DRY=0
OUTDIR=${OUT:-}
STEPS="versions adapters train bench"
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUTDIR=$2; shift ;;
    --steps) STEPS=${2//,/ }; shift ;;
    *) echo "unknown option $1 (use --dry-run, --out DIR, --steps a,b)"; exit 2 ;;
  esac
  shift
done
if [ -n "$OUTDIR" ]; then mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd); fi  # relative to the caller
cd "$(dirname "$0")/.."
REPO=$PWD
OUTDIR=${OUTDIR:-$REPO/gpu_check_out}
if [ "$DRY" = 1 ]; then
  DEVICE=cpu PRESET=tiny BENCH_PRESET=tiny N=${GPU_CHECK_N:-4} NCASES=6 BENCH_STEPS=1
  PY=${PY:-$REPO/.venv/bin/python}
  COMPILE=${GPU_CHECK_COMPILE:-lorapt}  # CPU compilation of all three would take minutes: one shows the path
  LIMITS="versions=120 adapters=600 train=900 bench=300"
else
  DEVICE=cuda PRESET=paper BENCH_PRESET=paper N=${GPU_CHECK_N:-100} NCASES=20 BENCH_STEPS=5
  PY=${PY:-python3}
  COMPILE=${GPU_CHECK_COMPILE:-lorapt hyps pdora}
  LIMITS="versions=30 adapters=90 train=150 bench=60"
fi
BENCH_METHODS=${GPU_CHECK_BENCH_METHODS:-full lorapt hyps pdora}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d)
LOGS=$WORK/logs
mkdir -p "$LOGS"
RESULTS=$OUTDIR/results.jsonl
: > "$RESULTS"
export PY DEVICE PRESET BENCH_PRESET N NCASES BENCH_STEPS COMPILE BENCH_METHODS WORK RESULTS REPO
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# Wheels carried to the GPU machine (it has no package registry); SimpleITK stays behind (its wheel alone is about
# 50 MB): a stub answers `import SimpleITK` and nnU-Net reads with NibabelIO (set in the sample's dataset.json).
if [ "$DRY" = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  t0=$(date +%s)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$LOGS/install.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || echo "wheel installation failed (rc $rc): see logs/install.log"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  ok=false
  [ $rc -eq 0 ] && ok=true
  printf '{"step": "install", "rc": %d, "ok": %s, "seconds": %d}\n' "$rc" "$ok" "$(( $(date +%s) - t0 ))" >>"$RESULTS"
fi
if ! "$PY" -c "import SimpleITK" 2>/dev/null; then
  export PYTHONPATH=$REPO/scripts/gpu_stubs${PYTHONPATH:+:$PYTHONPATH}
fi
# hippo_peft from this checkout. trainers/ and planners/ become hippo_peft.trainers / hippo_peft.planners only through
# an install (setup.cfg package_dir), so a PYTHONPATH entry would not do: unless $PY already imports this checkout's
# hippo_peft (the editable install of scripts/setup.sh), install it like the wheels, offline, with the setuptools
# that is there. GPU_CHECK_INSTALL_CHECKOUT=1 installs it in any case (the tests check this path on the CPU).
checkout_imported() {  # from outside the checkout, as every step runs
  (cd / && "$PY" -c "import importlib.util as u, os, sys; s = u.find_spec('hippo_peft.trainers'); \
sys.exit(not s or os.path.realpath(u.find_spec('hippo_peft').origin) != os.path.realpath('$REPO/hippo_peft/__init__.py'))") \
    2>/dev/null
}
if [ "${GPU_CHECK_INSTALL_CHECKOUT:-0}" = 1 ] || ! checkout_imported; then
  t0=$(date +%s)
  mkdir -p "$WORK/src"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
  cp -r "$REPO/setup.cfg" "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/hippo_peft" "$REPO/trainers" \
    "$REPO/planners" "$WORK/src/"
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$WORK/site" \
    "$WORK/src" >"$LOGS/install_checkout.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || echo "installing the checkout failed (rc $rc): see logs/install_checkout.log"
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
  ok=false
  if [ $rc -eq 0 ] && (cd / && "$PY" -c "import importlib.util as u, os, sys; s = u.find_spec('hippo_peft.trainers'); \
sys.exit(not s or not os.path.realpath(s.origin).startswith(os.path.realpath('$WORK/site') + os.sep))") 2>/dev/null
  then ok=true; fi
  printf '{"step": "install-checkout", "rc": %d, "ok": %s, "seconds": %d}\n' "$rc" "$ok" "$(( $(date +%s) - t0 ))" \
    >>"$RESULTS"
fi
cd "$WORK"  # the steps run outside the checkout: its hippo_peft/ folder must not shadow the installed package
STEPS_PY="$PY $REPO/scripts/gpu_check_steps.py"
export STEPS_PY

# nnU-Net's and our commands through the interpreter (on the GPU machine the wheels bring no console scripts)
entry() {  # entry MODULE:FUNCTION NAME ARGS...: a console script of a package installed without its scripts
  local target=$1 name=$2
  shift 2
  "$PY" -c "import sys; from ${target%:*} import ${target#*:} as f; sys.argv[0] = '$name'; sys.exit(f())" "$@"
}
nn_train() { entry nnunetv2.run.run_training:run_training_entry nnUNetv2_train "$@"; }
nn_predict() { entry nnunetv2.inference.predict_from_raw_data:predict_entry_point nnUNetv2_predict "$@"; }
nn_predict_folder() {
  entry nnunetv2.inference.predict_from_raw_data:predict_entry_point_modelfolder nnUNetv2_predict_from_modelfolder "$@"
}
hp() { entry hippo_peft.cli:main hippo-peft "$@"; }
plans_name() { "$PY" -c "from hippo_peft.experiments.pipeline import our_plans; print(our_plans('$1', '$PRESET'))"; }
export -f entry nn_train nn_predict nn_predict_folder hp plans_name

versions_step() { $STEPS_PY versions --device "$DEVICE" --jsonl "$RESULTS"; }

adapters_step() {
  # shellcheck disable=SC2086  # COMPILE is a list
  $STEPS_PY adapters --device "$DEVICE" --preset tiny --compile $COMPILE --jsonl "$RESULTS"
}

train_step() {
  set -e
  export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
  export nnUNet_compile=f nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-2} nnUNet_def_n_proc=2
  mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
  export "$(hp env | sed -n 's/^export //p' | head -1)"  # nnUNet_extTrainer: how nnU-Net finds our trainers
  local sample=() rc=0
  if [ -d "$REPO/.gpu_sample/Dataset004_Hippocampus" ] && [ "$DEVICE" = cuda ]; then
    sample=(--sample "$REPO/.gpu_sample/Dataset004_Hippocampus")  # real MRI where it was carried
  elif ! "$PY" -c "import SimpleITK, sys; sys.exit(getattr(SimpleITK, 'HIPPO_PEFT_STUB', False))"; then
    echo "no .gpu_sample/ (bash scripts/gpu_wheels.sh makes it) and no SimpleITK to write phantoms with"; return 1
  fi
  $STEPS_PY data --out "$nnUNet_raw" --n "$NCASES" "${sample[@]}"
  for arch in unetr swinunetr; do
    hp plan -d 980 --arch $arch --preset "$PRESET" -np 2 --no-verify
    $STEPS_PY seed-checkpoint --plans "$nnUNet_preprocessed/Dataset980_GPUCheck/$(plans_name $arch).json" \
      --out "$WORK/source_$arch.safetensors"
  done
  local run name arch trainer plans
  # LoRA-PT on UNETR, HyPS and PDoRA on SwinUNETR (the papers' setting), full fine-tuning of UNETR
  for run in "UNETR_LoRAPT unetr" "SwinUNETR_HyPS swinunetr" "SwinUNETR_PDoRA swinunetr" "UNETR unetr"; do
    read -r name arch <<<"$run"
    trainer=nnUNetTrainer_${name}_${N}it
    plans=$(plans_name "$arch")
    nn_train 980 3d_fullres 0 -tr "$trainer" -p "$plans" -pretrained_weights "$WORK/source_$arch.safetensors" \
      -device "$DEVICE" >"$LOGS/train_$trainer.log" 2>&1 || { echo "training $trainer failed"; rc=1; }
    # reported at once: a timeout later in the step keeps this run's line
    $STEPS_PY train-stats "$nnUNet_results/Dataset980_GPUCheck/${trainer}__${plans}__3d_fullres/fold_0" \
      --jsonl "$RESULTS" || rc=1
  done
  local model=$nnUNet_results/Dataset980_GPUCheck/nnUNetTrainer_UNETR_LoRAPT_${N}it__$(plans_name unetr)__3d_fullres
  mkdir -p "$WORK/predict_in"
  for f in $(ls "$nnUNet_raw/Dataset980_GPUCheck/imagesTr" | head -3); do
    cp "$nnUNet_raw/Dataset980_GPUCheck/imagesTr/$f" "$WORK/predict_in/"
  done
  nn_predict -i "$WORK/predict_in" -o "$WORK/pred_adapted" -d 980 -c 3d_fullres \
    -tr "nnUNetTrainer_UNETR_LoRAPT_${N}it" -p "$(plans_name unetr)" -f 0 -device "$DEVICE" --disable_tta -npp 1 -nps 1
  hp merge "$model" -o "$WORK/merged"
  nn_predict_folder -i "$WORK/predict_in" -o "$WORK/pred_merged" -m "$WORK/merged" -f 0 -device "$DEVICE" \
    --disable_tta -npp 1 -nps 1
  $STEPS_PY compare "$WORK/pred_adapted" "$WORK/pred_merged" --jsonl "$RESULTS" || rc=1
  return $rc
}

bench_step() {
  local rc=0 arch method
  for arch in unetr swinunetr; do
    for method in $BENCH_METHODS; do  # one adapters.py per backbone and method: each line kept as it comes
      "$PY" "$REPO/benchmarks/adapters.py" --arch $arch --preset "$BENCH_PRESET" --steps "$BENCH_STEPS" \
        --device "$DEVICE" --method "$method" --out "$WORK/bench.json" || { rc=1; continue; }
      "$PY" - "$WORK/bench.json" "$RESULTS" <<'PY' || rc=1
import json, sys
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "a") as f:
    for r in rows:
        row = {k: v for k, v in r.items() if k != "s_per_step_all"}
        f.write(json.dumps({"step": "bench", "ok": True, **row}) + "\n")
PY
    done
  done
  return $rc
}
export -f versions_step adapters_step train_step bench_step

limit_of() {  # the step's limit: GPU_CHECK_TIMEOUT_<STEP>, else the default above
  local var="GPU_CHECK_TIMEOUT_${1^^}"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  for kv in $LIMITS; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done
}

failed=0
for name in $STEPS; do
  limit=$(limit_of "$name")
  [ -n "$limit" ] || { echo "unknown step $name"; exit 2; }
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" bash -c "${name}_step" >"$LOGS/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  timed_out=false  # 124: timeout stopped it; 137 (SIGKILL) counts only at the limit (else: killed, e.g. out of memory)
  if [ $rc -eq 124 ] || { [ $rc -eq 137 ] && awk "BEGIN {exit !($t1 - $t0 >= $limit)}"; }; then timed_out=true; fi
  [ $rc -eq 0 ] || failed=1
  seconds=$(awk "BEGIN {printf \"%.1f\", $t1 - $t0}")
  printf '{"step": "status", "name": "%s", "rc": %d, "timed_out": %s, "limit_s": %s, "seconds": %s}\n' \
    "$name" "$rc" "$timed_out" "$limit" "$seconds" >>"$RESULTS"
  echo "step $name: rc $rc ($seconds s of $limit)"
  $STEPS_PY summary "$RESULTS" >"$OUTDIR/summary.md" 2>>"$LOGS/summary.log"
  tar -czf "$OUTDIR/logs.tar.gz" -C "$WORK" logs
done
cat "$OUTDIR/summary.md"
rm -rf "$WORK"
exit $failed
