# Step 5 of issue 10, single-draw extras at the grid's budget: k = 1 (every grid method), LoRA-PT strict at k = 10;
# the BraTS-mini source at k = 10 lives in its own folder (the source is a fixed setting of a folder); decoder-only
# runs there too: a cross-domain source is where an encoder adapter would have to beat the decoder alone.
source "$(dirname "$0")/common.sh"
BUDGET=${BUDGET:?}
: "${LORAPT:?}" "${HYPS:?}" "${PDORA:?}" "${LORA:?}" "${DECODER:?}" "${FULL:?}"
bench --shots 1 --draws 1 --iterations "$BUDGET" \
  --methods "$LORAPT" "$HYPS" "$PDORA" "$LORA" "$DECODER" "$FULL" nnunet nnunet-ft
# the strict setting trains the adapter + head as one group (one rate): both of LoRA-PT's chosen rates are run and
# the report's validation Dice picks between them
RATES=${LORAPT#*@}
bench --shots 10 --draws 1 --iterations "$BUDGET" --methods "lorapt-strict@${RATES%,*}" "lorapt-strict@${RATES#*,}"
# same test cases and the same k = 10 draw as the main folder (no choice is made here: no validation cases)
python3 -c "import json,sys; s=json.load(open(sys.argv[1])); open(sys.argv[2],'w').write('\n'.join(s['test_cases']));
json.dump({'10': s['train_draws']['10'][:1]}, open(sys.argv[3],'w'))" "$WORKDIR/benchmark.json" \
  "${WORKDIR}_test_cases.txt" "${WORKDIR}_draws_k10.json"
"$HP" benchmark --target "$TARGET" --source "$(dirname "$TARGET")/Dataset002_BraTS2015mini" --source-iterations 1500 \
  --test-cases "${WORKDIR}_test_cases.txt" --train-draws "${WORKDIR}_draws_k10.json" --n-val 0 --seed 0 \
  --preset compact --device cpu --workdir "${WORKDIR}_brats" --shots 10 --draws 1 --iterations "$BUDGET" \
  --methods "$LORAPT" "$DECODER" "$FULL"
