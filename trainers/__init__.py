"""nnU-Net trainers of hippo_peft (installed as ``hippo_peft.trainers``).

nnU-Net finds them through the shim in ``hippo_peft/nnunet_ext`` (``hippo-peft env``) or the opt-in
``hippo-peft install-shim``; the classes themselves live here, one file per backbone with one ``class`` statement
per trainer name, so that nnU-Net's spawned workers can import them and ``grep`` finds them: the MONAI transformers
(``nnUNetTrainer_UNETR.py``, ``nnUNetTrainer_SwinUNETR.py``) and nnU-Net's own U-Nets (``nnUNetTrainer_UNet.py``).
"""
from hippo_peft.errors import InputError
from hippo_peft.trainers import nnUNetTrainer_SwinUNETR as _swin
from hippo_peft.trainers import nnUNetTrainer_UNet as _unet
from hippo_peft.trainers import nnUNetTrainer_UNETR as _unetr
from hippo_peft.trainers.adapted import AdapterMixin, nnUNetTrainer_AdapterBase, schedule_suffix  # noqa: F401
from hippo_peft.trainers.base import Schedule, nnUNetTrainer_TransformerBase  # noqa: F401
from hippo_peft.trainers.nnUNetTrainer_SwinUNETR import *  # noqa: F401,F403
from hippo_peft.trainers.nnUNetTrainer_UNet import *  # noqa: F401,F403
from hippo_peft.trainers.nnUNetTrainer_UNETR import *  # noqa: F401,F403
from hippo_peft.trainers.unet import nnUNetTrainer_UNetAdapterBase, nnUNetTrainer_UNetBase  # noqa: F401

ADAPTER_TRAINERS = _unetr.ADAPTER_TRAINERS + _swin.ADAPTER_TRAINERS + _unet.ADAPTER_TRAINERS
SCHEDULES = ("", "short", "smoke")


def method_suffix(method: str) -> str:
    """The trainer-name part of a benchmark / CLI method token: ``lorapt`` -> ``LoRAPT``, ``lorapt-strict`` ->
    ``LoRAPT_Strict``, ``full`` -> '' (full fine-tuning is the backbone's own trainer)."""
    from hippo_peft.adapters import method_specs
    from hippo_peft.adapters.registry import STRICT
    if method == "full":
        return ""
    for spec in method_specs():
        if method in spec.settings:
            return spec.trainer_suffix + ("_Strict" if method.endswith(STRICT) else "")
    known = [m for spec in method_specs() for m in spec.settings] + ["full"]
    raise InputError(f"Unknown method '{method}'. Choose one of: {', '.join(known)}.")


def trainer_name(arch: str, method: str, schedule: str = "") -> str:
    """``trainer_name("unetr", "lorapt", "short") == "nnUNetTrainer_UNETR_LoRAPT_short"``."""
    from hippo_peft.networks import get_arch
    suffix = method_suffix(method)
    if schedule not in SCHEDULES:
        raise InputError(f"Unknown schedule '{schedule}'; use '', 'short' or 'smoke'.")
    return "_".join(p for p in (get_arch(arch).trainer, suffix, schedule) if p)


def __getattr__(name):
    # `<trainer>_<N>it`: a fixed-iteration-budget variant, made on request (see hippo_peft.trainers.budget)
    from hippo_peft.trainers.budget import budget_trainer
    cls = budget_trainer(name, globals(), __name__)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls


__all__ = [*_unetr.__all__, *_swin.__all__, *_unet.__all__]
