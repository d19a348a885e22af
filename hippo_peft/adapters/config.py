"""Typed, validated configurations of the adaptation methods (one dataclass per method, HF-peft style).

Every field carries its help text in ``metadata["help"]``; configs round-trip through plain JSON dicts
(``to_dict`` / ``config_from_dict``) so checkpoints and adapter files record exactly what was trained.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, Dict, Type

from hippo_peft.errors import InputError

TRAIN_EXTRA = ("none", "head", "decoder_head", "decoder")
NORM_AXES = ("output", "input")
TARGET_GROUPS = ("all", "attn", "mlp")


def _check_choice(method: str, name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{method}: {name} must be one of {', '.join(choices)}; got {value!r}.")


def _help(text: str, default, **kw):
    return field(default=default, metadata={"help": text}, **kw)


@dataclass
class AdapterConfig:
    """What every method shares: which linears are adapted and which non-adapter parts also train."""

    method: ClassVar[str] = ""
    rank: int = _help("Rank r of the adapted (principal) part.", 8)
    targets: str = _help(
        "Which linears of the transformer encoder to adapt: 'all' (attention qkv + projection and both MLP "
        "linears), 'attn', 'mlp', or a regular expression matched against full nn.Linear names.", "all")
    train_extra: str = _help(
        "Non-adapter parts that also train: 'none'; 'head' (the output convolution `out`); 'decoder_head' (the "
        "papers' setting: the CNN decoder blocks -- UNETR decoder2-5, SwinUNETR decoder1-5 -- and the head, while "
        "the CNN skip encoders encoder1-4 and SwinUNETR's encoder10 stay frozen); or 'decoder' (every parameter "
        "outside the transformer encoder: the skip encoders too).", "none")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise InputError(f"{self.method}: rank must be a positive integer, got {self.rank!r}.")
        _check_choice(self.method, "train_extra", self.train_extra, TRAIN_EXTRA)
        if self.targets not in TARGET_GROUPS:
            try:
                re.compile(self.targets)
            except re.error as err:
                raise InputError(f"{self.method}: targets {self.targets!r} is neither one of "
                                 f"{', '.join(TARGET_GROUPS)} nor a valid regular expression ({err}).") from None

    def to_dict(self) -> dict:
        return {"method": self.method, **asdict(self)}

    @classmethod
    def help(cls) -> Dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


@dataclass
class LoRAConfig(AdapterConfig):
    """LoRA (Hu et al. 2021): W + (alpha/r) B A with B = 0 and A Kaiming-uniform at the start."""

    method: ClassVar[str] = "lora"
    alpha: float = _help("Scaling numerator: the update is multiplied by alpha / rank.", 8.0)

    def validate(self) -> None:
        super().validate()
        if not self.alpha > 0:
            raise InputError(f"{self.method}: alpha must be positive, got {self.alpha!r}.")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@dataclass
class DoRAConfig(LoRAConfig):
    """DoRA (Liu et al. 2024): magnitude m times the direction of W + (alpha/r) B A."""

    method: ClassVar[str] = "dora"
    norm_axis: str = _help("'output': one magnitude per output unit (DoRA, HF peft); 'input': one per input "
                           "column (the public PDoRA code).", "output")
    detach_norm: bool = _help("Treat the norm as a constant in the backward pass (DoRA paper sec. 4.3 and HF peft).",
                              True)

    def validate(self) -> None:
        super().validate()
        _check_choice(self.method, "norm_axis", self.norm_axis, NORM_AXES)


@dataclass
class PiSSAConfig(LoRAConfig):
    """PiSSA (Meng et al. 2024): LoRA factors from the principal SVD, residual frozen."""

    method: ClassVar[str] = "pissa"


@dataclass
class PDoRAConfig(AdapterConfig):
    """PDoRA: principal weights (PiSSA) split into magnitude and direction (DoRA)."""

    method: ClassVar[str] = "pdora"
    targets: str = _help("As for every method; the reference code adapts the MLP linears.", "mlp")
    norm_axis: str = _help("'output' (default: one magnitude per output unit, as DoRA and HF peft) or 'input' "
                           "(one per input column, as the public PDoRA code).", "output")
    detach_norm: bool = _help("Treat ||A B|| as a constant in the backward pass. Off by default: the method "
                              "description recomputes the norm from the current A B each step.", False)

    def validate(self) -> None:
        super().validate()
        _check_choice(self.method, "norm_axis", self.norm_axis, NORM_AXES)


@dataclass
class HyPSConfig(AdapterConfig):
    """HyPS: principal parallel branch (PiSSA) plus a serial bottleneck adapter on every adapted output."""

    method: ClassVar[str] = "hyps"
    rank: int = _help("Rank r of the principal parallel branch.", 2)
    bottleneck: int = _help("Width k of the serial adapter (down: out -> k, up: k -> out).", 2)
    serial_scale: float | None = _help("Multiplier of the serial branch; None means 1 / bottleneck.", None)
    dropout: float = _help("Dropout on the serial adapter's input during training.", 0.0)
    include_downsample: bool = _help("Also adapt SwinUNETR's patch-merging linears (downsample.reduction).", False)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            raise InputError(f"hyps: bottleneck must be a positive integer, got {self.bottleneck!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"hyps: dropout must be in [0, 1), got {self.dropout!r}.")

    @property
    def scale(self) -> float:
        return 1.0 / self.bottleneck if self.serial_scale is None else float(self.serial_scale)


@dataclass
class LoRAPTConfig(AdapterConfig):
    """LoRA-PT: principal tensor singular values/vectors (t-SVD) of the stacked transformer weights."""

    method: ClassVar[str] = "lorapt"
    rank: int = _help("Tubal rank r kept per Fourier slice.", 1)


@dataclass
class HeadOnlyConfig(AdapterConfig):
    """Baseline: nothing injected; only the segmentation head trains."""

    method: ClassVar[str] = "headonly"
    train_extra: str = _help("Fixed to 'head' for this baseline.", "head")

    def validate(self) -> None:
        super().validate()
        if self.train_extra != "head":
            raise InputError("headonly trains exactly the head; use decoderonly for the decoder.")


@dataclass
class DecoderOnlyConfig(AdapterConfig):
    """Baseline: nothing injected; exactly the parts the papers' setting trains besides the adapter (the CNN decoder
    blocks and the head), so 'adapter + decoder' against 'decoder only' measures the adapter alone."""

    method: ClassVar[str] = "decoderonly"
    train_extra: str = _help("Fixed to 'decoder_head' for this baseline.", "decoder_head")

    def validate(self) -> None:
        super().validate()
        if self.train_extra != "decoder_head":
            raise InputError("decoderonly trains exactly the decoder blocks and the head; use headonly for the head "
                             "alone or cnnonly for every CNN part.")


@dataclass
class CNNOnlyConfig(AdapterConfig):
    """Baseline: nothing injected; every parameter outside the transformer encoder trains (the CNN skip encoders,
    decoder blocks and head); the transformer stays frozen."""

    method: ClassVar[str] = "cnnonly"
    train_extra: str = _help("Fixed to 'decoder' (everything outside the transformer encoder) for this baseline.",
                             "decoder")

    def validate(self) -> None:
        super().validate()
        if self.train_extra != "decoder":
            raise InputError("cnnonly trains every CNN part (train_extra 'decoder'); use decoderonly for the decoder "
                             "blocks and the head only.")


# method -> config class, filled by adapters.registry.register_method (every method module registers itself)
CONFIGS: Dict[str, Type[AdapterConfig]] = {}


def make_config(method: str, **kwargs) -> AdapterConfig:
    """A validated config for ``method`` (case-insensitive) with ``kwargs`` overriding its defaults."""
    key = method.lower().replace("-", "").replace("_", "")
    if key not in CONFIGS:
        raise InputError(f"Unknown adaptation method '{method}'. Choose one of: {', '.join(CONFIGS)}.")
    cls = CONFIGS[key]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise InputError(f"{key}: unknown option(s) {unknown}; its options are {sorted(known)}.")
    return cls(**kwargs)


def config_from_dict(d: dict) -> AdapterConfig:
    """The config a checkpoint or adapter file recorded (``to_dict``'s output)."""
    d = dict(d)
    return make_config(d.pop("method"), **d)
