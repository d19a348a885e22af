"""Method registry: matrix methods register the ``AdaptedLinear`` class that replaces each target linear;
methods that act on the whole network (LoRA-PT's stacked tensors, the head/decoder baselines) register an
injector ``fn(model, config)``."""
from __future__ import annotations

from typing import Callable, Dict

LAYERS: Dict[str, type] = {}
INJECTORS: Dict[str, Callable] = {}


def register_layer(method: str, layer_cls: type) -> None:
    LAYERS[method] = layer_cls


def register_injector(method: str, fn: Callable) -> None:
    INJECTORS[method] = fn
