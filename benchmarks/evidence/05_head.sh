# The head rules measured: before (the head fresh, '+freshhead') and after (every target class from the label-shift
# source's one hippocampus class, bias - log 2), on the evidence's settings (common.sh: the same seed, test,
# validation cases and draws) at the grid's budget and chosen rates. A new work folder: the old one is gone and
# nnU-Net does not seed its runs, so the label-shift source is pre-trained again and the "before" runs are rerun on
# it. One run at a time, nothing else on the machine.
# Usage: WORKDIR=/work/bench_head bash benchmarks/evidence/05_head.sh   (then OUT=docs/benchmark/head export.sh)
source "$(dirname "$0")/common.sh"
BUDGET=${BUDGET:-500}
both() { echo "$1+freshhead" "$1"; }  # before, after: one after the other on each draw
# 1. the configurations that lost a label in the grid (full fine-tuning draw 1, LoRA-PT draw 2), every draw
bench --shots 10 --draws 3 --iterations "$BUDGET" --methods $(both full@3e-3) $(both lorapt@3e-4,3e-3)
# 2. the grid's other methods
bench --shots 10 --draws 3 --iterations "$BUDGET" --methods $(both pdora@6e-3) $(both hyps@1e-2) $(both decoderonly@3e-3)
# 3. k = 1: full fine-tuning lost the posterior there
bench --shots 1 --draws 1 --iterations "$BUDGET" --methods $(both full@3e-3)
# 4. repeats of the configurations that lost a label in the grid: full fine-tuning draw 1, LoRA-PT draw 2. Repeat 0
#    is step 1's run; "before" three times in all, "after" four (so that the after-runs reach 21 with k = 10 and 1)
bench --shots 10 --draws 3 --repeats 3 --only-draws 1 --iterations "$BUDGET" --methods $(both full@3e-3)
bench --shots 10 --draws 3 --repeats 3 --only-draws 2 --iterations "$BUDGET" --methods $(both lorapt@3e-4,3e-3)
bench --shots 10 --draws 3 --repeats 4 --only-draws 1 --iterations "$BUDGET" --methods full@3e-3
bench --shots 10 --draws 3 --repeats 4 --only-draws 2 --iterations "$BUDGET" --methods lorapt@3e-4,3e-3
