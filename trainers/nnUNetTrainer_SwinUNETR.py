"""SwinUNETR trainers, written out as nnU-Net writes its variants: one ``class`` per name ``-tr`` accepts.

``nnUNetTrainer_SwinUNETR`` trains the MONAI SwinUNETR from scratch, or fully fine-tunes it with
``-pretrained_weights``. Each adaptation method registered in :mod:`hippo_peft.adapters` has
``nnUNetTrainer_SwinUNETR_<Method>`` (the papers' setting: the adapter with the CNN decoder blocks and the head)
and, unless it is a baseline, ``..._<Method>_Strict`` (adapter + head only); every trainer has ``_short`` and
``_smoke`` schedules for CPU. HyPS and PDoRA are the methods their papers pair with SwinUNETR. A method's rates,
weight decays and trainable set come from its registry entry; ``tests/test_trainer_classes.py`` checks that every
registered method has its classes here. ``<trainer>_<N>it`` budget variants are made on request
(:mod:`hippo_peft.trainers.budget`).
"""
from hippo_peft.trainers.adapted import nnUNetTrainer_AdapterBase
from hippo_peft.trainers.base import SHORT, SMOKE, nnUNetTrainer_TransformerBase


class nnUNetTrainer_SwinUNETR(nnUNetTrainer_TransformerBase):
    """MONAI SwinUNETR, AdamW lr 1e-4, warm-up + poly, nnU-Net's 1000 x 250 iterations."""

    arch = "swinunetr"


class nnUNetTrainer_SwinUNETR_short(nnUNetTrainer_SwinUNETR):
    """20 epochs x 25 iterations at lr 1e-3: CPU checks and demos."""

    schedule = SHORT
    initial_lr_default = 1e-3


class nnUNetTrainer_SwinUNETR_smoke(nnUNetTrainer_SwinUNETR):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_SwinUNETR_Adapter(nnUNetTrainer_AdapterBase):
    """Abstract: the adaptation trainers on MONAI SwinUNETR."""

    arch = "swinunetr"


# --- LoRA-PT ---
class nnUNetTrainer_SwinUNETR_LoRAPT(nnUNetTrainer_SwinUNETR_Adapter):
    """LoRA-PT: tubal rank 1 principal tensors of the stacked attention / MLP weights (reference lr 1e-3, wd 1e-5)."""

    method = "lorapt"


class nnUNetTrainer_SwinUNETR_LoRAPT_short(nnUNetTrainer_SwinUNETR_LoRAPT):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_LoRAPT_smoke(nnUNetTrainer_SwinUNETR_LoRAPT):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_SwinUNETR_LoRAPT_Strict(nnUNetTrainer_SwinUNETR_LoRAPT):
    """Strict setting: only the method's tensors and the head train, the CNN decoder stays frozen, so every change must
    pass through the transformer."""

    train_extra = "head"


class nnUNetTrainer_SwinUNETR_LoRAPT_Strict_short(nnUNetTrainer_SwinUNETR_LoRAPT_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_LoRAPT_Strict_smoke(nnUNetTrainer_SwinUNETR_LoRAPT_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- HyPS ---
class nnUNetTrainer_SwinUNETR_HyPS(nnUNetTrainer_SwinUNETR_Adapter):
    """HyPS: rank-2 principal parallel branch + width-2 serial adapters on every transformer linear (wd 2e-5)."""

    method = "hyps"


class nnUNetTrainer_SwinUNETR_HyPS_short(nnUNetTrainer_SwinUNETR_HyPS):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_HyPS_smoke(nnUNetTrainer_SwinUNETR_HyPS):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_SwinUNETR_HyPS_Strict(nnUNetTrainer_SwinUNETR_HyPS):
    """Strict setting: only the method's tensors and the head train, the CNN decoder stays frozen, so every change must
    pass through the transformer."""

    train_extra = "head"


class nnUNetTrainer_SwinUNETR_HyPS_Strict_short(nnUNetTrainer_SwinUNETR_HyPS_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_HyPS_Strict_smoke(nnUNetTrainer_SwinUNETR_HyPS_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- PDoRA ---
class nnUNetTrainer_SwinUNETR_PDoRA(nnUNetTrainer_SwinUNETR_Adapter):
    """PDoRA: rank-8 principal MLP weights as magnitude x direction (reference lr 2e-3, wd 6e-5)."""

    method = "pdora"


class nnUNetTrainer_SwinUNETR_PDoRA_short(nnUNetTrainer_SwinUNETR_PDoRA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_PDoRA_smoke(nnUNetTrainer_SwinUNETR_PDoRA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_SwinUNETR_PDoRA_Strict(nnUNetTrainer_SwinUNETR_PDoRA):
    """Strict setting: only the method's tensors and the head train, the CNN decoder stays frozen, so every change must
    pass through the transformer."""

    train_extra = "head"


class nnUNetTrainer_SwinUNETR_PDoRA_Strict_short(nnUNetTrainer_SwinUNETR_PDoRA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_PDoRA_Strict_smoke(nnUNetTrainer_SwinUNETR_PDoRA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- LoRA ---
class nnUNetTrainer_SwinUNETR_LoRA(nnUNetTrainer_SwinUNETR_Adapter):
    """LoRA, rank 8, alpha 8, on every transformer linear."""

    method = "lora"


class nnUNetTrainer_SwinUNETR_LoRA_short(nnUNetTrainer_SwinUNETR_LoRA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_LoRA_smoke(nnUNetTrainer_SwinUNETR_LoRA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_SwinUNETR_LoRA_Strict(nnUNetTrainer_SwinUNETR_LoRA):
    """Strict setting: only the method's tensors and the head train, the CNN decoder stays frozen, so every change must
    pass through the transformer."""

    train_extra = "head"


class nnUNetTrainer_SwinUNETR_LoRA_Strict_short(nnUNetTrainer_SwinUNETR_LoRA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_LoRA_Strict_smoke(nnUNetTrainer_SwinUNETR_LoRA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- DoRA ---
class nnUNetTrainer_SwinUNETR_DoRA(nnUNetTrainer_SwinUNETR_Adapter):
    """DoRA, rank 8, alpha 8, on every transformer linear."""

    method = "dora"


class nnUNetTrainer_SwinUNETR_DoRA_short(nnUNetTrainer_SwinUNETR_DoRA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_DoRA_smoke(nnUNetTrainer_SwinUNETR_DoRA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_SwinUNETR_DoRA_Strict(nnUNetTrainer_SwinUNETR_DoRA):
    """Strict setting: only the method's tensors and the head train, the CNN decoder stays frozen, so every change must
    pass through the transformer."""

    train_extra = "head"


class nnUNetTrainer_SwinUNETR_DoRA_Strict_short(nnUNetTrainer_SwinUNETR_DoRA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_DoRA_Strict_smoke(nnUNetTrainer_SwinUNETR_DoRA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- PiSSA ---
class nnUNetTrainer_SwinUNETR_PiSSA(nnUNetTrainer_SwinUNETR_Adapter):
    """PiSSA, rank 8, on every transformer linear."""

    method = "pissa"


class nnUNetTrainer_SwinUNETR_PiSSA_short(nnUNetTrainer_SwinUNETR_PiSSA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_PiSSA_smoke(nnUNetTrainer_SwinUNETR_PiSSA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_SwinUNETR_PiSSA_Strict(nnUNetTrainer_SwinUNETR_PiSSA):
    """Strict setting: only the method's tensors and the head train, the CNN decoder stays frozen, so every change must
    pass through the transformer."""

    train_extra = "head"


class nnUNetTrainer_SwinUNETR_PiSSA_Strict_short(nnUNetTrainer_SwinUNETR_PiSSA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_PiSSA_Strict_smoke(nnUNetTrainer_SwinUNETR_PiSSA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- head only ---
class nnUNetTrainer_SwinUNETR_HeadOnly(nnUNetTrainer_SwinUNETR_Adapter):
    """Only the segmentation head trains."""

    method = "headonly"


class nnUNetTrainer_SwinUNETR_HeadOnly_short(nnUNetTrainer_SwinUNETR_HeadOnly):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_HeadOnly_smoke(nnUNetTrainer_SwinUNETR_HeadOnly):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- decoder only ---
class nnUNetTrainer_SwinUNETR_DecoderOnly(nnUNetTrainer_SwinUNETR_Adapter):
    """Exactly the decoder set of the default adapter trainers trains (CNN decoder blocks + head), no adapter: against
    it, 'adapter + decoder' measures what the adapter adds."""

    method = "decoderonly"


class nnUNetTrainer_SwinUNETR_DecoderOnly_short(nnUNetTrainer_SwinUNETR_DecoderOnly):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_DecoderOnly_smoke(nnUNetTrainer_SwinUNETR_DecoderOnly):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- CNN only ---
class nnUNetTrainer_SwinUNETR_CNNOnly(nnUNetTrainer_SwinUNETR_Adapter):
    """Every CNN part trains (skip encoders, decoder blocks, head); the transformer stays frozen."""

    method = "cnnonly"


class nnUNetTrainer_SwinUNETR_CNNOnly_short(nnUNetTrainer_SwinUNETR_CNNOnly):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_SwinUNETR_CNNOnly_smoke(nnUNetTrainer_SwinUNETR_CNNOnly):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# every name -tr accepts for an adaptation method on this backbone (schedules included)
ADAPTER_TRAINERS = [n for n, c in list(globals().items()) if isinstance(c, type)
                    and issubclass(c, nnUNetTrainer_AdapterBase) and c.method is not None]
__all__ = ["nnUNetTrainer_SwinUNETR", "nnUNetTrainer_SwinUNETR_short", "nnUNetTrainer_SwinUNETR_smoke",
           *ADAPTER_TRAINERS]
