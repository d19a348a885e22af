"""A "dying label": few-shot fine-tuning sometimes loses one label (its Dice stays about 0 while the others learn),
and the mean Dice alone does not say so. Two rules, and a trainer mixin that applies them:

- early warning, during training: nnU-Net logs a pseudo-Dice per foreground label (or region) every epoch
  (``dice_per_class_or_region``, from the few validation batches of the epoch). A label that stays below
  EARLY_MAX_DICE in every epoch of the first EARLY_FRACTION of the epochs while another label exceeds OTHER_MIN_DICE
  is likely lost; the log says so, so that the run can be stopped and rerun early.
- lost, after training: a label whose validation Dice (nnU-Net's final validation, ``validation/summary.json``) is
  below LOST_MAX_DICE while another label's is above OTHER_MIN_DICE. The verdict goes to ``label_check.json`` in the
  fold folder, beside the early warning, so that the warning's hits and false alarms can be counted.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from hippo_peft.atomic import write_text
from hippo_peft.errors import InputError

EARLY_MAX_DICE = 0.05  # pseudo-Dice below this in every epoch of the window: the label has not started to learn
EARLY_FRACTION = 0.2  # the window: this share of the epochs, from the first
OTHER_MIN_DICE = 0.5  # ... while another label exceeds this: the run learns, only not that label
LOST_MAX_DICE = 0.2  # validation (or test) Dice below this at the end, with another label above OTHER_MIN_DICE
CHECK_FILE = "label_check.json"
HISTORY_KEY = "dice_per_class_or_region"  # nnU-Net's per-epoch pseudo-Dice, one list per epoch
REMEDY = "rerun the fold (nnU-Net does not seed its runs, so a rerun differs) or lower the learning rate"
RULE = (f"lost: a label's validation Dice below {LOST_MAX_DICE} while another label's is above {OTHER_MIN_DICE}. "
        f"Early warning: a label's pseudo-Dice below {EARLY_MAX_DICE} in every epoch of the first "
        f"{EARLY_FRACTION:.0%} of the epochs while another label's exceeds {OTHER_MIN_DICE} in one of them.")


def early_window(num_epochs: int) -> int:
    """Epochs the early warning looks at: ``max(1, ceil(EARLY_FRACTION * num_epochs))``."""
    return max(1, math.ceil(round(EARLY_FRACTION * num_epochs, 9)))  # round: 0.2 * 15 is 3.0000000000000004


def _number(value) -> float | None:
    """A Dice as a float; None for a missing or NaN one (a label absent from reference and prediction)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _epochs_text(window: int, num_epochs: int) -> str:
    return f"epoch 1 of {num_epochs}" if window == 1 else f"epochs 1-{window} of {num_epochs}"


def early_warning(history: Sequence[Sequence[float]], label_names: Sequence[str], num_epochs: int) -> dict | None:
    """The early warning on the first ``early_window(num_epochs)`` epochs of ``history``, or None.

    A label fires when its pseudo-Dice stayed below EARLY_MAX_DICE in every epoch of the window while another label
    exceeded OTHER_MIN_DICE in some epoch of the window. NaN (or None) is no evidence either way: a NaN epoch (the
    label absent from that epoch's validation batches and not predicted) is skipped, so it neither breaks a low
    streak nor counts as one; a label needs at least one defined epoch in the window to fire, so a label that is
    NaN throughout never fires, and a NaN never counts as another label's success.

    Args:
        history: one entry per epoch (nnU-Net's ``dice_per_class_or_region``), each a Dice per label in the order
            of ``label_names``. Returns None while it holds fewer epochs than the window; later epochs are ignored.
        label_names: names of the foreground labels (or regions), in the order of the history's entries.
        num_epochs: the run's planned epochs (sets the window).

    Returns:
        None, or a dict: ``labels`` (the ones at risk), ``epochs`` ([first, last], 1-based), ``num_epochs``,
        ``max_dice`` (each label's highest defined pseudo-Dice in the window, None if none), ``best_other_label``,
        ``best_other_dice`` and a one-line ``message`` that says what to do.
    """
    window = early_window(num_epochs)
    if len(history) < window:
        return None
    epochs = [list(entry) for entry in history[:window]]
    bad = [i + 1 for i, entry in enumerate(epochs) if len(entry) != len(label_names)]
    if bad:
        raise InputError(f"The pseudo-Dice of epoch(s) {', '.join(map(str, bad))} has not one value per label "
                         f"({len(label_names)}: {', '.join(label_names)}); pass the names in the order of nnU-Net's "
                         f"foreground labels or regions.")
    defined = {name: [v for v in (_number(e[i]) for e in epochs) if v is not None]
               for i, name in enumerate(label_names)}
    low = [name for name, values in defined.items() if values and max(values) < EARLY_MAX_DICE]
    others = {name: max(values) for name, values in defined.items() if values and name not in low}
    if not low or not others:
        return None
    best = max(others, key=others.get)
    if others[best] <= OTHER_MIN_DICE:
        return None
    which = f"label '{low[0]}'" if len(low) == 1 else "labels " + ", ".join(f"'{n}'" for n in low)
    message = (f"{which} stayed below pseudo-Dice {EARLY_MAX_DICE} in {_epochs_text(window, num_epochs)} while "
               f"'{best}' reached {others[best]:.2f}: the run is likely to lose {'it' if len(low) == 1 else 'them'}. "
               f"To get a run that learns every label, {REMEDY}.")
    return {"labels": low, "epochs": [1, window], "num_epochs": num_epochs,
            "max_dice": {name: (round(max(v), 4) if v else None) for name, v in defined.items()},
            "best_other_label": best, "best_other_dice": round(others[best], 4), "message": message}


def lost_labels(dice_by_label: Mapping[str, float | None]) -> list[str]:
    """Labels whose Dice is below LOST_MAX_DICE while another label's is above OTHER_MIN_DICE (a run that learned
    nothing loses no label: it has not started). None or NaN: undefined, ignored."""
    defined = {name: d for name, d in ((n, _number(v)) for n, v in dice_by_label.items()) if d is not None}
    return [name for name, d in defined.items()
            if d < LOST_MAX_DICE and any(o > OTHER_MIN_DICE for other, o in defined.items() if other != name)]


def _value_key(value) -> tuple[int, ...]:
    return tuple(sorted(int(v) for v in value)) if isinstance(value, (list, tuple)) else (int(value),)


def _summary_key(item) -> str:
    """nnU-Net's key of a label or region in summary.json (``label_or_region_to_key``: ``str``), with numpy
    integers turned into ints first so that a region reads ``(1, 2)``."""
    return str(tuple(int(i) for i in item)) if isinstance(item, (list, tuple)) else str(int(item))


def label_names_by_key(label_manager, labels: Mapping[str, object]) -> dict[str, str]:
    """nnU-Net's summary.json key of each foreground label or region -> its dataset.json name, in the order of the
    network's outputs (the order of the per-epoch pseudo-Dice).

    Args:
        label_manager: the trainer's ``label_manager`` (``has_regions``, ``foreground_labels`` or
            ``foreground_regions``).
        labels: dataset.json's ``labels`` (name -> value or list of values).
    """
    names: dict[tuple[int, ...], str] = {}
    for name, value in labels.items():
        if name not in ("background", "ignore"):
            names.setdefault(_value_key(value), name)
    items = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    return {_summary_key(item): names.get(_value_key(item), _summary_key(item)) for item in items}


def write_label_check(output_folder: str | Path, label_names_by_key: Mapping[str, str], early_warning: dict | None,
                      early_warning_checked: bool = True) -> dict:
    """Write ``<output_folder>/label_check.json`` (atomically) and return its content.

    Args:
        output_folder: an nnU-Net fold folder; its ``validation/summary.json`` (nnU-Net's final validation) gives
            each label's validation Dice.
        label_names_by_key: summary.json key -> label name (:func:`label_names_by_key`).
        early_warning: the training's early warning (:func:`early_warning`), or None when it did not fire.
        early_warning_checked: False when the warning could not be evaluated (fewer logged epochs than its window).

    Returns:
        ``rule``, ``thresholds``, ``validation_dice`` (name -> Dice or None), ``lost``, ``verdict`` ("ok",
        "lost a label" or "not checked"), ``reason`` (why not checked, else None), ``early_warning``,
        ``early_warning_checked``.
    """
    folder = Path(output_folder)
    summary = folder / "validation" / "summary.json"
    check = {"rule": RULE, "thresholds": {"early_max_dice": EARLY_MAX_DICE, "early_fraction": EARLY_FRACTION,
                                          "other_min_dice": OTHER_MIN_DICE, "lost_max_dice": LOST_MAX_DICE},
             "validation_dice": None, "lost": [], "verdict": "not checked", "reason": None,
             "early_warning": early_warning, "early_warning_checked": bool(early_warning_checked)}
    if not summary.is_file():
        check["reason"] = ("no validation/summary.json: nnU-Net's final validation did not run (the budget "
                           "trainers skip it for fold 'all', whose validation would score the training cases; or the "
                           "training did not finish); run nnUNetv2_train ... --val to check the labels.")
    else:
        try:
            mean = json.loads(summary.read_text())["mean"]
            dice = {name: _number((mean.get(key) or {}).get("Dice")) for key, name in label_names_by_key.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            check["reason"] = f"validation/summary.json is not nnU-Net's summary ({type(e).__name__}: {e})."
        else:
            if not any(key in mean for key in label_names_by_key):
                check["reason"] = (f"validation/summary.json has none of the labels {', '.join(label_names_by_key)}"
                                   f" (it holds {', '.join(map(str, mean)) or 'none'}).")
            else:
                lost = lost_labels(dice)
                check.update(validation_dice=dice, lost=lost, verdict="lost a label" if lost else "ok")
    write_text(folder / CHECK_FILE, json.dumps(check, indent=1, allow_nan=False) + "\n")
    return check


class LabelHealthMixin:
    """For nnU-Net trainers: the early warning in the log (once, when the logged epochs reach the window) and
    ``label_check.json`` after the final validation. Reads ``logger``, ``label_manager``, ``dataset_json``,
    ``num_epochs``, ``local_rank`` and ``output_folder``; its state is made on first use, so ``__init__`` is
    untouched. The history's length, not ``current_epoch``, says where training is: a run resumed with ``--c``
    restores the logger."""

    def _label_names(self) -> dict[str, str]:
        return label_names_by_key(self.label_manager, self.dataset_json["labels"])

    def _evaluate_early_warning(self, history: list) -> dict | None:
        try:
            return early_warning(history, list(self._label_names().values()), self.num_epochs)
        except InputError as e:  # a diagnostic must not end a training run
            self.print_to_log_file(f"label check skipped: {e}", also_print_to_console=True)
            return None

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank != 0 or getattr(self, "_label_warning_checked", False):
            return
        history = self.logger.get_value(HISTORY_KEY, step=None)
        # == and not >=: a run resumed past the window fired (or not) before it stopped; its check is redone
        # silently from the restored history after the final validation
        if len(history) != early_window(self.num_epochs):
            return
        self._label_warning_checked = True
        self.label_early_warning = self._evaluate_early_warning(history)
        if self.label_early_warning:
            self.print_to_log_file(f"WARNING: {self.label_early_warning['message']}", also_print_to_console=True)

    def perform_actual_validation(self, save_probabilities: bool = False):
        result = super().perform_actual_validation(save_probabilities)
        self.write_label_check()
        return result

    def write_label_check(self) -> None:
        """``label_check.json`` from the final validation (rank 0); a failure is logged, never raised: the run
        itself has finished."""
        if self.local_rank != 0:
            return
        try:
            self._write_label_check()
        except Exception as e:  # noqa: BLE001 - a diagnostic must not fail a finished training
            self.print_to_log_file(f"label check failed ({type(e).__name__}: {e}); the training itself finished.",
                                   also_print_to_console=True)

    def _write_label_check(self) -> None:
        checked = getattr(self, "_label_warning_checked", False)
        warning = getattr(self, "label_early_warning", None)
        if not checked:  # resumed past the window, or --val alone: the restored history tells the same
            history = self.logger.get_value(HISTORY_KEY, step=None)
            checked = len(history) >= early_window(self.num_epochs)
            warning = self._evaluate_early_warning(history) if checked else None
        check = write_label_check(self.output_folder, self._label_names(), warning, early_warning_checked=checked)
        if check["verdict"] == "lost a label":
            dice = ", ".join(f"{n} {d:.3f}" for n, d in check["validation_dice"].items() if d is not None)
            self.print_to_log_file(f"label check: lost {', '.join(check['lost'])} (validation Dice {dice}); "
                                   f"{REMEDY}. See {CHECK_FILE}.", also_print_to_console=True)
