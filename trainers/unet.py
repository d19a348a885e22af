"""nnU-Net's own U-Nets as backbones of the adapters: the network nnU-Net plans itself (``PlainConvUNet`` from
``nnUNetPlans``, ``ResidualEncoderUNet`` from the residual-encoder plans), no ``hippo-peft plan`` step, deep
supervision on, and nnU-Net's optimizer: SGD, Nesterov, momentum 0.99, poly decay. The adapter group gets its own
rate; the decoder + head group keeps nnU-Net's 1e-2, so that ``DecoderOnly`` is nnU-Net's fine-tuning with a frozen
encoder."""
from __future__ import annotations

import torch

from hippo_peft.errors import RefusedError
from hippo_peft.nnunet.schedule import WarmupPolyLRScheduler
from hippo_peft.trainers.adapted import AdapterMixin
from hippo_peft.trainers.base import nnUNetTrainer_HippoBase

UNET_NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet")


class nnUNetTrainer_UNetBase(nnUNetTrainer_HippoBase):
    """Abstract: nnU-Net's network from the plans, refused at once when it is not one of its conv U-Nets."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        network = self.configuration_manager.network_arch_class_name
        if network.rsplit(".", 1)[-1] not in UNET_NETWORKS:
            raise RefusedError(
                f"{type(self).__name__} adapts nnU-Net's own conv U-Nets ({' or '.join(UNET_NETWORKS)}), but "
                f"configuration '{configuration}' of plans '{self.plans_manager.plans_name}' builds {network}. Use "
                f"nnUNetPlans or nnU-Net's residual-encoder plans (nnUNetv2_plan_and_preprocess -pl "
                f"nnUNetPlannerResEncM), or the UNETR / SwinUNETR trainers for transformer plans.")


class nnUNetTrainer_UNetAdapterBase(AdapterMixin, nnUNetTrainer_UNetBase):
    """Abstract: the adapter trainers on nnU-Net's U-Nets; subclasses set ``method``. Every encoder conv is adapted
    (``targets='all'``); the papers' setting moved to the CNN trains the decoder (stages, transposed convs,
    segmentation layers with the deep-supervision outputs), ``_Strict`` the segmentation layers. One SGD optimizer
    (Nesterov, momentum 0.99) with two groups on nnU-Net's poly curve: ``adapter`` (``initial_lr_default``, not yet
    swept: nnU-Net's 1e-2) and ``decoder+head`` (nnU-Net's 1e-2 and 3e-5)."""

    rates_from_registry = False  # the registry's rates are AdamW rates for the transformers
    initial_lr_default = 1e-2
    weight_decay_default = 3e-5
    decoder_lr_default = 1e-2
    decoder_weight_decay_default = 3e-5

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.initial_lr_default
        self.weight_decay = self.weight_decay_default

    @classmethod
    def backbone_method_options(cls) -> dict:
        from hippo_peft import adapters
        # every encoder conv (PDoRA's transformer default is its MLP linears)
        return {} if adapters.get_method(cls.method).baseline else {"targets": "all"}

    def configure_optimizers(self):
        groups = [g for g in self.parameter_groups() if g["params"]]
        optimizer = torch.optim.SGD(groups, lr=self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        self.print_to_log_file("hippo_peft optimizer groups (SGD, Nesterov, momentum 0.99): " + "; ".join(
            f"{g['name']}: {sum(p.numel() for p in g['params']):,} parameters, lr {g['lr']:g}, weight decay "
            f"{g['weight_decay']:g}" for g in groups))
        # nnU-Net's poly curve (no warm-up), every group from its own start rate
        return optimizer, WarmupPolyLRScheduler(optimizer, groups[0]["lr"], self.num_epochs, 0)
