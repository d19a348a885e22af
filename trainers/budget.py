"""Fixed-iteration-budget variants of every trainer, for side-by-side comparisons (``hippo-peft benchmark``).

``<trainer>_<N>it`` is ``<trainer>`` trained for exactly N iterations, for any of our trainers *and* nnU-Net's own
``nnUNetTrainer`` (``nnUNetTrainer_300it``): nnU-Net's ``_Xepochs`` variants still run 250 iterations per epoch.
``..._<N>it_lr<R>`` also sets the learning rate (every parameter group), ``..._lr<R>_dlr<D>`` the adapter group's
to R and the decoder + head group's to D (learning-rate sweeps: each rate is its own trainer, so its own folder).
A final ``_freshhead`` (our trainers only) never starts the segmentation head from the source's (``head_init =
"fresh"``; before the head rules, a head of another class count started fresh and one of the same shape was copied):
the "before" of the head rules' before / after comparisons.
The classes are made on first request (nnU-Net looks trainers up by name, so any N works from the command line)
and are cached, so pickling by reference finds the same class.

nnU-Net's final validation of these variants predicts without test-time mirroring (see
``perform_actual_validation``). Each variant also records, for the benchmark, what nnU-Net does not: the compute time of every training step
(data loading excluded), the peak memory of training, and the trainable / total parameter counts. They go to
``budget_stats.json`` in the fold folder when training ends.
"""
from __future__ import annotations

import json
import os
import re
import resource
import time
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from hippo_peft.errors import InputError
from hippo_peft.nnunet.label_health import LabelHealthMixin

RATE = r"\d+(?:\.\d+)?e-?\d+"  # as written by format_rate: 3e-4, 2.5e-3
BUDGET_PATTERN = re.compile(
    rf"^(?P<base>nnUNetTrainer\w*?)_(?P<n>\d+)it(?:_lr(?P<lr>{RATE}))?(?:_dlr(?P<dlr>{RATE}))?(?P<fresh>_freshhead)?$")
STATS_FILE = "budget_stats.json"
_CACHE: dict[str, type] = {}


def format_rate(rate: float) -> str:
    """The one spelling of a rate in trainer and run names: 0.0003 -> '3e-4', 0.0025 -> '2.5e-3'."""
    if not rate > 0:
        raise InputError(f"A learning rate must be > 0, got {rate}.")
    mantissa, exponent = f"{rate:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def split_budget(iterations: int) -> tuple[int, int]:
    """(epochs, iterations per epoch) with epochs x per-epoch == iterations exactly and at least 2 epochs (nnU-Net
    decays the learning rate per epoch, and 2 epochs leave a mid-run checkpoint); 25 per epoch when possible."""
    if iterations < 2:
        raise InputError(f"An iteration budget needs at least 2 iterations, got {iterations}.")
    per_epoch = next(d for d in (25, 20, 10, 5, 2, 1) if iterations % d == 0 and iterations // d >= 2)
    return iterations // per_epoch, per_epoch


class BudgetMixin:
    """Sets the schedule to ``budget_iterations`` and records step times, peak memory and parameter counts."""

    budget_iterations: int = 0

    def _apply_budget(self):
        self.num_epochs, self.num_iterations_per_epoch = split_budget(self.budget_iterations)
        self.num_val_iterations_per_epoch = 2  # pseudo-Dice for the log only; the result uses the final weights
        self.save_every = self.num_epochs
        self._step_seconds: list[float] = []
        self._load: list[float] = []

    def on_epoch_end(self):
        super().on_epoch_end()
        self._load.append(os.getloadavg()[0])  # 1-minute load: tells whether other work shared the CPU

    def train_step(self, batch: dict) -> dict:
        start = time.perf_counter()
        out = super().train_step(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._step_seconds.append(time.perf_counter() - start)
        return out

    def on_train_start(self):
        super().on_train_start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if self.fold == "all":  # it would only score the training cases (e.g. a source pre-training): skip it
            self.print_to_log_file("fold 'all': no final validation (it would predict the training cases).")
            self.write_label_check()  # says "not checked", and why
            return
        # Compare networks, not test-time augmentation: mirroring multiplies CPU inference time by 8 in 3D. Only the
        # final validation is affected; checkpoints keep the mirror axes, so nnUNetv2_predict still mirrors.
        self.inference_allowed_mirroring_axes = None
        return super().perform_actual_validation(save_probabilities)

    def on_train_end(self):
        super().on_train_end()
        if self.local_rank != 0:
            return
        params = list(self.network.parameters())
        trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
        if getattr(self, "method", None):  # adapted: frozen base weights are buffers; count against the base network
            from hippo_peft.adapters import trainable_report
            report = trainable_report(self.plain_network).to_dict()
            trainable, total = report["trainable"], report["total"]
        # ru_maxrss is KiB on Linux: the training process's peak resident memory (weights, activations, optimizer)
        stats = {"iterations": self.budget_iterations, "epochs": self.num_epochs,
                 "iterations_per_epoch": self.num_iterations_per_epoch, "batch_size": self.batch_size,
                 "patch_size": list(self.configuration_manager.patch_size), "device": self.device.type,
                 "step_seconds": [round(s, 5) for s in self._step_seconds],
                 "load_average": {"median": sorted(self._load)[len(self._load) // 2] if self._load else None,
                                  "max": max(self._load, default=None), "cpus": os.cpu_count()},
                 "trainable": trainable, "total": total,
                 "peak_memory_mib": (torch.cuda.max_memory_allocated(self.device) / 2 ** 20
                                     if self.device.type == "cuda"
                                     else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                 "peak_memory_kind": "cuda max allocated" if self.device.type == "cuda" else "process peak RSS"}
        Path(self.output_folder, STATS_FILE).write_text(json.dumps(stats, indent=1))


def budget_trainer(name: str, namespace: dict, module: str) -> type | None:
    """The class for ``<trainer>_<N>it`` (None when ``name`` is not of that form or names no known trainer)."""
    match = BUDGET_PATTERN.match(name)
    if not match:
        return None
    if name in _CACHE:
        return _CACHE[name]
    base_name, n, lr, dlr, fresh = match["base"], int(match["n"]), match["lr"], match["dlr"], bool(match["fresh"])
    base = nnUNetTrainer if base_name == "nnUNetTrainer" else namespace.get(base_name)
    if not (isinstance(base, type) and issubclass(base, nnUNetTrainer)) or re.search(r"_(short|smoke)$", base_name):
        return None
    split_budget(n)  # raises a clear error for a budget that cannot be scheduled
    for rate in (lr, dlr):
        if rate is not None and format_rate(float(rate)) != rate:
            return None  # one spelling per rate, so that one rate is one folder
    if dlr is not None and (lr is None or "decoder_lr_default" not in dir(base)):
        return None  # _dlr needs _lr and a trainer with a decoder + head group
    if fresh and not hasattr(base, "head_init"):
        return None  # nnU-Net's own loader always leaves its segmentation layers fresh

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        if lr is not None:  # nnU-Net's own trainer sets its rate in __init__ (ours read initial_lr_default there)
            self.initial_lr = float(lr)
        self._apply_budget()

    attrs = {"__init__": __init__, "budget_iterations": n, "__module__": module, "__qualname__": name,
             "__doc__": f"{base_name} for exactly {n} training iterations (step time and peak memory recorded)"
                        f"{f', learning rate {lr}' if lr else ''}{f', decoder + head {dlr}' if dlr else ''}"
                        f"{', head left fresh by -pretrained_weights' if fresh else ''}."}
    if getattr(base, "arch", None) and getattr(base, "method", None) is None:
        attrs["initial_lr_default"] = 1e-3  # full fine-tuning in a short budget: the _short trainers' rate
    if lr is not None:
        attrs["initial_lr_default"] = float(lr)
        if "decoder_lr_default" in dir(base):  # one rate given: both groups, as the papers' single optimizer
            attrs["decoder_lr_default"] = float(dlr or lr)
    if fresh:
        attrs["head_init"] = "fresh"
    # nnU-Net's own trainer gets the dying-label check too, so that the benchmark compares it on every run
    bases = (BudgetMixin, base) if issubclass(base, LabelHealthMixin) else (BudgetMixin, LabelHealthMixin, base)
    cls = type(name, bases, attrs)
    _CACHE[name] = cls
    return cls
