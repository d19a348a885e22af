"""What every parameter-efficient trainer shares: the adapter is injected in ``build_network_architecture`` (so
``nnUNetv2_predict -tr <same name>`` rebuilds the adapted network and loads the checkpoint strictly), re-computed
from the pre-trained weights when ``-pretrained_weights`` loads them, and recorded in the log and checkpoint.
Concrete trainers only name the backbone, the method and its options."""
from __future__ import annotations

import torch
from batchgenerators.utilities.file_and_folder_operations import join, save_json
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from hippo_peft import adapters
from hippo_peft.adapter_files import CHECKPOINT_KEY
from hippo_peft.trainers.base import SHORT, SMOKE, Schedule, nnUNetTrainer_TransformerBase
from hippo_peft.weights import load_pretrained



class nnUNetTrainer_AdapterBase(nnUNetTrainer_TransformerBase):
    """Abstract: subclasses set ``arch`` and ``method`` (and optionally ``method_options``)."""

    method: str | None = None
    method_options: dict = {}
    # A new task usually brings a new head (another class count): our trainers train it with the adapter, as the
    # LoRA-PT paper does. The library's configs default to adapter-only (train_extra='none').
    train_extra = "head"
    initial_lr_default = 1e-3  # the reference codes of LoRA-PT and HyPS; PDoRA uses 2e-3

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if self.method is None:
            raise TypeError(f"{type(self).__name__} is abstract; use e.g. nnUNetTrainer_UNETR_LoRAPT.")
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.pretrained_loaded = False
        self.base_fingerprint = None  # of the weights the adapter was decomposed from

    @classmethod
    def adapter_config(cls) -> adapters.AdapterConfig:
        options = dict(cls.method_options)
        if cls.method not in ("headonly", "decoderonly"):
            options.setdefault("train_extra", cls.train_extra)
        return adapters.make_config(cls.method, **options)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # The structure (and so the checkpoint keys) depends only on plans + class; the decomposition done here
        # on fresh weights is replaced when -pretrained_weights loads, or by the checkpoint's tensors.
        network = super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                     num_output_channels, enable_deep_supervision)
        return adapters.inject(network, cls.adapter_config())

    def initialize(self):
        super().initialize()
        self.base_fingerprint = adapters.injected_fingerprint(self.plain_network)
        self.print_to_log_file(f"hippo_peft adapter: {self.adapter_config().to_dict()}; "
                               f"{adapters.trainable_report(self.plain_network)}")

    def load_pretrained_weights(self, fname: str):
        # Decompose the *pre-trained* weights: load them into a plain base network, inject there, then copy the
        # result into the (already optimised-over) adapted network in place.
        base = nnUNetTrainer_TransformerBase.build_network_architecture(
            self.plans_manager, self.configuration_manager, self.num_input_channels,
            self.label_manager.num_segmentation_heads, False).to(self.device)
        report = load_pretrained(base, fname, self.num_input_channels, log=self.print_to_log_file)
        save_json(report.to_dict(), join(self.output_folder, "pretrained_weights_report.json"), sort_keys=False)
        adapters.inject(base, self.adapter_config())
        self.plain_network.load_state_dict(base.state_dict())
        self.pretrained_loaded = True
        self.base_fingerprint = adapters.injected_fingerprint(base)
        self.print_to_log_file(f"hippo_peft: {self.method} decomposed from the pre-trained weights; "
                               f"{adapters.trainable_report(self.plain_network)}")
        return report

    def on_train_start(self):
        if not self.pretrained_loaded and self.current_epoch == 0:
            self.print_to_log_file(
                f"WARNING: {self.method} is training on randomly initialised weights. Adapters are meant to adapt a "
                f"pre-trained network: pass -pretrained_weights <checkpoint> (see `hippo-peft import-weights` for "
                f"foreign checkpoints).", also_print_to_console=True)
        super().on_train_start()

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank == 0 and not self.disable_checkpointing:
            # nnU-Net writes the checkpoint dict itself; add what was trained, for humans and for our tools
            checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
            checkpoint[CHECKPOINT_KEY] = {"method": self.method, "config": self.adapter_config().to_dict(),
                                          "trainable": adapters.trainable_report(self.plain_network).to_dict(),
                                          "pretrained_weights_loaded": self.pretrained_loaded,
                                          "base_fingerprint": self.base_fingerprint}
            torch.save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint):
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
        recorded = checkpoint.get(CHECKPOINT_KEY, {}).get("config")
        if recorded is not None and recorded != self.adapter_config().to_dict():
            raise RuntimeError(f"This checkpoint was trained with adapter {recorded}, but {type(self).__name__} "
                               f"uses {self.adapter_config().to_dict()}. Continue it with the trainer that wrote it.")
        self.pretrained_loaded = checkpoint.get(CHECKPOINT_KEY, {}).get("pretrained_weights_loaded", True)
        self.base_fingerprint = checkpoint.get(CHECKPOINT_KEY, {}).get("base_fingerprint")
        # nnU-Net's load_checkpoint only handles a file name correctly
        return super().load_checkpoint(filename_or_checkpoint)


# One mixin per method: its settings live here once; the backbone files combine them with a backbone.
class LoRAPT:
    """LoRA-PT: tubal rank 1 principal tensors of the stacked attention / MLP weights (reference lr 1e-3, wd 1e-5)."""
    method = "lorapt"


class HyPS:
    """HyPS: rank-2 principal parallel branch + width-2 serial adapters on every transformer linear (wd 2e-5)."""
    method = "hyps"
    weight_decay_default = 2e-5


class PDoRA:
    """PDoRA: rank-8 principal MLP weights as magnitude x direction (reference lr 2e-3, wd 6e-5)."""
    method = "pdora"
    initial_lr_default = 2e-3
    weight_decay_default = 6e-5


class LoRA:
    """LoRA, rank 8, alpha 8, on every transformer linear."""
    method = "lora"


class DoRA:
    """DoRA, rank 8, alpha 8, on every transformer linear."""
    method = "dora"


class PiSSA:
    """PiSSA, rank 8, on every transformer linear."""
    method = "pissa"


class HeadOnly:
    """Only the segmentation head trains."""
    method = "headonly"


class DecoderOnly:
    """Everything outside the transformer encoder trains (CNN skip encoders, decoder, head)."""
    method = "decoderonly"


def schedule_variants(namespace: dict, cls: type) -> list[str]:
    """Define ``<cls>_short`` and ``<cls>_smoke`` (CPU schedules) next to ``cls``; returns the names."""
    names = []
    for suffix, schedule, doc in (("short", SHORT, "20 epochs x 25 iterations: CPU checks and demos."),
                                  ("smoke", SMOKE, "2 epochs x 2 iterations: does the plumbing work?")):
        name = f"{cls.__name__}_{suffix}"
        namespace[name] = type(name, (cls,), {"schedule": schedule, "__doc__": doc,
                                               "__module__": namespace["__name__"], "__qualname__": name})
        names.append(name)
    return names


__all__ = ["nnUNetTrainer_AdapterBase", "schedule_variants", "Schedule", "CHECKPOINT_KEY", "LoRAPT", "HyPS", "PDoRA",
           "LoRA", "DoRA", "PiSSA", "HeadOnly", "DecoderOnly"]
