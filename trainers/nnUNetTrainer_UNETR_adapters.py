"""UNETR with each adaptation method. LoRA-PT is the method its paper pairs with UNETR; the others run in the
same machinery with the same budget. Each has ``_short`` and ``_smoke`` schedule variants for CPU."""
from hippo_peft.trainers.adapted import nnUNetTrainer_AdapterBase, schedule_variants


class nnUNetTrainer_UNETR_Adapter(nnUNetTrainer_AdapterBase):
    arch = "unetr"


class nnUNetTrainer_UNETR_LoRAPT(nnUNetTrainer_UNETR_Adapter):
    """LoRA-PT: tubal rank 1 principal tensors of the stacked attention / MLP weights (reference lr 1e-3, wd 1e-5)."""
    method = "lorapt"


class nnUNetTrainer_UNETR_HyPS(nnUNetTrainer_UNETR_Adapter):
    """HyPS: rank-2 principal parallel branch + width-2 serial adapters on every transformer linear."""
    method = "hyps"
    weight_decay_default = 2e-5


class nnUNetTrainer_UNETR_PDoRA(nnUNetTrainer_UNETR_Adapter):
    """PDoRA: rank-8 principal MLP weights as magnitude x direction (reference lr 2e-3, wd 6e-5)."""
    method = "pdora"
    initial_lr_default = 2e-3
    weight_decay_default = 6e-5


class nnUNetTrainer_UNETR_LoRA(nnUNetTrainer_UNETR_Adapter):
    """LoRA, rank 8, alpha 8, on every transformer linear."""
    method = "lora"


class nnUNetTrainer_UNETR_DoRA(nnUNetTrainer_UNETR_Adapter):
    """DoRA, rank 8, alpha 8, on every transformer linear."""
    method = "dora"


class nnUNetTrainer_UNETR_PiSSA(nnUNetTrainer_UNETR_Adapter):
    """PiSSA, rank 8, on every transformer linear."""
    method = "pissa"


class nnUNetTrainer_UNETR_HeadOnly(nnUNetTrainer_UNETR_Adapter):
    """Only the segmentation head trains."""
    method = "headonly"


class nnUNetTrainer_UNETR_DecoderOnly(nnUNetTrainer_UNETR_Adapter):
    """Everything outside the ViT encoder trains (CNN skip encoders, decoder, head)."""
    method = "decoderonly"


TRAINERS = [n for n in list(globals()) if n.startswith("nnUNetTrainer_UNETR_") and n != "nnUNetTrainer_UNETR_Adapter"]
TRAINERS += [v for n in list(TRAINERS) for v in schedule_variants(globals(), globals()[n])]
