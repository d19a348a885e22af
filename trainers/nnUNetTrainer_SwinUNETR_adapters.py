"""SwinUNETR with each adaptation method (HyPS and PDoRA are the ones their papers pair with SwinUNETR); the method
settings live in :mod:`hippo_peft.trainers.adapted`. Each trainer has ``_short`` and ``_smoke`` variants for CPU."""
from hippo_peft.trainers.adapted import (DecoderOnly, DoRA, HeadOnly, HyPS, LoRA, LoRAPT, PDoRA, PiSSA,
                                         nnUNetTrainer_AdapterBase, schedule_variants)


class nnUNetTrainer_SwinUNETR_Adapter(nnUNetTrainer_AdapterBase):
    arch = "swinunetr"


class nnUNetTrainer_SwinUNETR_LoRAPT(LoRAPT, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = LoRAPT.__doc__


class nnUNetTrainer_SwinUNETR_HyPS(HyPS, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = HyPS.__doc__


class nnUNetTrainer_SwinUNETR_PDoRA(PDoRA, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = PDoRA.__doc__


class nnUNetTrainer_SwinUNETR_LoRA(LoRA, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = LoRA.__doc__


class nnUNetTrainer_SwinUNETR_DoRA(DoRA, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = DoRA.__doc__


class nnUNetTrainer_SwinUNETR_PiSSA(PiSSA, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = PiSSA.__doc__


class nnUNetTrainer_SwinUNETR_HeadOnly(HeadOnly, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = HeadOnly.__doc__


class nnUNetTrainer_SwinUNETR_DecoderOnly(DecoderOnly, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = DecoderOnly.__doc__


TRAINERS = [n for n in list(globals()) if n.startswith("nnUNetTrainer_SwinUNETR_") and n != "nnUNetTrainer_SwinUNETR_Adapter"]
TRAINERS += [v for n in list(TRAINERS) for v in schedule_variants(globals(), globals()[n])]
