"""Tolerant transfer of pre-trained weights between tasks.

nnU-Net's ``-pretrained_weights`` demands identical shapes everywhere except ``.seg_layers.``. MONAI heads are
called ``out`` and a source task (brain tumour, 2-4 MRI channels) rarely has the target's channel or class
count, so our trainers load with :func:`load_pretrained` instead. Rules, applied per tensor of the *target*:

1. segmentation head (``out.*``, ``.seg_layers.``): decided by the head rules (:func:`plan_head`), before any
   shape rule, row by row from the class names both sides record: background from background; a target class
   from the source class of the same name; where the source has exactly one foreground class and no name
   matches, every target foreground class from that row with ``log(n)`` subtracted from its bias (n target
   foreground classes), so that the whole structure's probability is the source's at the start; any other row
   stays fresh. Unknown source classes (a foreign file), region-based (sigmoid) heads on either side, or a
   ``_freshhead`` trainer: the head stays fresh. A head of the same shape is never copied because of its shape;
2. same name and shape in the source -> loaded;
3. input layer whose input-channel count differs (all other dims equal, the target's dim 1 equals the network's
   input channels) -> adapted: to one channel, the source kernels are summed over channels (an image repeated on
   every source channel gives the same response); to C_t channels, source channels are repeated cyclically and
   scaled by C_s / C_t (the rule timm uses for pretrained stems);
4. UNETR position embedding of another length -> error: the source was trained on another patch size;
5. anything else of another shape, or absent from the source -> skipped, with the reason.

The transformer encoder (UNETR ``vit.*``, SwinUNETR ``swinViT.*``) must load completely, or the load is refused
naming what is missing and, when the file fits another preset, which one: an encoder-only file (MONAI's
self-supervised Swin encoder, mapped as ``SwinUNETR.load_from`` maps it) loads, a file of another backbone or
preset does not. Every decision is returned in a :class:`LoadReport` and logged (trainers write it to nnU-Net's
log and ``pretrained_weights_report.json``).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from hippo_peft.errors import HippoPeftError, InputError

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("network_weights", "state_dict", "model_state_dict", "net", "model", "module")
STRIP_PREFIXES = ("module.", "_orig_mod.")
HEAD_INITS = ("source", "fresh")
# Deterministic from the architecture (a Swin window's relative position index) or never used (MONAI builds a
# cross-attention norm in every UNETR block): the encoder is complete without them.
_ENCODER_EXEMPT = re.compile(r"relative_position_index$|\.norm_cross_attn\.")


class WeightsMismatchError(HippoPeftError, RuntimeError):
    """The checkpoint does not fit the network (wrong backbone, preset or patch size)."""


@dataclass
class SourceWeights:
    """A checkpoint's tensors and what it records about its segmentation head."""

    state: dict[str, torch.Tensor]
    labels: dict | None = None  # dataset.json "labels" of the source task (name -> value, or region lists)
    regions: bool = False  # region-based (sigmoid) head: never mapped row for row
    labels_from: str = "not recorded"  # where ``labels`` came from, for the report
    adapted_method: str | None = None  # a checkpoint of one of our adaptation trainers (its adapter record)

    def __post_init__(self):
        if self.labels is not None and self.labels_from == "not recorded":
            self.labels_from = "given by the caller"


@dataclass
class LoadReport:
    loaded: list = field(default_factory=list)
    adapted: list = field(default_factory=list)  # (key, reason)
    reinitialised: list = field(default_factory=list)  # (key, reason)
    skipped: list = field(default_factory=list)  # (key, reason)
    unused: list = field(default_factory=list)  # source keys the network has no use for
    head: list = field(default_factory=list)  # one line per decision of the head rules
    layout: str | None = None
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
        if self.layout:
            lines.append(f"  source layout: {self.layout}")
        lines += [f"  head: {line}" for line in self.head]
        for title, items in (("adapted", self.adapted), ("re-initialised", self.reinitialised),
                             ("skipped", self.skipped)):
            lines += [f"  {title}: {k} ({why})" for k, why in items]
        if self.unused:
            lines.append(f"  unused source tensors: {', '.join(self.unused)}")
        lines.append(f"  loaded: {', '.join(self.loaded)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"loaded": self.loaded, "adapted": self.adapted, "reinitialised": self.reinitialised,
                "skipped": self.skipped, "unused": self.unused, "head": self.head, "layout": self.layout,
                "fraction": self.fraction}


# ------------------------------------------------------------------------------------------------- reading files
def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    from hippo_peft.safe_load import WeightsFileError
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


def is_region_labels(labels: Mapping) -> bool:
    """nnU-Net region-based labels: a value lists several label values (trained with sigmoid outputs)."""
    return any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())


def _recorded_labels(obj) -> tuple[dict | None, bool, str]:
    """(labels, region-based, where from) from what a checkpoint records: nnU-Net's ``init_args.dataset_json`` or
    the record ``hippo-peft import-weights`` writes."""
    if not isinstance(obj, dict):
        return None, False, "not recorded"
    ours = obj.get("hippo_peft_import")
    if isinstance(ours, dict):
        if isinstance(ours.get("labels"), dict):
            return ours["labels"], bool(ours.get("regions")), "recorded by hippo-peft import-weights"
        return None, False, "hippo-peft import-weights left the head fresh"
    init_args = obj.get("init_args")
    dataset_json = init_args.get("dataset_json") if isinstance(init_args, dict) else None
    if isinstance(dataset_json, dict) and isinstance(dataset_json.get("labels"), dict):
        labels = dataset_json["labels"]
        return labels, bool(dataset_json.get("regions_class_order")) or is_region_labels(labels), \
            "the checkpoint's dataset.json (nnU-Net init_args)"
    return None, False, "not recorded"


def read_source(path: str | Path, trust_pickle: bool | None = None) -> SourceWeights:
    """Read a weights file (see :func:`read_state_dict`) with the class names its head was trained on, when the
    file records them."""
    from hippo_peft.safe_load import load_weights_file, trust_from_env
    path = Path(path)
    obj = load_weights_file(path, trust_from_env() if trust_pickle is None else trust_pickle)
    from hippo_peft.nnunet.checkpoint import CHECKPOINT_KEY
    labels, regions, origin = _recorded_labels(obj)
    record = obj.get(CHECKPOINT_KEY) if isinstance(obj, dict) else None
    adapted = (record.get("method") or "an adapter") if isinstance(record, dict) else None
    return SourceWeights(_unwrap(obj, path), labels, regions, origin, adapted_method=adapted)


def read_state_dict(path: str | Path, trust_pickle: bool | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from an nnU-Net checkpoint, a plain (MONAI) state dict, a ``state_dict``/``net`` wrapper or
    a ``.safetensors`` file; ``module.`` / ``_orig_mod.`` prefixes (DDP, torch.compile) are removed.

    Args:
        path: the weights file, read by :func:`hippo_peft.safe_load.load_weights_file` (never runs code from it).
        trust_pickle: unpickle without the allow-list; ``None`` takes ``HIPPO_PEFT_TRUST_PICKLE`` from the
            environment (the ``nnUNetv2_train`` path).
    """
    return read_source(path, trust_pickle).state


def parse_source_labels(text: str) -> dict[str, int]:
    """``"background,hippocampus"`` -> ``{"background": 0, "hippocampus": 1}`` (``import-weights --source-labels``)."""
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or any(not n for n in names):
        raise InputError(f"--source-labels '{text}': give the head's classes in row order, comma-separated, at least "
                         f"background and one class (e.g. background,hippocampus).")
    if names[0].casefold() != "background":
        raise InputError(f"--source-labels '{text}': the first row must be background. A head without a background "
                         f"row is region-based (sigmoid, e.g. BraTS TC/WT/ET) and is never mapped row for row: omit "
                         f"--source-labels and the head starts fresh.")
    if len({n.casefold() for n in names}) < len(names):
        raise InputError(f"--source-labels '{text}': a class name appears twice.")
    return {n: i for i, n in enumerate(names)}


# ------------------------------------------------------------------------------------------ foreign key layouts
_SWIN_BLOCK = ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.relative_position_index",
               "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
               "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "mlp.linear1.weight",
               "mlp.linear1.bias", "mlp.linear2.weight", "mlp.linear2.bias")  # MONAI's names in some copies
_SWIN_SSL_KEY = re.compile(r"^(?:patch_embed\.proj\.(?:weight|bias)"
                           r"|layers[1-4]\.0\.blocks\.\d+\.(?:" + "|".join(map(re.escape, _SWIN_BLOCK)) + r")"
                           r"|layers[1-4]\.0\.downsample\.(?:reduction\.weight|norm\.weight|norm\.bias))$")


def map_swin_ssl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """MONAI's self-supervised Swin encoder (``model_swinvit.pt``: ``module.patch_embed...``,
    ``module.layersN.0.blocks.i...`` with ``mlp.fc1``/``fc2``; ``module.`` is already stripped here; copies renamed
    by MONAI's BTCV script say ``swin_vit.`` and ``linear1``/``linear2``) -> SwinUNETR's ``swinViT.*`` names, exactly
    the tensors ``SwinUNETR.load_from`` copies.
    ``None`` when ``state`` is not in that layout."""
    state = {k[len("swin_vit."):] if k.startswith("swin_vit.") else k: v for k, v in state.items()}
    if any(k.startswith("swinViT.") for k in state) or "patch_embed.proj.weight" not in state:
        return None
    mapped = {}
    for key, value in state.items():
        if _SWIN_SSL_KEY.match(key):
            key = "swinViT." + key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
        mapped[key] = value  # anything else (the pre-training heads) stays unused under its own name
    return mapped


# ----------------------------------------------------------------------------------------------------- the head
def is_head_key(key: str) -> bool:
    """A tensor of the segmentation head: MONAI's ``out.*``, nnU-Net's ``decoder.seg_layers.*``."""
    return key.startswith("out.") or ".seg_layers." in key


@dataclass
class HeadPlan:
    """Per target row: (source row, bias shift), or None for a fresh row; ``lines`` say why, for the report."""

    rows: list
    lines: list

    @property
    def copies_nothing(self) -> bool:
        return all(r is None for r in self.rows)


def head_rows(labels: Mapping) -> list[tuple[int, str]]:
    """(label value, name) of each head row, in row order, as nnU-Net's LabelManager orders them: every label but
    ``ignore``, sorted by value (values need not be consecutive)."""
    return sorted((int(v[0] if isinstance(v, (list, tuple)) else v), name) for name, v in labels.items()
                  if name != "ignore")


def plan_head(source: SourceWeights, source_rows: int, target_labels: Mapping | None, target_regions: bool = False,
              head_init: str = "source", target_rows: int | None = None) -> HeadPlan:
    """The head rules (rule 1 of the module docstring) for a target head of ``target_rows`` rows (default: one per
    target label but ``ignore``); the source head has ``source_rows`` rows."""
    if head_init not in HEAD_INITS:
        raise InputError(f"head_init must be one of {HEAD_INITS}, got '{head_init}'.")
    n_target = target_rows or (len(head_rows(target_labels)) if target_labels else source_rows)

    def fresh(why: str) -> HeadPlan:
        return HeadPlan([None] * n_target, [f"left fresh: {why}"])

    if head_init == "fresh":
        return fresh("this trainer starts the head fresh (head_init = 'fresh', e.g. a _freshhead trainer)")
    if target_labels is None:
        return fresh("the target's classes were not given")
    if target_regions or is_region_labels(target_labels):
        return fresh("the target is region-based (sigmoid outputs); region heads are never mapped row for row")
    if source.regions or (source.labels is not None and is_region_labels(source.labels)):
        return fresh("the source head is region-based (sigmoid outputs); region heads are never mapped row for row")
    if source.labels is None:
        return fresh(source.labels_from if source.labels_from != "not recorded" else
                     "the checkpoint does not record its classes (a foreign file); to map it, name them with "
                     "`hippo-peft import-weights --source-labels background,...`")
    src, tgt = head_rows(source.labels), head_rows(target_labels)
    if len(src) != source_rows:
        return fresh(f"{source.labels_from} names {len(src)} classes but the checkpoint's head has {source_rows} rows")
    if len(tgt) != n_target:
        return fresh(f"the target names {len(tgt)} classes but its head has {n_target} rows")
    src_fg = {i: name for i, (v, name) in enumerate(src) if v != 0}
    tgt_fg = {i: name for i, (v, name) in enumerate(tgt) if v != 0}
    rows, lines = [None] * n_target, []
    by_name = {name.casefold(): i for i, name in src_fg.items()}
    for i, name in tgt_fg.items():
        if name.casefold() in by_name:
            j = by_name[name.casefold()]
            rows[i] = (j, 0.0)
            lines.append(f"'{name}' (row {i}) from the source's '{src_fg[j]}' (row {j}, same name)")
    if not any(rows) and len(src_fg) == 1 and tgt_fg:
        (j, sname), n = next(iter(src_fg.items())), len(tgt_fg)
        for i, name in tgt_fg.items():
            rows[i] = (j, -math.log(n))
            lines.append(f"'{name}' (row {i}) from the source's one foreground class '{sname}' (row {j})"
                         + (f", bias - log({n}) so that the whole structure keeps the source's probability"
                            if n > 1 else ""))
    if not any(rows):  # a calibrated background beside random foreground rows would hold the foreground down
        return fresh(f"no target class matches a source class by name and the source has {len(src_fg)} foreground "
                     f"classes, not one")
    src_bg = [i for i, (v, _) in enumerate(src) if v == 0]
    for i, (v, name) in enumerate(tgt):
        if v == 0 and src_bg:
            rows[i] = (src_bg[0], 0.0)
            lines.insert(0, f"'{name}' (row {i}) from the source's '{src[src_bg[0]][1]}' (background from background)")
    lines += [f"'{tgt[i][1]}' (row {i}) left fresh: no source class of that name" for i in range(n_target)
              if rows[i] is None]
    return HeadPlan(rows, lines)


def _head_plan(target: dict, state: dict, source: SourceWeights, target_labels, target_regions: bool,
               head_init: str) -> tuple[HeadPlan | None, set]:
    """The plan for every head tensor (deep-supervision heads too) that the source has in a fitting shape, and
    those tensors' keys; a head whose weight or bias is missing or of another row count stays fresh whole (a bias
    shift without its bias would break the start probability)."""
    head = [k for k in target if is_head_key(k)]
    fits = [k for k in head if k in state and state[k].ndim == target[k].ndim
            and state[k].shape[1:] == target[k].shape[1:]]
    if not fits:
        return None, set()  # rule 5 reports them (absent, or of another shape)
    rows = target[fits[0]].shape[0]
    source_rows = {state[k].shape[0] for k in fits}
    if len(fits) < len(head) or len(source_rows) > 1:
        odd = [k for k in head if k not in fits]
        why = (f"the checkpoint lacks {', '.join(odd)} or has it in another shape" if odd
               else "the checkpoint's head tensors have different row counts")
        return HeadPlan([None] * rows, [f"left fresh: {why}"]), set(fits)
    return plan_head(source, source_rows.pop(), target_labels, target_regions, head_init, rows), set(fits)


def _map_head(fresh: torch.Tensor, src: torch.Tensor, plan: HeadPlan, is_bias: bool) -> torch.Tensor:
    out = fresh.detach().clone()
    for row, entry in enumerate(plan.rows):
        if entry is not None:
            out[row] = src[entry[0]].to(out.dtype) + (entry[1] if is_bias else 0.0)
    return out


# ---------------------------------------------------------------------------------------------------- the rules
def adapt_input_channels(weight: torch.Tensor, target_channels: int) -> torch.Tensor:
    """Map a kernel with C_s input channels (dim 1) to ``target_channels`` (rule 3 of the module docstring)."""
    source_channels = weight.shape[1]
    if target_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-target_channels // source_channels)
    return weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :target_channels] * (source_channels / target_channels)


def encoder_prefix(network: nn.Module) -> str | None:
    """The state-dict prefix of the part that must load completely: the transformer encoder."""
    from monai.networks.nets import UNETR, SwinUNETR
    if isinstance(network, SwinUNETR):
        return "swinViT."
    if isinstance(network, UNETR):
        return "vit."
    return "encoder." if isinstance(getattr(network, "encoder", None), nn.Module) else None


_PATCH_EMBEDDING = {"vit.": "vit.patch_embedding.patch_embeddings.weight", "swinViT.": "swinViT.patch_embed.proj.weight"}


def matching_presets(network: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """The presets of ``network``'s backbone whose encoder has every shape the file's encoder has (UNETR's
    patch-size-bound position embedding aside), built with the file's input channels."""
    from hippo_peft.networks import ARCHS, PRESETS, build_network
    arch = "unetr" if prefix == "vit." else "swinunetr"
    keys = [k for k in state if k.startswith(prefix) and "position_embeddings" not in k]
    embedding = state.get(_PATCH_EMBEDDING.get(prefix, ""))
    if not keys or embedding is None or embedding.ndim < 2:
        return []
    found = []
    for name, kwargs in PRESETS[arch].items():
        try:
            sd = build_network(ARCHS[arch].network_class_name, kwargs, [ARCHS[arch].divisor * 2] * 3,
                               embedding.shape[1], 2).state_dict()
        except Exception:  # noqa: BLE001 - a preset that cannot be built here matches nothing
            continue
        if all(k in sd and sd[k].shape == state[k].shape for k in keys):
            found.append(name)
    return found


def transfer_weights(network: nn.Module, source: dict[str, torch.Tensor] | SourceWeights, in_channels: int,
                     target_labels: Mapping | None = None, target_regions: bool = False,
                     head_init: str = "source") -> LoadReport:
    """Copy ``source`` into ``network`` (rules in the module docstring). Nothing is written to the network if the
    load is refused.

    Args:
        network: the target network (plain, before any adapter is injected).
        source: tensors, or :class:`SourceWeights` with the classes the source head was trained on.
        in_channels: the target's image channels.
        target_labels: the target's dataset.json ``labels``; without them the head is not copied.
        target_regions: the target is region-based (sigmoid heads): the head is not copied.
        head_init: ``"source"`` (the head rules) or ``"fresh"`` (the head is never copied).
    """
    if not isinstance(source, SourceWeights):
        source = SourceWeights(dict(source))
    if source.adapted_method:
        raise WeightsMismatchError(
            f"This checkpoint was trained by one of our adaptation trainers ({source.adapted_method}): its training "
            f"lives in adapter tensors that a plain network cannot hold, and loading it as pre-trained weights would "
            f"drop them. Merge the model folder first (`hippo-peft merge MODEL_FOLDER -o MERGED`) and pass "
            f"MERGED/fold_N/checkpoint_final.pth. Nothing was loaded.")
    state = source.state
    report = LoadReport()
    if isinstance(network, _swin_class()):
        mapped = map_swin_ssl(state)
        if mapped is not None:
            state = mapped
            report.layout = ("MONAI's self-supervised Swin encoder (model_swinvit.pt), mapped into swinViT.* as "
                             "SwinUNETR.load_from maps it; the decoder and the head stay fresh")
    target = network.state_dict()
    plan, head_keys = _head_plan(target, state, source, target_labels, target_regions, head_init)
    if plan is not None:
        report.head = [f"source classes: {source.labels_from}" + (f" {dict(source.labels)}" if source.labels else ""),
                       *plan.lines]
    new_state = {}
    for key, tensor in target.items():
        report.total_numel += tensor.numel()
        if key not in state:
            report.skipped.append((key, "not in checkpoint"))
            continue
        src = state[key]
        if key in head_keys:
            if plan.copies_nothing:
                report.reinitialised.append((key, f"head left fresh ({src.shape[0]} rows in checkpoint, "
                                                  f"{tensor.shape[0]} here)"))
                continue
            new_state[key] = _map_head(tensor, src, plan, key.endswith("bias"))
            copied = sum(r is not None for r in plan.rows)
            if src.shape == tensor.shape and all(r == (i, 0.0) for i, r in enumerate(plan.rows)):
                report.loaded.append(key)
            else:
                report.adapted.append((key, f"head rows from the source's head: {copied} of {tensor.shape[0]}"))
            report.loaded_numel += tensor.numel() * copied // tensor.shape[0]
        elif src.shape == tensor.shape:
            new_state[key] = src.to(tensor.dtype)
            report.loaded.append(key)
            report.loaded_numel += tensor.numel()
        elif key.endswith("position_embeddings") and src.shape[-1] == tensor.shape[-1]:
            raise WeightsMismatchError(
                f"{key}: the checkpoint has {src.shape[1]} patch tokens, this network {tensor.shape[1]}. UNETR's "
                f"position embedding is tied to the patch size, so the target must use the source's patch size: "
                f"plan the target with `hippo-peft plan -d TARGET --arch unetr --patch-size <source patch size>` "
                f"(see the source's plans.json) or move the source plans with nnUNetv2_move_plans_between_datasets.")
        elif (src.ndim >= 2 and tensor.ndim == src.ndim and tensor.shape[1] == in_channels
              and src.shape[0] == tensor.shape[0] and src.shape[2:] == tensor.shape[2:]):
            new_state[key] = adapt_input_channels(src, in_channels).to(tensor.dtype)
            report.adapted.append((key, f"input channels {src.shape[1]} -> {in_channels}"))
            report.loaded_numel += tensor.numel()
        else:
            report.skipped.append((key, f"shape {tuple(src.shape)} in checkpoint, {tuple(tensor.shape)} here"))
    report.unused = sorted(set(state) - set(target))
    _check_encoder(network, target, state, report)
    target.update(new_state)
    network.load_state_dict(target)
    return report


def _swin_class():
    from monai.networks.nets import SwinUNETR
    return SwinUNETR


def _check_encoder(network: nn.Module, target: dict, state: dict, report: LoadReport) -> None:
    """Refuse unless the transformer encoder loaded completely (see the module docstring)."""
    prefix = encoder_prefix(network)
    done = set(report.loaded) | {k for k, _ in report.adapted}
    if prefix is None:
        if not done:
            raise WeightsMismatchError("Nothing in the checkpoint fits this network (no tensor of the same name and "
                                       "shape). It was trained with another backbone or preset.")
        return
    encoder = [k for k in target if k.startswith(prefix) and not _ENCODER_EXEMPT.search(k)]
    missing = [k for k in encoder if k not in done]
    if not missing:
        return
    why = dict(report.skipped)
    examples = "; ".join(f"{k}: {why.get(k, 'not in checkpoint')}" for k in missing[:4])
    same = [k for k in encoder if k in state and "position_embeddings" not in k]
    if same and all(k in done or state[k].shape == target[k].shape for k in same):
        hint = (" The file has this network's widths but lacks those tensors: an older MONAI layout, or a file cut "
                "short.")
    else:
        presets = matching_presets(network, state, prefix)
        arch = "unetr" if prefix == "vit." else "swinunetr"
        hint = (f" The file's encoder has the widths of the '{presets[0]}' preset: plan the target with "
                f"`hippo-peft plan -d TARGET --arch {arch} --preset {presets[0]}`." if presets else
                " It was probably trained with another backbone or preset (compare the plans' architecture entries).")
    raise WeightsMismatchError(
        f"The checkpoint does not hold this network's whole encoder ({prefix}*): {len(missing)} of {len(encoder)} "
        f"encoder tensors are missing or of another shape, e.g. {examples}.{hint} Nothing was loaded.")


def load_pretrained(network: nn.Module, path: str | Path, in_channels: int,
                    log: Callable[[str], None] | None = None, target_labels: Mapping | None = None,
                    target_regions: bool = False, head_init: str = "source") -> LoadReport:
    """Read ``path`` and transfer it into ``network`` (arguments as :func:`transfer_weights`); the report is
    passed to ``log`` (default: this module's logger at INFO; trainers pass their ``print_to_log_file``)."""
    from hippo_peft.safe_load import TRUST_ENV, trust_from_env
    log = log or logger.info
    if trust_from_env():
        log(f"{TRUST_ENV}=1: {path} may be unpickled without the allow-list (only for files you trust).")
    source = read_source(path)
    report = transfer_weights(network, source, in_channels, target_labels, target_regions, head_init)
    log(f"Loaded pre-trained weights from {path}\n{report.format()}")
    return report
