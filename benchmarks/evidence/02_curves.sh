# Step 3 of issue 10: learning curves, k = 10, one draw: every budget its own run (the poly schedule depends on N).
# LoRA-PT (papers' setting) and full fine-tuning at the rates chosen on the validation cases in 01_sweep.sh
# (LORAPT / FULL below), nnU-Net from scratch at its own defaults. Run with nothing else on the machine: the
# compute axis is the sum of the recorded step times (each run records its load average; see the report).
source "$(dirname "$0")/common.sh"
LORAPT=${LORAPT:?set LORAPT to the chosen token, e.g. lorapt@1e-3}
FULL=${FULL:?set FULL to the chosen token, e.g. full@1e-3}
bench --shots 10 --draws 1 --iterations 250 500 1000 2000 --methods nnunet "$LORAPT" "$FULL"
