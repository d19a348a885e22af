# Copy the finished runs' records and the report of the evidence work folder into the repository
# (docs/benchmark/evidence/): run records (JSON: settings, draws, per-case metrics), CSVs, tables and plots.
# Neither images nor labels nor weights are copied. cases.csv (every test case of every run, > 1 MiB) is not
# copied either: the run records hold the same per-case metrics, and `hippo-peft benchmark-report
# docs/benchmark/evidence` rebuilds it (in docs/benchmark/evidence/report/, not tracked).
source "$(dirname "$0")/common.sh"
OUT=${OUT:-docs/benchmark/evidence}
"$HP" benchmark-report "$WORKDIR"   # the report of every finished run, also while a step still runs
mkdir -p "$OUT/runs"
cp "$WORKDIR"/runs/*.json "$OUT/runs/"
cp "$WORKDIR"/benchmark.json "$OUT/"
cp "$WORKDIR"/report/{benchmark.md,runs.csv} "$OUT/"
cp "$WORKDIR"/report/*.png "$OUT/"
# the BraTS-mini-source extra (04_extras.sh) has its own folder: its records and report under brats/
if [ -f "${WORKDIR}_brats/benchmark.json" ]; then
  "$HP" benchmark-report "${WORKDIR}_brats"
  mkdir -p "$OUT/brats/runs"
  cp "${WORKDIR}_brats"/runs/*.json "$OUT/brats/runs/"
  cp "${WORKDIR}_brats"/benchmark.json "${WORKDIR}_brats"/report/{benchmark.md,runs.csv} "$OUT/brats/"
fi
