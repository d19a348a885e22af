"""Tolerant transfer of pre-trained weights between tasks.

nnU-Net's ``-pretrained_weights`` demands identical shapes everywhere except ``.seg_layers.``. MONAI heads are
called ``out`` and a source task (brain tumour, 2-4 MRI channels) rarely has the target's channel or class
count, so our trainers load with :func:`load_pretrained` instead. Rules, applied per tensor of the *target*:

1. same name and shape in the source -> loaded;
2. segmentation head (``out.*``) whose class count differs -> left at its fresh initialisation;
3. input layer whose input-channel count differs (all other dims equal, the target's dim 1 equals the network's
   input channels) -> adapted: to one channel, the source kernels are summed over channels (an image repeated on
   every source channel gives the same response); to C_t channels, source channels are repeated cyclically and
   scaled by C_s / C_t (the rule timm uses for pretrained stems);
4. UNETR position embedding of another length -> error: the source was trained on another patch size;
5. anything else of another shape, or absent from the source -> skipped, with the reason.

If less than ``min_fraction`` of the target's numbers could be loaded (e.g. another backbone or preset), the load
is refused. Every decision is returned in a :class:`LoadReport` and logged (trainers write it to nnU-Net's log).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from hippo_peft.errors import HippoPeftError

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("network_weights", "state_dict", "model_state_dict", "net", "model", "module")
STRIP_PREFIXES = ("module.", "_orig_mod.")


class WeightsMismatchError(HippoPeftError, RuntimeError):
    """The checkpoint does not fit the network (wrong backbone, preset or patch size)."""


@dataclass
class LoadReport:
    loaded: list = field(default_factory=list)
    adapted: list = field(default_factory=list)  # (key, reason)
    reinitialised: list = field(default_factory=list)  # (key, reason)
    skipped: list = field(default_factory=list)  # (key, reason)
    unused: list = field(default_factory=list)  # source keys the network has no use for
    loaded_numel: int = 0
    total_numel: int = 0

    @property
    def fraction(self) -> float:
        return self.loaded_numel / max(self.total_numel, 1)

    def format(self) -> str:
        lines = [f"pre-trained weights: {len(self.loaded)} tensors loaded, {len(self.adapted)} adapted, "
                 f"{len(self.reinitialised)} re-initialised, {len(self.skipped)} skipped, "
                 f"{len(self.unused)} source tensors unused; {100 * self.fraction:.1f} % of the network's numbers "
                 f"come from the checkpoint"]
        for title, items in (("adapted", self.adapted), ("re-initialised", self.reinitialised),
                             ("skipped", self.skipped)):
            lines += [f"  {title}: {k} ({why})" for k, why in items]
        if self.unused:
            lines.append(f"  unused source tensors: {', '.join(self.unused)}")
        lines.append(f"  loaded: {', '.join(self.loaded)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"loaded": self.loaded, "adapted": self.adapted, "reinitialised": self.reinitialised,
                "skipped": self.skipped, "unused": self.unused, "fraction": self.fraction}


def read_state_dict(path: str | Path, trust_pickle: bool | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from an nnU-Net checkpoint, a plain (MONAI) state dict, a ``state_dict``/``net`` wrapper or
    a ``.safetensors`` file; ``module.`` / ``_orig_mod.`` prefixes (DDP, torch.compile) are removed.

    Args:
        path: the weights file, read by :func:`hippo_peft.safe_load.load_weights_file` (never runs code from it).
        trust_pickle: unpickle without the allow-list; ``None`` takes ``HIPPO_PEFT_TRUST_PICKLE`` from the
            environment (the ``nnUNetv2_train`` path).
    """
    from hippo_peft.safe_load import WeightsFileError, load_weights_file, trust_from_env
    path = Path(path)
    obj = load_weights_file(path, trust_from_env() if trust_pickle is None else trust_pickle)
    for _ in range(3):  # wrappers can nest, e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise WeightsMismatchError(f"{path} contains no state dict (looked at the top level and under "
                                   f"{', '.join(WRAPPER_KEYS)}).")
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise WeightsFileError(f"{path}: {len(broken)} tensor(s) hold NaN or Inf ({', '.join(broken[:3])}"
                               f"{' ...' if len(broken) > 3 else ''}): the training that wrote them diverged. Use "
                               f"another checkpoint.")
    out = {}
    for k, v in tensors.items():
        for prefix in STRIP_PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k.replace("._orig_mod.", ".")] = v
    return out


def adapt_input_channels(weight: torch.Tensor, target_channels: int) -> torch.Tensor:
    """Map a kernel with C_s input channels (dim 1) to ``target_channels`` (rule 3 of the module docstring)."""
    source_channels = weight.shape[1]
    if target_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-target_channels // source_channels)
    return weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :target_channels] * (source_channels / target_channels)


def _is_head(key: str) -> bool:
    return key.startswith("out.") or ".seg_layers." in key


def transfer_weights(network: nn.Module, source: dict[str, torch.Tensor], in_channels: int,
                     min_fraction: float = 0.5) -> LoadReport:
    """Copy ``source`` into ``network`` by name and shape (rules in the module docstring). Nothing is written to
    the network if the load is refused."""
    target = network.state_dict()
    report = LoadReport()
    new_state = {}
    for key, tensor in target.items():
        report.total_numel += tensor.numel()
        if key not in source:
            report.skipped.append((key, "not in checkpoint"))
            continue
        src = source[key]
        if src.shape == tensor.shape:
            new_state[key] = src.to(tensor.dtype)
            report.loaded.append(key)
            report.loaded_numel += tensor.numel()
        elif key.endswith("position_embeddings") and src.shape[-1] == tensor.shape[-1]:
            raise WeightsMismatchError(
                f"{key}: the checkpoint has {src.shape[1]} patch tokens, this network {tensor.shape[1]}. UNETR's "
                f"position embedding is tied to the patch size, so the target must use the source's patch size: "
                f"plan the target with `hippo-peft plan -d TARGET --arch unetr --patch-size <source patch size>` "
                f"(see the source's plans.json) or move the source plans with nnUNetv2_move_plans_between_datasets.")
        elif _is_head(key) and src.shape[1:] == tensor.shape[1:]:
            report.reinitialised.append((key, f"{src.shape[0]} classes in checkpoint, {tensor.shape[0]} here"))
        elif (src.ndim >= 2 and tensor.ndim == src.ndim and tensor.shape[1] == in_channels
              and src.shape[0] == tensor.shape[0] and src.shape[2:] == tensor.shape[2:]):
            new_state[key] = adapt_input_channels(src, in_channels).to(tensor.dtype)
            report.adapted.append((key, f"input channels {src.shape[1]} -> {in_channels}"))
            report.loaded_numel += tensor.numel()
        else:
            report.skipped.append((key, f"shape {tuple(src.shape)} in checkpoint, {tuple(tensor.shape)} here"))
    report.unused = sorted(set(source) - set(target))
    if report.fraction < min_fraction:
        examples = "; ".join(f"{k}: {why}" for k, why in report.skipped[:5])
        raise WeightsMismatchError(
            f"Only {100 * report.fraction:.1f} % of this network's numbers match the checkpoint (at least "
            f"{100 * min_fraction:.0f} % required). It was probably trained with another backbone or preset "
            f"(compare the plans' architecture entries). First mismatches: {examples}")
    target.update(new_state)
    network.load_state_dict(target)
    return report


def load_pretrained(network: nn.Module, path: str | Path, in_channels: int, min_fraction: float = 0.5,
                    log: Callable[[str], None] | None = None) -> LoadReport:
    """Read ``path`` and transfer it into ``network``; the report is passed to ``log`` (default: this module's
    logger at INFO; trainers pass their ``print_to_log_file``)."""
    from hippo_peft.safe_load import TRUST_ENV, trust_from_env
    log = log or logger.info
    if trust_from_env():
        log(f"{TRUST_ENV}=1: {path} may be unpickled without the allow-list (only for files you trust).")
    report = transfer_weights(network, read_state_dict(path), in_channels, min_fraction)
    log(f"Loaded pre-trained weights from {path}\n{report.format()}")
    return report
