#!/usr/bin/env bash
# Set up a fresh clone: a virtual environment in .venv with hippo_peft and its test dependencies.
# nnunetv2 pulls torch and a matching torchvision (nnU-Net's trainer lookup imports timm -> torchvision, so the
# two must come from the same build); we pin neither.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# editable: Python started in the checkout imports hippo_peft/ from the source folder, and the editable finder maps
# trainers/ and planners/ to hippo_peft.trainers / hippo_peft.planners there as well as from any other directory.
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python - <<'PY'
import torch, torchvision, nnunetv2, monai
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, monai {monai.__version__}")
from torchvision.ops import nms  # fails when torch and torchvision come from different builds
PY
echo "Set up .venv. Demo: .venv/bin/hippo-peft demo   Tests: .venv/bin/python -m pytest"
