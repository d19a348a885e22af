"""What every hippo_peft trainer shares (:class:`nnUNetTrainer_HippoBase`): schedules, the tolerant pre-trained
loader (head from the source), the dying-label check, and checks that turn nnU-Net's late crashes into early,
actionable errors. :class:`nnUNetTrainer_TransformerBase` adds a MONAI backbone built from plans, no deep
supervision and AdamW with warm-up + poly; ``trainers/unet.py`` keeps nnU-Net's own U-Net and SGD. Concrete
trainers only say which backbone and which schedule."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

from hippo_peft.atomic import atomic_file
from hippo_peft.errors import RefusedError
from hippo_peft.networks import build_network
from hippo_peft.nnunet.label_health import LabelHealthMixin
from hippo_peft.nnunet.plans import adapt_plans_for_trainer
from hippo_peft.nnunet.schedule import WarmupPolyLRScheduler
from hippo_peft.nnunet.weights import load_pretrained


@dataclass(frozen=True)
class Schedule:
    """Training length. ``None`` keeps nnU-Net's value."""

    num_epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    save_every: int | None = None


# nnU-Net's own _1epoch/_5epochs variants still run 250 iterations per epoch; these are really short.
# Two epochs so that a checkpoint_latest.pth exists mid-run (what `nnUNetv2_train --c` resumes from).
SMOKE = Schedule(num_epochs=2, iterations_per_epoch=2, val_iterations_per_epoch=1, save_every=1)
SHORT = Schedule(num_epochs=20, iterations_per_epoch=25, val_iterations_per_epoch=2, save_every=5)


class _ToTrainerLog(logging.Handler):
    """Hands ``hippo_peft`` log records to a trainer's ``print_to_log_file`` (nnU-Net's log file and console)."""

    def __init__(self, trainer: "nnUNetTrainer"):
        super().__init__(logging.INFO)
        self.trainer = trainer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            self.trainer.print_to_log_file(message if record.levelno < logging.WARNING
                                           else f"{record.levelname}: {message}")
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise into the caller
            self.handleError(record)


def route_pretrained_weights(trainer: "nnUNetTrainer_HippoBase") -> None:
    """Send ``nnUNetv2_train -pretrained_weights`` for ``trainer``'s network to ``trainer.load_pretrained_weights``.

    nnU-Net's ``run_training`` calls its module function ``load_pretrained_weights(network, fname)`` right after
    ``initialize()``; its strict shape check rejects any change of classes or channels. nnU-Net offers no hook, so the
    module function is wrapped, scoped to this trainer: a call for any other network (another trainer in the same
    process) goes on to the function that was there before, in the end nnU-Net's own. The trainer is held weakly,
    so the wrapper keeps nothing alive.
    """
    import weakref

    import nnunetv2.run.run_training as run_training
    previous, ref = run_training.load_pretrained_weights, weakref.ref(trainer)

    def load_pretrained_weights(network, fname, verbose=False):
        ours = ref()
        if ours is not None and network is ours.network:
            return ours.load_pretrained_weights(fname)
        return previous(network, fname, verbose=verbose)

    run_training.load_pretrained_weights = load_pretrained_weights


class nnUNetTrainer_HippoBase(LabelHealthMixin, nnUNetTrainer):
    """Abstract: what every hippo_peft trainer shares, whatever its network: the schedule presets, the tolerant
    pre-trained loader with the head rules (``-pretrained_weights``), the dying-label warning and
    ``label_check.json`` (:mod:`hippo_peft.nnunet.label_health`), the early refusal of folds nnU-Net cannot make."""

    schedule = Schedule()
    head_init = "source"  # -pretrained_weights: the head from the source's by the head rules; "fresh": never (set it
    # in a subclass for a full-length run with a fresh head; the budget trainers have _freshhead)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        s = self.schedule
        self.num_epochs = s.num_epochs or self.num_epochs
        self.num_iterations_per_epoch = s.iterations_per_epoch or self.num_iterations_per_epoch
        self.num_val_iterations_per_epoch = s.val_iterations_per_epoch or self.num_val_iterations_per_epoch
        self.save_every = s.save_every or self.save_every

    @property
    def plain_network(self) -> nn.Module:
        # by type: configure_optimizers runs before nnU-Net wraps the network in DDP
        net = self.network.module if isinstance(self.network, DDP) else self.network
        return net._orig_mod if isinstance(net, OptimizedModule) else net

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def initialize(self):
        super().initialize()
        route_pretrained_weights(self)

    @contextmanager
    def library_logs(self):
        """While library code runs for this trainer, its ``hippo_peft`` log records (e.g. the unpickling warning of
        :mod:`hippo_peft.safe_load`) go to nnU-Net's log file and console, once: ``nnUNetv2_train`` configures no
        logging, and the records do not propagate to other handlers meanwhile."""
        logger = logging.getLogger("hippo_peft")
        handler, saved = _ToTrainerLog(self), (logger.level, logger.propagate)
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]

    def load_pretrained_weights(self, fname: str):
        return self.load_pretrained_into(self.plain_network, fname)

    def load_pretrained_into(self, network: nn.Module, fname: str):
        """The tolerant loader (:mod:`hippo_peft.nnunet.weights`) with this task's classes for the head rules; its
        report goes to the log and to ``pretrained_weights_report.json`` in the fold folder."""
        with self.library_logs():
            report = load_pretrained(network, fname, self.num_input_channels, log=self.print_to_log_file,
                                     target_labels=self.dataset_json["labels"],
                                     target_regions=self.label_manager.has_regions, head_init=self.head_init)
        if self.local_rank == 0:
            with atomic_file(join(self.output_folder, "pretrained_weights_report.json")) as tmp:
                save_json(report.to_dict(), str(tmp), sort_keys=False)
        return report

    def do_split(self):
        if self.fold != "all" and not isfile(join(self.preprocessed_dataset_folder_base, "splits_final.json")):
            cases = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
            if len(cases) < 5:
                raise RefusedError(
                    f"{self.plans_manager.dataset_name} has {len(cases)} training cases, fewer than nnU-Net's 5 "
                    f"cross-validation folds, so fold {self.fold} cannot be made. Train on all cases with fold `all` "
                    f"(nnUNetv2_train ... all), or write your own splits to "
                    f"{join(self.preprocessed_dataset_folder_base, 'splits_final.json')} "
                    f"(a list of {{'train': [...], 'val': [...]}}, one entry per fold).")
        return super().do_split()


class nnUNetTrainer_TransformerBase(nnUNetTrainer_HippoBase):
    """Abstract: subclasses set ``arch``. Do not use directly with ``-tr``. A MONAI backbone built from the plans
    (adapted to it), no deep supervision, AdamW with warm-up + poly."""

    arch: str | None = None
    default_preset = "paper"  # used when the plans are nnU-Net's own (nnUNetPlans, ResEnc, ...)
    initial_lr_default = 1e-4
    weight_decay_default = 1e-5
    warmup_fraction = 0.05  # of the epochs

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if self.arch is None:
            raise TypeError(f"{type(self).__name__} is abstract; use nnUNetTrainer_UNETR or nnUNetTrainer_SwinUNETR.")
        plans = adapt_plans_for_trainer(plans, configuration, self.arch, self.default_preset)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # MONAI networks have one output
        self.initial_lr = self.initial_lr_default
        self.weight_decay = self.weight_decay_default
        info = self.configuration_manager.configuration.get("hippo_peft", {})
        self.print_to_log_file(f"hippo_peft: {self.configuration_manager.network_arch_class_name} preset "
                               f"'{info.get('preset')}', patch size {self.configuration_manager.patch_size}"
                               + (f" (adapted from {info['adapted_from']} plans)" if info.get("adapted_from") else ""))

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # Fully determined by the plans (nnUNetv2_predict calls this on the class and loads weights strictly).
        return build_network(configuration_manager.network_arch_class_name,
                             configuration_manager.network_arch_init_kwargs, configuration_manager.patch_size,
                             num_input_channels, num_output_channels)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # nnU-Net calls this unconditionally and assumes a `.decoder`; MONAI networks have no such switch

    def parameter_groups(self) -> list[dict]:
        """AdamW parameter groups, each with its own ``lr`` and ``weight_decay`` (and a ``name`` for the log).
        Full training: one group of every trainable tensor."""
        return [{"name": "all", "params": self.trainable_parameters(), "lr": self.initial_lr,
                 "weight_decay": self.weight_decay}]

    def configure_optimizers(self):
        groups = [g for g in self.parameter_groups() if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=self.initial_lr, weight_decay=self.weight_decay)
        self.print_to_log_file("hippo_peft optimizer groups: " + "; ".join(
            f"{g['name']}: {sum(p.numel() for p in g['params']):,} parameters, lr {g['lr']:g}, weight decay "
            f"{g['weight_decay']:g}" for g in groups))
        warmup = int(round(self.warmup_fraction * self.num_epochs))
        # warm-up + poly on every group, each from its own start rate
        return optimizer, WarmupPolyLRScheduler(optimizer, groups[0]["lr"], self.num_epochs, warmup)

