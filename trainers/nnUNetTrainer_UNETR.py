"""UNETR trainers: from scratch, or full fine-tuning with ``-pretrained_weights``."""
from hippo_peft.trainers.base import SHORT, SMOKE, nnUNetTrainer_TransformerBase


class nnUNetTrainer_UNETR(nnUNetTrainer_TransformerBase):
    """MONAI UNETR, AdamW lr 1e-4, warm-up + poly, nnU-Net's 1000 x 250 iterations."""

    arch = "unetr"


class nnUNetTrainer_UNETR_short(nnUNetTrainer_UNETR):
    """20 epochs x 25 iterations at lr 1e-3: CPU checks and demos."""

    schedule = SHORT
    initial_lr_default = 1e-3


class nnUNetTrainer_UNETR_smoke(nnUNetTrainer_UNETR):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE
