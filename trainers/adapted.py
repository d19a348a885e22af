"""What every parameter-efficient trainer shares, on any network (:class:`AdapterMixin`): the adapter is injected
in ``build_network_architecture`` (so ``nnUNetv2_predict -tr <same name>`` rebuilds the adapted network and loads
the checkpoint strictly), re-computed from the pre-trained weights when ``-pretrained_weights`` loads them, and
recorded in the log and checkpoint. :class:`nnUNetTrainer_AdapterBase` puts it on the MONAI transformers;
``trainers/unet.py`` on nnU-Net's own U-Nets. Concrete trainers only name the backbone, the method and its
options."""
from __future__ import annotations

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from hippo_peft import adapters
from hippo_peft.atomic import atomic_file
from hippo_peft.errors import RefusedError
from hippo_peft.nnunet.checkpoint import CHECKPOINT_KEY
from hippo_peft.safe_load import load_weights_file, trust_from_env
from hippo_peft.trainers.base import Schedule, nnUNetTrainer_TransformerBase


class AdapterMixin:
    """Put first, before a hippo_peft trainer base: ``class nnUNetTrainer_AdapterBase(AdapterMixin,
    nnUNetTrainer_TransformerBase)``. Subclasses set ``method`` (and optionally ``method_options``); the plain
    network is what the base after the mixin builds.

    What trains (``train_extra``, see :class:`hippo_peft.adapters.AdapterConfig`): by default the papers' setting,
    the method's tensors plus the CNN decoder blocks and the head ('decoder_head'); the ``_Strict`` trainers keep
    the decoder frozen ('head'). Two optimizer groups (the base's optimizer), each with its own rate and weight
    decay: ``adapter`` (``initial_lr_default``, ``weight_decay_default``) and ``decoder+head``
    (``decoder_lr_default``, ``decoder_weight_decay_default``).
    """

    method: str | None = None
    method_options: dict = {}
    train_extra = "decoder_head"
    initial_lr_default = 1e-3  # overwritten from the method's registry entry (__init_subclass__)
    decoder_lr_default = 1e-3
    decoder_weight_decay_default = 1e-5
    rates_from_registry = True  # the registry's rates are AdamW rates for the transformers

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("method") and cls.rates_from_registry:  # the class that names the method
            spec = adapters.get_method(cls.method)
            for attr, value in (("initial_lr_default", spec.lr), ("decoder_lr_default", spec.decoder_lr),
                                ("weight_decay_default", spec.weight_decay),
                                ("decoder_weight_decay_default", spec.decoder_weight_decay)):
                if attr not in cls.__dict__:
                    setattr(cls, attr, value)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if self.method is None:
            raise TypeError(f"{type(self).__name__} is abstract; use e.g. nnUNetTrainer_UNETR_LoRAPT or "
                            f"nnUNetTrainer_UNet_LoRAPT.")
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.pretrained_loaded = False
        self.base_fingerprint = None  # of the weights the adapter was decomposed from

    @classmethod
    def backbone_method_options(cls) -> dict:
        """Options this backbone gives every method unless ``method_options`` says otherwise."""
        return {}

    @classmethod
    def adapter_config(cls) -> adapters.AdapterConfig:
        options = {**cls.backbone_method_options(), **cls.method_options}
        if not adapters.get_method(cls.method).baseline:  # a baseline's config fixes what trains
            options.setdefault("train_extra", cls.train_extra)
        return adapters.make_config(cls.method, **options)

    def parameter_groups(self) -> list[dict]:
        from hippo_peft.adapters.model import is_extra
        from hippo_peft.adapters.targets import backbone_of
        net, extra = self.plain_network, self.adapter_config().train_extra
        backbone = backbone_of(net)
        adapter, decoder = [], []
        for name, param in net.named_parameters():
            if param.requires_grad:
                (decoder if is_extra(name, backbone, extra) else adapter).append(param)
        return [{"name": "adapter", "params": adapter, "lr": self.initial_lr, "weight_decay": self.weight_decay},
                {"name": "decoder+head", "params": decoder, "lr": self.decoder_lr_default,
                 "weight_decay": self.decoder_weight_decay_default}]

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # The structure (and so the checkpoint keys) depends only on plans + class; the decomposition done here
        # on fresh weights is replaced when -pretrained_weights loads, or by the checkpoint's tensors.
        network = super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                     num_output_channels, enable_deep_supervision)
        return adapters.inject(network, cls.adapter_config())

    @classmethod
    def core_name(cls) -> str:
        """The written-out trainer this class is or derives a schedule from (``nnUNetTrainer_UNETR_LoRAPT``)."""
        for klass in cls.__mro__:  # _short / _smoke set a schedule, _<N>it a budget; the core sets neither
            if "schedule" not in klass.__dict__ and "budget_iterations" not in klass.__dict__:
                return klass.__name__
        return cls.__name__

    def initialize(self):
        super().initialize()
        self.base_fingerprint = adapters.injected_fingerprint(self.plain_network)
        self.print_to_log_file(f"hippo_peft adapter: {self.adapter_config().to_dict()}; "
                               f"{adapters.trainable_report(self.plain_network)}")

    def load_pretrained_weights(self, fname: str):
        # Decompose the *pre-trained* weights: load them into a plain base network, inject there, then copy the
        # result into the (already optimised-over) adapted network in place.
        base = super(AdapterMixin, self).build_network_architecture(  # the plain network of the base after us
            self.plans_manager, self.configuration_manager, self.num_input_channels,
            self.label_manager.num_segmentation_heads, False).to(self.device)
        report = self.load_pretrained_into(base, fname)
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
            checkpoint = load_weights_file(filename)  # nnU-Net's file, just written: the allow-list suffices
            checkpoint[CHECKPOINT_KEY] = {"method": self.method, "config": self.adapter_config().to_dict(),
                                          "optimizer_groups": [g["name"] for g in self.optimizer.param_groups],
                                          "trainable": adapters.trainable_report(self.plain_network).to_dict(),
                                          "pretrained_weights_loaded": self.pretrained_loaded,
                                          "base_fingerprint": self.base_fingerprint}
            with atomic_file(filename) as tmp:  # never a half-written checkpoint in place of nnU-Net's
                torch.save(checkpoint, tmp)

    def load_checkpoint(self, filename_or_checkpoint):
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            with self.library_logs():
                checkpoint = load_weights_file(checkpoint, trust_from_env())
        record = checkpoint.get(CHECKPOINT_KEY, {})
        if "optimizer_groups" not in record:
            raise RefusedError(f"This checkpoint ({checkpoint.get('trainer_name')}) has no hippo_peft adapter record "
                               f"with optimizer groups: it was written by another trainer or another hippo_peft "
                               f"version, and {type(self).__name__} cannot continue it. Start a new training.")
        recorded = record.get("config")
        try:
            recorded = adapters.config_from_dict(recorded).to_dict()
        except (TypeError, ValueError, KeyError, AttributeError):
            pass  # unreadable: differs from ours below
        if recorded != self.adapter_config().to_dict():
            raise RefusedError(f"This checkpoint ({checkpoint.get('trainer_name')}) was trained with adapter "
                               f"{recorded}, but {type(self).__name__} uses {self.adapter_config().to_dict()}. "
                               f"Continue it with the trainer that wrote it, or start a new training.")
        if not self.was_initialized:
            self.initialize()  # before restoring the record: initialize() fingerprints the fresh network
        self.pretrained_loaded = record.get("pretrained_weights_loaded", True)
        self.base_fingerprint = record.get("base_fingerprint")
        groups = len(checkpoint["optimizer_state"]["param_groups"])
        if groups != len(self.optimizer.param_groups):
            raise RefusedError(f"{checkpoint.get('trainer_name')}'s optimizer has {groups} parameter groups, "
                               f"{type(self).__name__}'s has {len(self.optimizer.param_groups)}; continue it with "
                               f"the trainer that wrote it.")
        return super().load_checkpoint(filename_or_checkpoint)  # nnU-Net's only handles a file name correctly


class nnUNetTrainer_AdapterBase(AdapterMixin, nnUNetTrainer_TransformerBase):
    """Abstract: the adapter trainers of the MONAI transformers; subclasses set ``arch`` and ``method``. Two AdamW
    groups, each with its own rate and weight decay and the same warm-up + poly curve: ``adapter``
    (``initial_lr_default``, ``weight_decay_default``) and ``decoder+head`` (``decoder_lr_default``,
    ``decoder_weight_decay_default``); the rates come from the method's registry entry."""


def schedule_suffix(cls: type) -> str:
    """``_short``, ``_smoke``, ``_500it`` or '' : what ``cls``'s name adds to its written-out trainer's."""
    return cls.__name__[len(cls.core_name()):]


__all__ = ["AdapterMixin", "nnUNetTrainer_AdapterBase", "Schedule", "CHECKPOINT_KEY", "schedule_suffix"]
