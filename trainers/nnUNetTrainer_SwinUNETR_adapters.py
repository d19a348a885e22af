"""SwinUNETR with each adaptation method. HyPS and PDoRA are the methods their papers pair with SwinUNETR; the others
run in the same machinery with the same budget. Each has ``_short`` and ``_smoke`` schedule variants for CPU."""
from hippo_peft.trainers.adapted import nnUNetTrainer_AdapterBase, schedule_variants


class nnUNetTrainer_SwinUNETR_Adapter(nnUNetTrainer_AdapterBase):
    arch = "swinunetr"


class nnUNetTrainer_SwinUNETR_LoRAPT(nnUNetTrainer_SwinUNETR_Adapter):
    """LoRA-PT: tubal rank 1 principal tensors of the stacked attention / MLP weights (reference lr 1e-3, wd 1e-5)."""
    method = "lorapt"


class nnUNetTrainer_SwinUNETR_HyPS(nnUNetTrainer_SwinUNETR_Adapter):
    """HyPS: rank-2 principal parallel branch + width-2 serial adapters on every transformer linear."""
    method = "hyps"
    weight_decay_default = 2e-5


class nnUNetTrainer_SwinUNETR_PDoRA(nnUNetTrainer_SwinUNETR_Adapter):
    """PDoRA: rank-8 principal MLP weights as magnitude x direction (reference lr 2e-3, wd 6e-5)."""
    method = "pdora"
    initial_lr_default = 2e-3
    weight_decay_default = 6e-5


class nnUNetTrainer_SwinUNETR_LoRA(nnUNetTrainer_SwinUNETR_Adapter):
    """LoRA, rank 8, alpha 8, on every transformer linear."""
    method = "lora"


class nnUNetTrainer_SwinUNETR_DoRA(nnUNetTrainer_SwinUNETR_Adapter):
    """DoRA, rank 8, alpha 8, on every transformer linear."""
    method = "dora"


class nnUNetTrainer_SwinUNETR_PiSSA(nnUNetTrainer_SwinUNETR_Adapter):
    """PiSSA, rank 8, on every transformer linear."""
    method = "pissa"


class nnUNetTrainer_SwinUNETR_HeadOnly(nnUNetTrainer_SwinUNETR_Adapter):
    """Only the segmentation head trains."""
    method = "headonly"


class nnUNetTrainer_SwinUNETR_DecoderOnly(nnUNetTrainer_SwinUNETR_Adapter):
    """Everything outside the Swin encoder trains (CNN skip encoders, decoder, head)."""
    method = "decoderonly"


TRAINERS = [n for n in list(globals()) if n.startswith("nnUNetTrainer_SwinUNETR_") and n != "nnUNetTrainer_SwinUNETR_Adapter"]
TRAINERS += [v for n in list(TRAINERS) for v in schedule_variants(globals(), globals()[n])]
