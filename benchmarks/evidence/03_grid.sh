# Step 5 of issue 10: the grid at the budget chosen on the validation curves (BUDGET), k in {2, 10} x 3 draws, every
# method at the rate chosen on the validation cases (tokens below, from the report of 01_sweep.sh), nnU-Net from
# scratch and nnU-Net pre-trained on the same source (nnunet-ft: the target's stock plans moved to the source,
# pre-trained for the same 1,500 iterations). Runs that exist (k = 10, draw 0, same token and budget) are kept.
source "$(dirname "$0")/common.sh"
BUDGET=${BUDGET:?set BUDGET to the iterations chosen on the validation curves}
: "${LORAPT:?}" "${HYPS:?}" "${PDORA:?}" "${LORA:?}" "${DECODER:?}" "${FULL:?}"
bench --shots 10 2 --draws 3 --iterations "$BUDGET" \
  --methods "$LORAPT" "$HYPS" "$PDORA" "$LORA" "$DECODER" "$FULL" nnunet nnunet-ft
