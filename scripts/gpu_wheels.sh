#!/usr/bin/env bash
# What the GPU machine lacks, fetched here (it has no package registry): cp312 manylinux x86-64 wheels, --no-deps,
# pinned to the versions this checkout's .venv resolved, into .whl/ (.gitignore); plus a 20-case data sample of
# the MSD hippocampus in .gpu_sample/ (.gitignore; never committed). Prints the sizes: what travels (repository,
# wheels, sample) must stay under 64 MiB.
#
#   bash scripts/gpu_wheels.sh            # then, with the device tool: run `bash scripts/gpu_check.sh`
#                                         #   with carry [".whl", ".gpu_sample"]
#
# The list is what nnU-Net's training and prediction and MONAI's networks import (found with
# `python scripts/gpu_check_steps.py needed` here) minus what the GPU image already has (its package list in the
# device tool's KINDS.md: torch, numpy, scipy, pandas, scikit-image, tifffile, timm, einops, safetensors, ...).
# Left out on purpose: SimpleITK (its wheel alone is about 50 MB; scripts/gpu_stubs/SimpleITK answers nnU-Net's and
# batchgeneratorsv2's module-level imports, and the sample is read with nnU-Net's NibabelIO), imagecodecs (tifffile
# imports it only if present) and the packages nnU-Net declares but these paths never import (yacs, graphviz, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}
SAMPLE_FROM=${SAMPLE_FROM:-../shared/data/Dataset004_Hippocampus}
PACKAGES=(nnunetv2 monai acvl-utils dynamic-network-architectures batchgenerators batchgeneratorsv2 blosc2 ndindex
          numexpr connected-components-3d nibabel)
mkdir -p "$DEST"
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
  norm=$(echo "$name" | tr '-' '_' | tr '[:upper:]' '[:lower:]')
  if ls "$DEST" 2>/dev/null | tr '[:upper:]' '[:lower:]' | grep -q "^${norm}-${version}-"; then
    continue  # already fetched
  fi
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$name==$version" 2>/dev/null; then
    # published as source only (acvl-utils, batchgenerators, ...): build the wheel here, which must be pure Python
    "$PY" -m pip wheel -q --no-deps --no-binary "$name" -w "$DEST" "$name==$version" 2>/dev/null
    built=$(ls "$DEST" | grep -i "^${norm}-${version}-" | head -1)
    case $built in
      *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
      *) echo "$name $version has no cp312 manylinux wheel and does not build as pure Python ($built)"; exit 1 ;;
    esac
  fi
done
# the data sample: the first 20 labelled cases, copied (a link would not travel)
if [ -d "$SAMPLE_FROM" ] && [ ! -d .gpu_sample/Dataset004_Hippocampus ]; then
  "$PY" - "$SAMPLE_FROM" <<'PY'
import json, shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(".gpu_sample/Dataset004_Hippocampus")
dj = json.loads((src / "dataset.json").read_text())
ending = dj["file_ending"]
cases = sorted(p.name[: -len(ending)] for p in (src / "labelsTr").glob(f"*{ending}"))[:20]
for sub in ("imagesTr", "labelsTr"):
    (dst / sub).mkdir(parents=True, exist_ok=True)
for c in cases:
    shutil.copy(src / "labelsTr" / f"{c}{ending}", dst / "labelsTr")
    shutil.copy(src / "imagesTr" / f"{c}_0000{ending}", dst / "imagesTr")
(dst / "dataset.json").write_text(json.dumps({**dj, "numTraining": len(cases)}, indent=1))
PY
fi
echo "wheels: $(du -sh "$DEST" | cut -f1) in $(ls "$DEST"/*.whl | wc -l) files"
ls -S "$DEST" | head -5 | sed 's/^/  /'
[ -d .gpu_sample ] && echo "data sample: $(du -sh .gpu_sample | cut -f1)"
echo "repository (tracked files): $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes"
echo "what travels: $(du -scb "$DEST" .gpu_sample 2>/dev/null | tail -1 | cut -f1) bytes of wheels and sample" \
  "+ the repository; the limit is 64 MiB (67108864 bytes)"
