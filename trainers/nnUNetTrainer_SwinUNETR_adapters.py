"""SwinUNETR with each adaptation method (HyPS and PDoRA are the ones their papers pair with SwinUNETR).

The method settings live in :mod:`hippo_peft.trainers.adapted`. The method trainers train the adapter with the
CNN decoder blocks and the head (the papers' setting); the ``_Strict`` trainers the adapter and the head only.
Each trainer has ``_short`` and ``_smoke`` schedule variants for CPU."""
from hippo_peft.trainers.adapted import (CNNOnly, DecoderOnly, DoRA, HeadOnly, HyPS, LoRA, LoRAPT, PDoRA, PiSSA,
                                         Strict, nnUNetTrainer_AdapterBase, schedule_variants)


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


class nnUNetTrainer_SwinUNETR_CNNOnly(CNNOnly, nnUNetTrainer_SwinUNETR_Adapter):
    __doc__ = CNNOnly.__doc__


# The strict setting: adapter + head, CNN decoder frozen.
class nnUNetTrainer_SwinUNETR_LoRAPT_Strict(Strict, nnUNetTrainer_SwinUNETR_LoRAPT):
    __doc__ = Strict.__doc__


class nnUNetTrainer_SwinUNETR_HyPS_Strict(Strict, nnUNetTrainer_SwinUNETR_HyPS):
    __doc__ = Strict.__doc__


class nnUNetTrainer_SwinUNETR_PDoRA_Strict(Strict, nnUNetTrainer_SwinUNETR_PDoRA):
    __doc__ = Strict.__doc__


class nnUNetTrainer_SwinUNETR_LoRA_Strict(Strict, nnUNetTrainer_SwinUNETR_LoRA):
    __doc__ = Strict.__doc__


class nnUNetTrainer_SwinUNETR_DoRA_Strict(Strict, nnUNetTrainer_SwinUNETR_DoRA):
    __doc__ = Strict.__doc__


class nnUNetTrainer_SwinUNETR_PiSSA_Strict(Strict, nnUNetTrainer_SwinUNETR_PiSSA):
    __doc__ = Strict.__doc__


TRAINERS = [n for n in list(globals()) if n.startswith("nnUNetTrainer_SwinUNETR_") and n != "nnUNetTrainer_SwinUNETR_Adapter"]
TRAINERS += [v for n in list(TRAINERS) for v in schedule_variants(globals(), globals()[n])]
