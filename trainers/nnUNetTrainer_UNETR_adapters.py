"""UNETR with each adaptation method (LoRA-PT is the one its paper pairs with UNETR).

The method settings live in :mod:`hippo_peft.trainers.adapted`. The method trainers train the adapter with the
CNN decoder blocks and the head (the papers' setting); the ``_Strict`` trainers the adapter and the head only.
Each trainer has ``_short`` and ``_smoke`` schedule variants for CPU."""
from hippo_peft.trainers.adapted import (CNNOnly, DecoderOnly, DoRA, HeadOnly, HyPS, LoRA, LoRAPT, PDoRA, PiSSA,
                                         Strict, nnUNetTrainer_AdapterBase, schedule_variants)


class nnUNetTrainer_UNETR_Adapter(nnUNetTrainer_AdapterBase):
    arch = "unetr"


class nnUNetTrainer_UNETR_LoRAPT(LoRAPT, nnUNetTrainer_UNETR_Adapter):
    __doc__ = LoRAPT.__doc__


class nnUNetTrainer_UNETR_HyPS(HyPS, nnUNetTrainer_UNETR_Adapter):
    __doc__ = HyPS.__doc__


class nnUNetTrainer_UNETR_PDoRA(PDoRA, nnUNetTrainer_UNETR_Adapter):
    __doc__ = PDoRA.__doc__


class nnUNetTrainer_UNETR_LoRA(LoRA, nnUNetTrainer_UNETR_Adapter):
    __doc__ = LoRA.__doc__


class nnUNetTrainer_UNETR_DoRA(DoRA, nnUNetTrainer_UNETR_Adapter):
    __doc__ = DoRA.__doc__


class nnUNetTrainer_UNETR_PiSSA(PiSSA, nnUNetTrainer_UNETR_Adapter):
    __doc__ = PiSSA.__doc__


class nnUNetTrainer_UNETR_HeadOnly(HeadOnly, nnUNetTrainer_UNETR_Adapter):
    __doc__ = HeadOnly.__doc__


class nnUNetTrainer_UNETR_DecoderOnly(DecoderOnly, nnUNetTrainer_UNETR_Adapter):
    __doc__ = DecoderOnly.__doc__


class nnUNetTrainer_UNETR_CNNOnly(CNNOnly, nnUNetTrainer_UNETR_Adapter):
    __doc__ = CNNOnly.__doc__


# The strict setting: adapter + head, CNN decoder frozen.
class nnUNetTrainer_UNETR_LoRAPT_Strict(Strict, nnUNetTrainer_UNETR_LoRAPT):
    __doc__ = Strict.__doc__


class nnUNetTrainer_UNETR_HyPS_Strict(Strict, nnUNetTrainer_UNETR_HyPS):
    __doc__ = Strict.__doc__


class nnUNetTrainer_UNETR_PDoRA_Strict(Strict, nnUNetTrainer_UNETR_PDoRA):
    __doc__ = Strict.__doc__


class nnUNetTrainer_UNETR_LoRA_Strict(Strict, nnUNetTrainer_UNETR_LoRA):
    __doc__ = Strict.__doc__


class nnUNetTrainer_UNETR_DoRA_Strict(Strict, nnUNetTrainer_UNETR_DoRA):
    __doc__ = Strict.__doc__


class nnUNetTrainer_UNETR_PiSSA_Strict(Strict, nnUNetTrainer_UNETR_PiSSA):
    __doc__ = Strict.__doc__


TRAINERS = [n for n in list(globals()) if n.startswith("nnUNetTrainer_UNETR_") and n != "nnUNetTrainer_UNETR_Adapter"]
TRAINERS += [v for n in list(TRAINERS) for v in schedule_variants(globals(), globals()[n])]
