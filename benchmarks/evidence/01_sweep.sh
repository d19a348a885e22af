# Step 2 of issue 10: learning-rate sweep, k = 10, one draw, 500 iterations; every rate chosen on the validation
# cases (report section "Learning rates, chosen on the validation cases"). Reference rates: 1e-3 (LoRA-PT, HyPS,
# decoder-only, full fine-tuning in short budgets), 2e-3 (PDoRA); each swept at 0.3x, 1x, 3x for both groups.
source "$(dirname "$0")/common.sh"
bench --shots 10 --draws 1 --iterations 500 \
  --methods lorapt@1e-3 decoderonly@1e-3 full@1e-3 hyps@1e-3 pdora@2e-3 \
            lorapt@3e-4 decoderonly@3e-4 full@3e-4 hyps@3e-4 pdora@6e-4 \
            lorapt@3e-3 decoderonly@3e-3 full@3e-3 hyps@3e-3 pdora@6e-3
# Round 2, after reading round 1's validation Dice: every best rate lay at an end of the swept range (LoRA-PT at the
# low end, the others at the high end), so the range is extended one step beyond it; LoRA-PT's adapter collapsed at
# 3e-3 while the decoder alone did best at 3e-3, so LoRA-PT also runs with the two groups apart. LoRA, the PEFT
# baseline of the grid, gets the same sweep.
bench --shots 10 --draws 1 --iterations 500 \
  --methods lorapt@1e-4 decoderonly@1e-2 full@1e-2 hyps@1e-2 pdora@2e-2 lorapt@3e-4,3e-3 \
            lora@1e-3 lora@3e-4 lora@3e-3
# Round 3: HyPS and LoRA were still best at the top of their ranges; HyPS and PDoRA get the adapter / decoder split
# that lifted LoRA-PT (the decoder alone does best at 3e-3).
bench --shots 10 --draws 1 --iterations 500 --methods hyps@3e-2 lora@1e-2 hyps@1e-3,3e-3 pdora@2e-3,3e-3
