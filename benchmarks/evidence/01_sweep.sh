# Step 2 of issue 10: learning-rate sweep, k = 10, one draw, 500 iterations; every rate chosen on the validation
# cases (report section "Learning rates, chosen on the validation cases"). Reference rates: 1e-3 (LoRA-PT, HyPS,
# decoder-only, full fine-tuning in short budgets), 2e-3 (PDoRA); each swept at 0.3x, 1x, 3x for both groups.
source "$(dirname "$0")/common.sh"
bench --shots 10 --draws 1 --iterations 500 \
  --methods lorapt@1e-3 decoderonly@1e-3 full@1e-3 hyps@1e-3 pdora@2e-3 \
            lorapt@3e-4 decoderonly@3e-4 full@3e-4 hyps@3e-4 pdora@6e-4 \
            lorapt@3e-3 decoderonly@3e-3 full@3e-3 hyps@3e-3 pdora@6e-3
# LoRA, the PEFT baseline of the grid, gets the same care (a later command on the same folder)
bench --shots 10 --draws 1 --iterations 500 --methods lora@1e-3 lora@3e-4 lora@3e-3
