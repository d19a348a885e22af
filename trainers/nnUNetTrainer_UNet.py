"""Trainers that adapt nnU-Net's own U-Net, written out as nnU-Net writes its variants: one ``class`` per name
``-tr`` accepts. ``nnUNetv2_plan_and_preprocess`` as usual (nnUNetPlans or the residual-encoder plans), then
``nnUNetv2_train D 3d_fullres F -tr nnUNetTrainer_UNet_LoRAPT -pretrained_weights SOURCE.pth`` with any nnU-Net
checkpoint of the same plans as the source.

``nnUNetTrainer_UNet_<Method>``: the papers' setting moved to the CNN (every encoder conv adapted, the decoder and
the segmentation layers train); ``..._Strict``: adapter + segmentation layers; ``_short`` / ``_smoke`` schedules
for CPU. ``DecoderOnly`` is nnU-Net's fine-tuning with a frozen encoder, the control for what an adapter adds.
Full fine-tuning is nnU-Net's own ``nnUNetTrainer -pretrained_weights``. ``tests/test_trainer_classes.py`` checks
that every method with a conv layer has its classes here (:mod:`hippo_peft.trainers.unet` for the bases).
"""
from hippo_peft.trainers.base import SHORT, SMOKE
from hippo_peft.trainers.unet import nnUNetTrainer_UNetAdapterBase


# --- LoRA-PT ---
class nnUNetTrainer_UNet_LoRAPT(nnUNetTrainer_UNetAdapterBase):
    """LoRA-PT: tubal rank 1 principal tensors of every encoder conv kernel (order-p t-SVD over its taps)."""

    method = "lorapt"


class nnUNetTrainer_UNet_LoRAPT_short(nnUNetTrainer_UNet_LoRAPT):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_LoRAPT_smoke(nnUNetTrainer_UNet_LoRAPT):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_UNet_LoRAPT_Strict(nnUNetTrainer_UNet_LoRAPT):
    """Strict setting: only the method's tensors and the segmentation layers train; the decoder stays frozen."""

    train_extra = "head"


class nnUNetTrainer_UNet_LoRAPT_Strict_short(nnUNetTrainer_UNet_LoRAPT_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_LoRAPT_Strict_smoke(nnUNetTrainer_UNet_LoRAPT_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- HyPS ---
class nnUNetTrainer_UNet_HyPS(nnUNetTrainer_UNetAdapterBase):
    """HyPS: rank-2 principal parallel branch on every encoder conv + width-2 serial adapters over its channels."""

    method = "hyps"


class nnUNetTrainer_UNet_HyPS_short(nnUNetTrainer_UNet_HyPS):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_HyPS_smoke(nnUNetTrainer_UNet_HyPS):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_UNet_HyPS_Strict(nnUNetTrainer_UNet_HyPS):
    """Strict setting: only the method's tensors and the segmentation layers train; the decoder stays frozen."""

    train_extra = "head"


class nnUNetTrainer_UNet_HyPS_Strict_short(nnUNetTrainer_UNet_HyPS_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_HyPS_Strict_smoke(nnUNetTrainer_UNet_HyPS_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- PDoRA ---
class nnUNetTrainer_UNet_PDoRA(nnUNetTrainer_UNetAdapterBase):
    """PDoRA: rank-8 principal part of every encoder conv kernel as magnitude x direction."""

    method = "pdora"


class nnUNetTrainer_UNet_PDoRA_short(nnUNetTrainer_UNet_PDoRA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_PDoRA_smoke(nnUNetTrainer_UNet_PDoRA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_UNet_PDoRA_Strict(nnUNetTrainer_UNet_PDoRA):
    """Strict setting: only the method's tensors and the segmentation layers train; the decoder stays frozen."""

    train_extra = "head"


class nnUNetTrainer_UNet_PDoRA_Strict_short(nnUNetTrainer_UNet_PDoRA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_PDoRA_Strict_smoke(nnUNetTrainer_UNet_PDoRA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- LoRA ---
class nnUNetTrainer_UNet_LoRA(nnUNetTrainer_UNetAdapterBase):
    """LoRA, rank 8, alpha 8, on every encoder conv kernel."""

    method = "lora"


class nnUNetTrainer_UNet_LoRA_short(nnUNetTrainer_UNet_LoRA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_LoRA_smoke(nnUNetTrainer_UNet_LoRA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_UNet_LoRA_Strict(nnUNetTrainer_UNet_LoRA):
    """Strict setting: only the method's tensors and the segmentation layers train; the decoder stays frozen."""

    train_extra = "head"


class nnUNetTrainer_UNet_LoRA_Strict_short(nnUNetTrainer_UNet_LoRA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_LoRA_Strict_smoke(nnUNetTrainer_UNet_LoRA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- DoRA ---
class nnUNetTrainer_UNet_DoRA(nnUNetTrainer_UNetAdapterBase):
    """DoRA, rank 8, alpha 8, on every encoder conv kernel."""

    method = "dora"


class nnUNetTrainer_UNet_DoRA_short(nnUNetTrainer_UNet_DoRA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_DoRA_smoke(nnUNetTrainer_UNet_DoRA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_UNet_DoRA_Strict(nnUNetTrainer_UNet_DoRA):
    """Strict setting: only the method's tensors and the segmentation layers train; the decoder stays frozen."""

    train_extra = "head"


class nnUNetTrainer_UNet_DoRA_Strict_short(nnUNetTrainer_UNet_DoRA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_DoRA_Strict_smoke(nnUNetTrainer_UNet_DoRA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- PiSSA ---
class nnUNetTrainer_UNet_PiSSA(nnUNetTrainer_UNetAdapterBase):
    """PiSSA, rank 8, on every encoder conv kernel."""

    method = "pissa"


class nnUNetTrainer_UNet_PiSSA_short(nnUNetTrainer_UNet_PiSSA):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_PiSSA_smoke(nnUNetTrainer_UNet_PiSSA):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


class nnUNetTrainer_UNet_PiSSA_Strict(nnUNetTrainer_UNet_PiSSA):
    """Strict setting: only the method's tensors and the segmentation layers train; the decoder stays frozen."""

    train_extra = "head"


class nnUNetTrainer_UNet_PiSSA_Strict_short(nnUNetTrainer_UNet_PiSSA_Strict):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_PiSSA_Strict_smoke(nnUNetTrainer_UNet_PiSSA_Strict):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- head only ---
class nnUNetTrainer_UNet_HeadOnly(nnUNetTrainer_UNetAdapterBase):
    """Only the segmentation layers train (the deep-supervision outputs included)."""

    method = "headonly"


class nnUNetTrainer_UNet_HeadOnly_short(nnUNetTrainer_UNet_HeadOnly):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_HeadOnly_smoke(nnUNetTrainer_UNet_HeadOnly):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# --- decoder only ---
class nnUNetTrainer_UNet_DecoderOnly(nnUNetTrainer_UNetAdapterBase):
    """The decoder trains (stages, transposed convs, segmentation layers), the encoder is frozen, no adapter: nnU-Net's
    fine-tuning with a frozen encoder, and against it 'adapter + decoder' measures what the adapter adds."""

    method = "decoderonly"


class nnUNetTrainer_UNet_DecoderOnly_short(nnUNetTrainer_UNet_DecoderOnly):
    """20 epochs x 25 iterations: CPU checks and demos."""

    schedule = SHORT


class nnUNetTrainer_UNet_DecoderOnly_smoke(nnUNetTrainer_UNet_DecoderOnly):
    """2 epochs x 2 iterations: does the plumbing work?"""

    schedule = SMOKE


# every name -tr accepts for an adaptation method on nnU-Net's U-Nets (schedules included)
ADAPTER_TRAINERS = [n for n, c in list(globals().items()) if isinstance(c, type)
                    and issubclass(c, nnUNetTrainer_UNetAdapterBase) and c.method is not None]
__all__ = [*ADAPTER_TRAINERS]
