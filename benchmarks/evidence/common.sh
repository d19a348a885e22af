# Shared settings of the issue-10 evidence runs: one work folder (outside the repository) that every step extends,
# so that all runs share one label-shift source pre-training, one test set (40 cases) and one validation set
# (20 cases). Source: the other 60 labelled cases with anterior + posterior merged, 1,500 iterations.
# Usage: WORKDIR=/work/bench_evidence bash benchmarks/evidence/<step>.sh   (from the repository root)
set -euo pipefail
WORKDIR=${WORKDIR:-/work/bench_evidence}
TARGET=${TARGET:-../shared/data/Dataset004_Hippocampus}
HP=${HP:-hippo-peft}
bench() {
  "$HP" benchmark --target "$TARGET" --source label-shift --n-source 60 --source-iterations 1500 --n-test 40 \
    --n-val 20 --seed 0 --preset compact --device cpu --workdir "$WORKDIR" "$@"
}
