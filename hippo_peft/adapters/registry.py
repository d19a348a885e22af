"""One registry of adaptation methods (as HF peft's ``register_peft_method``): each method registers one
:class:`MethodSpec`, and everything else derives from it -- ``make_config``, ``inject``, the trainer names
(``trainers.trainer_name``), the benchmark's and the CLI's method lists, the report's labels and the efficiency
benchmark. The built-in methods register at the end of their modules (``lorapt.py``, ``hyps.py``, ...,
``baselines.py``); the trainer classes of each method are written out in ``trainers/nnUNetTrainer_<backbone>.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from hippo_peft.adapters.config import CONFIGS, AdapterConfig
from hippo_peft.errors import InputError

STRICT = "-strict"  # benchmark / CLI token suffix of the strict setting: "lorapt-strict"


@dataclass(frozen=True)
class MethodSpec:
    """What the package needs to know about one adaptation method.

    Args:
        name: key in configs, adapter files, checkpoints, benchmark tokens and CLI choices (``"lorapt"``); equals
            ``config.method``.
        config: its :class:`~hippo_peft.adapters.config.AdapterConfig` subclass.
        label: how tables and plots name it (``"LoRA-PT"``).
        trainer_suffix: the part of its trainer names after the backbone (``"LoRAPT"`` ->
            ``nnUNetTrainer_UNETR_LoRAPT``, ``..._LoRAPT_Strict``, ``..._LoRAPT_short``).
        summary: one sentence on what it trains; the docstring of its trainers.
        layer: the ``AdaptedLinear`` class that replaces each target linear (matrix methods), or None.
        conv_layer: the class that replaces each target conv of nnU-Net's U-Nets (``ConvMixin`` + an
            ``AdaptedLinear``, built with ``from_conv``), or None (then the method runs on transformers only).
            Baselines need none: they inject nothing.
        injector: ``fn(model, config)`` for methods that act on the whole network (LoRA-PT's stacked tensors; the
            baselines, which inject nothing), or None. Exactly one of ``layer`` and ``injector``.
        lr, decoder_lr: default start rates of the two AdamW groups, ``adapter`` and ``decoder+head`` (the papers
            train both with one optimizer, so ``decoder_lr`` defaults to ``lr``).
        weight_decay, decoder_weight_decay: their weight decays (``decoder_weight_decay`` defaults to
            ``weight_decay``).
        baseline: nothing is injected and the config fixes what trains: no ``_Strict`` setting, no adapter group
            rate of its own.
        in_default_benchmark: part of ``hippo-peft benchmark``'s default method list.
        paper: where the method comes from.
    """

    name: str
    config: type
    label: str
    trainer_suffix: str
    summary: str
    layer: Optional[type] = None
    conv_layer: Optional[type] = None
    injector: Optional[Callable] = None
    lr: float = 1e-3
    decoder_lr: Optional[float] = None
    weight_decay: float = 1e-5
    decoder_weight_decay: Optional[float] = None
    baseline: bool = False
    in_default_benchmark: bool = True
    paper: str = ""

    def __post_init__(self):
        if not (isinstance(self.config, type) and issubclass(self.config, AdapterConfig)):
            raise TypeError(f"{self.name}: config must be an AdapterConfig subclass, got {self.config!r}.")
        if self.config.method != self.name:
            raise InputError(f"{self.name}: its config class {self.config.__name__} says method "
                             f"'{self.config.method}'; set `method: ClassVar[str] = '{self.name}'` there.")
        if (self.layer is None) == (self.injector is None):
            raise InputError(f"{self.name}: give exactly one of layer (an AdaptedLinear class) and injector.")
        if not self.trainer_suffix.isidentifier() or not self.name.isidentifier():
            raise InputError(f"{self.name}: name and trainer_suffix must be identifiers (they end up in class "
                             f"names), got {self.name!r}, {self.trainer_suffix!r}.")
        if self.decoder_lr is None:
            object.__setattr__(self, "decoder_lr", self.lr)
        if self.decoder_weight_decay is None:
            object.__setattr__(self, "decoder_weight_decay", self.weight_decay)

    @property
    def settings(self) -> Tuple[str, ...]:
        """Its benchmark / CLI tokens: the papers' setting and, for adapter methods, the strict one."""
        return (self.name,) if self.baseline else (self.name, self.name + STRICT)


_METHODS: Dict[str, MethodSpec] = {}
LAYERS: Dict[str, type] = {}  # derived from the specs, read by adapters.model.inject
CONV_LAYERS: Dict[str, type] = {}
INJECTORS: Dict[str, Callable] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Make ``spec``'s method known everywhere. A name or trainer suffix can be registered once."""
    if spec.name in _METHODS:
        raise InputError(f"method '{spec.name}' is already registered ({_METHODS[spec.name]}); unregister_method "
                         f"it first or choose another name.")
    clash = [s.name for s in _METHODS.values() if s.trainer_suffix == spec.trainer_suffix]
    if clash:
        raise InputError(f"{spec.name}: trainer suffix '{spec.trainer_suffix}' is taken by '{clash[0]}'.")
    _METHODS[spec.name] = spec
    CONFIGS[spec.name] = spec.config
    (LAYERS if spec.layer is not None else INJECTORS)[spec.name] = spec.layer or spec.injector
    if spec.conv_layer is not None:
        CONV_LAYERS[spec.name] = spec.conv_layer
    return spec


def unregister_method(name: str) -> None:
    """Forget a registered method (tests register toy methods and remove them again)."""
    _METHODS.pop(name)
    for table in (CONFIGS, LAYERS, CONV_LAYERS, INJECTORS):
        table.pop(name, None)


def get_method(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise InputError(f"Unknown adaptation method '{name}'. Choose one of: {', '.join(_METHODS)}.")
    return _METHODS[name]


def method_specs() -> Tuple[MethodSpec, ...]:
    """Every registered method, in registration order."""
    return tuple(_METHODS.values())
