"""nnU-Net trainers of hippo_peft (installed as ``hippo_peft.trainers``).

nnU-Net finds them through the shim in ``hippo_peft/nnunet_ext`` (``hippo-peft env``) or the opt-in
``hippo-peft install-shim``; the classes themselves live here so that nnU-Net's spawned workers can import them.
"""
from hippo_peft.trainers import nnUNetTrainer_SwinUNETR_adapters as _swin_adapters
from hippo_peft.trainers import nnUNetTrainer_UNETR_adapters as _unetr_adapters
from hippo_peft.trainers.adapted import (nnUNetTrainer_AdapterBase, schedule_suffix,  # noqa: F401
                                         trainer_for_config, trainer_with_setting)
from hippo_peft.trainers.base import Schedule, nnUNetTrainer_TransformerBase  # noqa: F401
from hippo_peft.trainers.nnUNetTrainer_SwinUNETR import (nnUNetTrainer_SwinUNETR, nnUNetTrainer_SwinUNETR_short,
                                                         nnUNetTrainer_SwinUNETR_smoke)
from hippo_peft.trainers.nnUNetTrainer_UNETR import (nnUNetTrainer_UNETR, nnUNetTrainer_UNETR_short,
                                                     nnUNetTrainer_UNETR_smoke)

ADAPTER_TRAINERS = _unetr_adapters.TRAINERS + _swin_adapters.TRAINERS
# method name (hippo_peft.adapters.METHODS, plus "full") -> trainer class suffix
ADAPTER_SUFFIX = {"lorapt": "LoRAPT", "hyps": "HyPS", "pdora": "PDoRA", "lora": "LoRA", "dora": "DoRA",
                  "pissa": "PiSSA"}
STRICT = "-strict"  # "lorapt-strict": the adapter + head only (nnUNetTrainer_<backbone>_LoRAPT_Strict)
METHOD_SUFFIX = {**ADAPTER_SUFFIX, **{m + STRICT: f"{s}_Strict" for m, s in ADAPTER_SUFFIX.items()},
                 "headonly": "HeadOnly", "decoderonly": "DecoderOnly", "cnnonly": "CNNOnly", "full": ""}


def trainer_name(arch: str, method: str, schedule: str = "") -> str:
    """``trainer_name("unetr", "lorapt", "short") == "nnUNetTrainer_UNETR_LoRAPT_short"``."""
    from hippo_peft.networks import get_arch
    if method not in METHOD_SUFFIX:
        raise ValueError(f"Unknown method '{method}'. Choose one of: {', '.join(METHOD_SUFFIX)}.")
    if schedule not in ("", "short", "smoke"):
        raise ValueError(f"Unknown schedule '{schedule}'; use '', 'short' or 'smoke'.")
    return "_".join(p for p in (get_arch(arch).trainer, METHOD_SUFFIX[method], schedule) if p)


globals().update({name: getattr(_unetr_adapters, name) for name in _unetr_adapters.TRAINERS})
globals().update({name: getattr(_swin_adapters, name) for name in _swin_adapters.TRAINERS})


def __getattr__(name):
    # `<trainer>_<N>it`: a fixed-iteration-budget variant, made on request (see hippo_peft.trainers.budget)
    from hippo_peft.trainers.budget import budget_trainer
    cls = budget_trainer(name, globals(), __name__)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls


__all__ = ["nnUNetTrainer_UNETR", "nnUNetTrainer_UNETR_short", "nnUNetTrainer_UNETR_smoke",
           "nnUNetTrainer_SwinUNETR", "nnUNetTrainer_SwinUNETR_short", "nnUNetTrainer_SwinUNETR_smoke",
           *ADAPTER_TRAINERS]
