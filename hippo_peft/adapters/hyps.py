"""HyPS: a principal parallel branch (PiSSA) plus a serial bottleneck adapter on the layer's output,
``y = h + scale * up(relu(down(dropout(h))))`` with ``h = x (W_res + B A)^T + b``; ``down`` Kaiming-uniform,
``up`` zero, so the network starts exactly at the pre-trained one. ``up`` gets a gradient from the first step,
``down`` from the second (its gradient is proportional to ``up``), as for LoRA's ``A`` and ``B``.

One addition to the described method: ``down``'s bias is calibrated on the first training batch so that every
bottleneck unit starts active on half of the tokens (bias = minus the median pre-activation). With a Kaiming
``down`` alone, a unit whose pre-activation is negative on every token -- transformer features share a large
common direction -- is a dead ReLU that never receives a gradient; with k = 2 our tests saw this in several
layers of a UNETR. The calibration changes no output (``up`` is zero then) and is recorded in the
``serial.calibrated`` buffer so that resumed or re-loaded adapters are not re-calibrated.

Merge folds the parallel branch into the linear weight exactly. The serial branch is non-linear (ReLU) and cannot
be folded into a linear weight: a merged HyPS network keeps it as a small ``serial`` submodule of each adapted
linear (2 k out + k + out numbers per layer), i.e. the base keys plus ``*.serial.*``.

On a conv (nnU-Net's U-Net) the principal branch acts on the unfolded kernel and the serial adapter on the output
channels, i.e. as 1x1x1 convs C_out -> k -> C_out (:class:`HyPSConv`); the bias calibration takes the median over
every voxel of the first batch."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hippo_peft.adapters.config import HyPSConfig
from hippo_peft.adapters.core import ConvMixin, FactoredConvMixin
from hippo_peft.adapters.pissa import PiSSALinear
from hippo_peft.adapters.registry import MethodSpec


class SerialAdapter(nn.Module):
    def __init__(self, features: int, bottleneck: int, scale: float, dropout: float, device=None):
        super().__init__()
        self.scale = float(scale)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(features, bottleneck, device=device)
        self.up = nn.Linear(bottleneck, features, device=device)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool, device=device))
        self._checked = False  # python mirror of `calibrated`, to avoid a device sync every step

    @torch.no_grad()
    def _calibrate(self, h: Tensor) -> None:
        self._checked = True
        if bool(self.calibrated):
            return
        z = F.linear(h.detach().reshape(-1, h.shape[-1]).float(), self.down.weight.float())
        self.down.bias.copy_(-z.median(dim=0).values)
        self.calibrated.fill_(True)

    def forward(self, h: Tensor) -> Tensor:
        if self.training and not self._checked:
            self._calibrate(h)
        return h + self.scale * self.up(torch.relu(self.down(self.dropout(h))))

    def over_channels(self, h: Tensor) -> Tensor:
        """The adapter on dim 1 of a conv output (N, C, ...): the same weights as 1x1(x1) convs (no channels-last
        copy of the activation), calibrated on the median over every voxel of the first batch."""
        conv = F.conv3d if h.dim() == 5 else F.conv2d
        ones = [1] * (h.dim() - 2)
        down = self.down.weight.view(*self.down.weight.shape, *ones)
        if self.training and not self._checked:
            self._checked = True
            if not bool(self.calibrated):
                with torch.no_grad():
                    z = conv(h.detach().float(), down.float())
                    self.down.bias.copy_(-z.transpose(0, 1).reshape(z.shape[1], -1).median(dim=1).values)
                    self.calibrated.fill_(True)
        z = torch.relu(conv(self.dropout(h), down, self.down.bias))
        return h + self.scale * conv(z, self.up.weight.view(*self.up.weight.shape, *ones), self.up.bias)


class LinearWithSerialAdapter(nn.Linear):
    """A merged HyPS layer: plain linear weights (base keys) followed by the serial adapter."""

    def __init__(self, in_features: int, out_features: int, bias: bool, serial: SerialAdapter, device=None):
        super().__init__(in_features, out_features, bias=bias, device=device)
        self.serial = serial

    def forward(self, x: Tensor) -> Tensor:
        return self.serial(super().forward(x))


class HyPSLinear(PiSSALinear):
    trainable_names = ("lora_A", "lora_B", "serial.down.weight", "serial.down.bias", "serial.up.weight",
                       "serial.up.bias")
    adapter_buffers = ("serial.calibrated",)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: HyPSConfig) -> "HyPSLinear":
        layer = super().from_linear(linear, config)
        layer.serial = SerialAdapter(layer.out_features, config.bottleneck, config.scale, config.dropout,
                                     device=layer.weight.device)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return self.serial(super().forward(x))

    @torch.no_grad()
    def to_linear(self) -> nn.Module:
        plain = super().to_linear()
        merged = LinearWithSerialAdapter(self.in_features, self.out_features, self.bias is not None, self.serial,
                                         device=self.weight.device)
        merged.load_state_dict(plain.state_dict(), strict=False)
        return merged


class Conv3dWithSerialAdapter(nn.Conv3d):
    """A merged HyPS conv: a plain ``nn.Conv3d`` (base keys) followed by the serial adapter over its channels."""

    def forward(self, x: Tensor) -> Tensor:
        return self.serial.over_channels(super().forward(x))


class Conv2dWithSerialAdapter(nn.Conv2d):
    """:class:`Conv3dWithSerialAdapter` for nnU-Net's 2d configuration."""

    def forward(self, x: Tensor) -> Tensor:
        return self.serial.over_channels(super().forward(x))


class HyPSConv(FactoredConvMixin, HyPSLinear):
    """HyPS on a conv: the principal branch on the unfolded kernel, the serial adapter over the output channels."""

    def forward(self, x: Tensor) -> Tensor:
        return self.serial.over_channels(self.conv_forward(x))

    @torch.no_grad()
    def to_plain(self) -> nn.Module:
        plain = ConvMixin.to_plain(self)
        merged_cls = Conv3dWithSerialAdapter if self.conv_type is nn.Conv3d else Conv2dWithSerialAdapter
        out_c, in_c, *k = self.kernel_shape
        merged = merged_cls(in_c, out_c, k, stride=self.stride, padding=self.padding, dilation=self.dilation,
                            bias=self.bias is not None, device=self.weight.device)
        merged.load_state_dict(plain.state_dict())
        merged.serial = self.serial
        return merged


SPEC = MethodSpec(
    "hyps", HyPSConfig, "HyPS", "HyPS", layer=HyPSLinear, conv_layer=HyPSConv, weight_decay=2e-5,
    summary="HyPS: rank-2 principal parallel branch + width-2 serial adapters on every transformer linear "
            "(wd 2e-5).",
    paper="HyPS: hybrid parallel and serial adapters on principal weights for few-shot medical segmentation")
