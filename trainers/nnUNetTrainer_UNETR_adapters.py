"""UNETR with each adaptation method (LoRA-PT is the one its paper pairs with UNETR); the method settings live in
:mod:`hippo_peft.trainers.adapted`. Each trainer has ``_short`` and ``_smoke`` schedule variants for CPU."""
from hippo_peft.trainers.adapted import (DecoderOnly, DoRA, HeadOnly, HyPS, LoRA, LoRAPT, PDoRA, PiSSA,
                                         nnUNetTrainer_AdapterBase, schedule_variants)


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


TRAINERS = [n for n in list(globals()) if n.startswith("nnUNetTrainer_UNETR_") and n != "nnUNetTrainer_UNETR_Adapter"]
TRAINERS += [v for n in list(TRAINERS) for v in schedule_variants(globals(), globals()[n])]
