"""Whole-network operations: inject a method, account for what trains, merge back, adapter-only state dicts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import Tensor, nn

from hippo_peft.adapters.config import AdapterConfig
from hippo_peft.adapters.core import AdaptedLinear
from hippo_peft.adapters.lorapt import GROUPS_ATTR, PrincipalTensor, TensorSliceLinear, remove_lorapt
from hippo_peft.adapters.registry import CONV_LAYERS, INJECTORS, LAYERS
from hippo_peft.adapters.targets import Backbone, backbone_of, find_targets
from hippo_peft.errors import InputError, RefusedError

CONFIG_ATTR = "hippo_peft_adapter"
BASE_COUNT_ATTR = "hippo_peft_base_parameters"
FINGERPRINT_ATTR = "hippo_peft_base_fingerprint"


def is_extra(name: str, backbone: Backbone, train_extra: str) -> bool:
    """Whether the parameter / state-dict key ``name`` belongs to the non-adapter parts ``train_extra`` trains."""
    if backbone.encoder_aliases and name.startswith(backbone.encoder_aliases):
        return False
    if train_extra == "head":
        return name.startswith(backbone.head_prefix)
    if train_extra == "decoder_head":
        return name.startswith((backbone.head_prefix, *backbone.decoder_prefixes))
    if train_extra == "decoder":
        return not name.startswith((backbone.encoder_prefix, GROUPS_ATTR + "."))
    return False


def extra_keys(model: nn.Module, config: AdapterConfig) -> List[str]:
    """State-dict keys of the non-adapter parts that ``config.train_extra`` trains (head / decoder)."""
    backbone = backbone_of(model)
    return [k for k in model.state_dict() if is_extra(k, backbone, config.train_extra)]


@torch.no_grad()
def base_fingerprint(model: nn.Module, config: AdapterConfig) -> str:
    """SHA-256 of the frozen base tensors an adapter is applied to (everything but the parts it trains itself).

    Taken from a plain (not yet adapted) network; an adapter file records it, and applying the file to another
    base is refused."""
    import hashlib
    skip = set(extra_keys(model, config))
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key in skip:
            continue
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainableReport:
    trainable: int
    total: int  # parameters of the base network
    tensors: Dict[str, int]

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} of {self.total:,} ({self.percent:.3f} %)"

    def to_dict(self) -> dict:
        return {"trainable": self.trainable, "total": self.total, "percent": self.percent}


def _adapter_modules(model: nn.Module) -> List[str]:
    """Names of the adapter layers / stacked tensors ``model`` holds (empty for a plain network)."""
    return [n for n, m in model.named_modules() if isinstance(m, (AdaptedLinear, TensorSliceLinear, PrincipalTensor))]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` wherever the module at ``name`` is referenced. nnU-Net's ``ConvDropoutNormReLU`` holds its conv
    twice (``conv`` and ``all_modules[0]``, and its forward runs ``all_modules``): replacing one name only would
    leave the forward unadapted without an error."""
    old = model.get_submodule(name)
    places = [(parent, child) for parent in model.modules() for child, m in parent._modules.items() if m is old]
    for parent, child in places:
        setattr(parent, child, new)


def inject(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Adapt ``model`` in place with ``config``'s method and return it.

    Replaces the target linears (matrix methods) or stacks them into principal tensors (LoRA-PT), freezes
    everything else, then unfreezes ``config.train_extra``. Decompositions are taken from the weights the model
    holds *now*: inject after loading the pre-trained weights.

    All or nothing (as HF peft): every target is checked and every replacement layer built before the network is
    changed, so an error (a rank too large for one target, ...) leaves it exactly as it was -- same modules,
    tensors and ``requires_grad`` flags -- and it can be injected again. Injectors (:class:`MethodSpec`
    ``injector``) must likewise build everything before they change the network, as ``inject_lorapt`` does.
    """
    carried, layers = adapter_config(model), _adapter_modules(model)
    if carried is not None or layers:
        what = f"a {carried.method} adapter" if carried is not None else \
            f"adapter layers ({', '.join(layers[:3])}{', ...' if len(layers) > 3 else ''})"
        raise RefusedError(f"this network already carries {what}; merge() it or build a fresh network before "
                           f"injecting another.")
    backbone = backbone_of(model)
    base_count = sum(p.numel() for p in model.parameters())
    fingerprint = base_fingerprint(model, config)
    if backbone.convolutional and config.method in CONV_LAYERS:
        replacements = [(name, CONV_LAYERS[config.method].from_conv(conv, config))
                        for name, conv in find_targets(model, config)]
        for name, layer in replacements:
            _replace(model, name, layer)
    elif backbone.convolutional and config.method in LAYERS:
        raise InputError(f"method '{config.method}' has no conv layer (MethodSpec conv_layer): it adapts "
                         f"transformer linears only, not a {backbone.name}.")
    elif config.method in LAYERS:
        layer_cls = LAYERS[config.method]
        replacements = [(name, layer_cls.from_linear(linear, config)) for name, linear in find_targets(model, config)]
        for name, layer in replacements:
            _replace(model, name, layer)
    elif config.method in INJECTORS:
        INJECTORS[config.method](model, config)
    else:
        raise InputError(f"no implementation registered for method '{config.method}'")
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, (AdaptedLinear, PrincipalTensor)):
            for pname in module.trainable_names:
                module.get_parameter(pname).requires_grad_(True)
    for name, param in model.named_parameters():
        if is_extra(name, backbone, config.train_extra):
            param.requires_grad_(True)
    object.__setattr__(model, CONFIG_ATTR, config)
    object.__setattr__(model, BASE_COUNT_ATTR, base_count)
    object.__setattr__(model, FINGERPRINT_ATTR, fingerprint)
    return model


def adapter_config(model: nn.Module) -> AdapterConfig | None:
    return getattr(model, CONFIG_ATTR, None)


def injected_fingerprint(model: nn.Module) -> str | None:
    """The base fingerprint recorded when ``model`` was injected."""
    return getattr(model, FINGERPRINT_ATTR, None)


def trainable_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def trainable_report(model: nn.Module) -> TrainableReport:
    tensors = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    total = getattr(model, BASE_COUNT_ATTR, None) or sum(p.numel() for p in model.parameters())
    return TrainableReport(sum(tensors.values()), total, tensors)


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Fold the adapter into plain ``nn.Linear`` / conv weights, in place: the base architecture's state-dict keys
    (HyPS additionally keeps its non-linear serial adapters, see :mod:`hippo_peft.adapters.hyps`)."""
    adapted = [(n, m) for n, m in model.named_modules() if isinstance(m, (AdaptedLinear, TensorSliceLinear))]
    for name, module in adapted:
        _replace(model, name, module.to_plain() if isinstance(module, AdaptedLinear) else module.to_linear())
    remove_lorapt(model)
    model.requires_grad_(True)
    for attr in (CONFIG_ATTR, BASE_COUNT_ATTR, FINGERPRINT_ATTR):
        if attr in model.__dict__:
            object.__delattr__(model, attr)
    return model


def _adapter_tensors(model: nn.Module) -> Dict[str, Tensor]:
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        for b in getattr(module, "adapter_buffers", ()):
            tensors[f"{name}.{b}"] = module.get_buffer(b)
    return tensors


def adapter_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """The trainable tensors (adapter + unfrozen head/decoder) and the adapters' own buffers, detached."""
    return {n: t.detach().contiguous() for n, t in _adapter_tensors(model).items()}


@torch.no_grad()
def load_adapter_state_dict(model: nn.Module, state: Dict[str, Tensor]) -> None:
    """Copy an adapter-only state dict into an adapted network; keys and shapes must match exactly."""
    params = _adapter_tensors(model)
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise InputError(f"adapter state does not fit this network: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}. Was it trained with the same method, "
                         f"config and backbone preset?")
    bad = [n for n in params if params[n].shape != state[n].shape]
    if bad:
        raise InputError(f"adapter tensors of the wrong shape: "
                         f"{[(n, tuple(state[n].shape), tuple(params[n].shape)) for n in bad[:5]]}")
    bad = [n for n in params if state[n].dtype != params[n].dtype]
    if bad:
        raise InputError(f"adapter tensors of the wrong dtype: "
                         f"{[(n, str(state[n].dtype), str(params[n].dtype)) for n in bad[:5]]}; the file was not "
                         f"written by export-adapter (or was altered). Export it again.")
    bad = [n for n in params if not torch.isfinite(state[n]).all()]
    if bad:
        raise InputError(f"adapter tensors with NaN or Inf: {bad[:5]}; the training that wrote them diverged.")
    for n, p in params.items():
        p.copy_(state[n].to(p.device, p.dtype))
