"""The dying-label rules (early warning, lost label), label_check.json, and the trainer mixin's hooks on a fake
trainer: no nnU-Net training."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hippo_peft.errors import InputError
from hippo_peft.nnunet.label_health import (CHECK_FILE, LabelHealthMixin, early_warning, early_window,
                                            label_names_by_key, lost_labels, write_label_check)

NAMES = ["Anterior", "Posterior"]
NAN = float("nan")
# 20 epochs: the window is the first 4; Posterior stays at 0 while Anterior climbs past 0.5
DYING = [[0.1, 0.0], [0.3, 0.0], [0.55, 0.01], [0.7, 0.0]] + [[0.8, 0.0]] * 16
HEALTHY = [[0.1, 0.0], [0.3, 0.04], [0.55, 0.2], [0.7, 0.4]] + [[0.8, 0.7]] * 16


def test_window_is_the_first_fifth_of_the_epochs():
    assert [early_window(n) for n in (1, 2, 5, 6, 15, 20, 1000)] == [1, 1, 1, 2, 3, 4, 200]


def test_early_warning_fires_on_a_dying_label_with_what_to_do():
    warning = early_warning(DYING, NAMES, 20)
    assert warning["labels"] == ["Posterior"] and warning["epochs"] == [1, 4] and warning["num_epochs"] == 20
    assert warning["best_other_label"] == "Anterior" and warning["best_other_dice"] == 0.7
    message = warning["message"]
    assert "'Posterior'" in message and "epochs 1-4 of 20" in message
    assert "rerun the fold (nnU-Net does not seed its runs, so a rerun differs) or lower the learning rate" in message
    json.dumps(warning, allow_nan=False)  # goes into label_check.json as it is
    assert "epoch 1 of 5" in early_warning([[0.9, 0.0]], NAMES, 5)["message"]


def test_early_warning_stays_silent_when_healthy_or_too_early():
    assert early_warning(HEALTHY, NAMES, 20) is None
    assert early_warning(DYING[:3], NAMES, 20) is None  # before the window
    assert early_warning(DYING[:4], NAMES, 20) is not None
    assert early_warning([[0.4, 0.0]] * 4, NAMES, 20) is None  # the other label never exceeded 0.5
    assert early_warning([[0.0, 0.0]] * 4, NAMES, 20) is None  # nothing learns: not a dying label
    with pytest.raises(InputError, match="one value per label"):
        early_warning([[0.9]] * 4, NAMES, 20)


def test_nan_is_no_evidence_either_way():
    # a label NaN in every epoch of the window never fires
    assert early_warning([[0.9, NAN]] * 4, NAMES, 20) is None
    # NaN epochs neither break a low streak nor make one: the defined epochs decide
    assert early_warning([[0.9, NAN], [0.9, 0.0], [0.9, NAN], [0.9, 0.01]], NAMES, 20)["labels"] == ["Posterior"]
    assert early_warning([[0.9, NAN], [0.9, 0.3], [0.9, NAN], [0.9, 0.0]], NAMES, 20) is None
    # a NaN never counts as another label's success
    assert early_warning([[NAN, 0.0]] * 4, NAMES, 20) is None
    assert math.isnan(NAN) and early_warning([[NAN, 0.0], [0.6, 0.0], [NAN, 0.0], [NAN, 0.0]], NAMES, 20)


def test_lost_labels_needs_another_label_that_learned():
    assert lost_labels({"Anterior": 0.8, "Posterior": 0.1}) == ["Posterior"]
    assert lost_labels({"Anterior": 0.4, "Posterior": 0.1}) == []  # nothing above 0.5: not started, not lost
    assert lost_labels({"Anterior": 0.8, "Posterior": 0.3}) == []
    assert lost_labels({"Anterior": 0.8, "Posterior": None, "Third": NAN}) == []  # undefined: ignored
    assert lost_labels({"Anterior": 0.05, "Posterior": 0.1}) == []


class _LabelManager:
    has_regions = False
    foreground_labels = [1, 2]


def _summary(folder, dice: dict) -> None:
    (folder / "validation").mkdir(parents=True, exist_ok=True)
    mean = {key: {"Dice": d, "IoU": d} for key, d in dice.items()}
    # nnU-Net writes NaN as a bare NaN (json's default)
    (folder / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}, "mean": mean,
                                                                    "metric_per_case": []}))


def test_write_label_check_gives_the_verdict(tmp_path):
    names = label_names_by_key(_LabelManager(), {"background": 0, "Anterior": 1, "Posterior": 2})
    assert names == {"1": "Anterior", "2": "Posterior"}
    lost, ok, missing = (tmp_path / n for n in ("lost", "ok", "missing"))
    _summary(lost, {"1": 0.85, "2": 0.02})
    warning = early_warning(DYING, NAMES, 20)
    check = write_label_check(lost, names, warning)
    assert check["verdict"] == "lost a label" and check["lost"] == ["Posterior"]
    assert json.loads((lost / CHECK_FILE).read_text()) == check
    assert check["validation_dice"] == {"Anterior": 0.85, "Posterior": 0.02} and check["early_warning"] == warning
    assert check["thresholds"]["lost_max_dice"] == 0.2 and "0.2" in check["rule"]

    _summary(ok, {"1": 0.85, "2": NAN})
    check = write_label_check(ok, names, None)
    assert check["verdict"] == "ok" and check["lost"] == [] and check["validation_dice"]["Posterior"] is None
    assert json.loads((ok / CHECK_FILE).read_text())["early_warning"] is None  # valid JSON: no NaN written

    missing.mkdir()
    check = write_label_check(missing, names, None, early_warning_checked=False)
    assert check["verdict"] == "not checked" and "fold 'all'" in check["reason"] and "--val" in check["reason"]
    assert json.loads((missing / CHECK_FILE).read_text())["early_warning_checked"] is False
    assert not [p.name for p in missing.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_label_names_of_regions_follow_the_network_outputs():
    class Regions:
        has_regions = True
        foreground_regions = [(1, 2, 3), (2, 3), 3]
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [3, 2], "enhancing tumor": 3}
    assert label_names_by_key(Regions(), labels) == {"(1, 2, 3)": "whole tumor", "(2, 3)": "tumor core",
                                                     "3": "enhancing tumor"}


class _Logger:
    def __init__(self, history=None):
        self.history = list(history or [])

    def get_value(self, key, step):
        assert key == "dice_per_class_or_region" and step is None
        return self.history


class _StubTrainer:
    """What the mixin reads of nnU-Net's trainer; on_epoch_end logs the next epoch of ``planned`` as nnU-Net's
    logs a validation epoch's pseudo-Dice, then increments current_epoch."""

    def __init__(self, planned, output_folder, summary=None, num_epochs=20, local_rank=0, restored=0):
        self.planned, self.num_epochs, self.local_rank = planned, num_epochs, local_rank
        self.output_folder, self.summary = str(output_folder), summary
        Path(output_folder).mkdir(parents=True)  # nnU-Net makes the fold folder before training
        self.logger = _Logger(planned[:restored])  # --c: the checkpoint's history
        self.current_epoch = restored
        self.label_manager = _LabelManager()
        self.dataset_json = {"labels": {"background": 0, "Anterior": 1, "Posterior": 2}}
        self.printed = []

    def print_to_log_file(self, *args, also_print_to_console=True, add_timestamp=True):
        self.printed.append((" ".join(map(str, args)), also_print_to_console))

    def on_epoch_end(self):
        self.logger.history.append(self.planned[self.current_epoch])
        self.current_epoch += 1

    def perform_actual_validation(self, save_probabilities=False):
        if self.summary is not None:
            _summary(Path(self.output_folder), self.summary)
        return "validated"


class _Trainer(LabelHealthMixin, _StubTrainer):
    pass


def _train(trainer):
    while trainer.current_epoch < trainer.num_epochs:
        trainer.on_epoch_end()
    return trainer.perform_actual_validation()


def test_mixin_warns_once_in_the_log_and_console_and_writes_the_check(tmp_path):
    trainer = _Trainer(DYING, tmp_path / "dying", summary={"1": 0.8, "2": 0.01})
    assert _train(trainer) == "validated"
    warnings = [(line, console) for line, console in trainer.printed if line.startswith("WARNING:")]
    assert len(warnings) == 1 and warnings[0][1] is True and "epochs 1-4 of 20" in warnings[0][0]
    assert trainer.label_early_warning["labels"] == ["Posterior"]
    assert any(line.startswith("label check: lost Posterior") for line, _ in trainer.printed)
    check = json.loads((tmp_path / "dying" / CHECK_FILE).read_text())
    assert check["verdict"] == "lost a label" and check["early_warning"]["labels"] == ["Posterior"]

    healthy = _Trainer(HEALTHY, tmp_path / "healthy", summary={"1": 0.8, "2": 0.7})
    _train(healthy)
    assert healthy.printed == [] and healthy.label_early_warning is None
    check = json.loads((tmp_path / "healthy" / CHECK_FILE).read_text())
    assert check["verdict"] == "ok" and check["early_warning"] is None and check["early_warning_checked"]

    other_rank = _Trainer(DYING, tmp_path / "rank1", summary={"1": 0.8, "2": 0.01}, local_rank=1)
    _train(other_rank)
    assert other_rank.printed == [] and not (tmp_path / "rank1" / CHECK_FILE).exists()


def test_mixin_after_a_resume_does_not_warn_again_but_records_the_warning(tmp_path):
    # resumed (--c) at epoch 10: the warning was printed before the interruption; the check is redone quietly
    trainer = _Trainer(DYING, tmp_path / "resumed", summary={"1": 0.8, "2": 0.01}, restored=10)
    _train(trainer)
    assert not any(line.startswith("WARNING:") for line, _ in trainer.printed)
    check = json.loads((tmp_path / "resumed" / CHECK_FILE).read_text())
    assert check["early_warning"]["labels"] == ["Posterior"] and check["early_warning_checked"]
    # resumed before the window: it fires once, at the window
    early = _Trainer(DYING, tmp_path / "early", summary={"1": 0.8, "2": 0.01}, restored=2)
    _train(early)
    assert sum(line.startswith("WARNING:") for line, _ in early.printed) == 1
    # validation skipped (fold 'all'): not checked, with the reason
    skipped = _Trainer(HEALTHY, tmp_path / "all", summary=None)
    _train(skipped)
    assert json.loads((tmp_path / "all" / CHECK_FILE).read_text())["verdict"] == "not checked"


def test_a_failing_check_is_logged_and_never_fails_the_finished_run(tmp_path):
    trainer = _Trainer([[0.6, 0.6]] * 20, tmp_path / "fold_0", summary={"1": 0.8, "2": 0.7})
    trainer.dataset_json = {"labels": {"background": 0, "Anterior": "one"}}  # unreadable label value
    assert trainer.perform_actual_validation() == "validated"
    assert any(text.startswith("label check failed (ValueError") for text, _ in trainer.printed)


def test_every_trainer_of_ours_and_the_budget_variants_of_nnunets_carry_the_check(tmp_path):
    """Where the mixin sits in the real trainers' method order: before nnU-Net's hooks it wraps; a budget trainer's
    fold 'all' (no final validation) still writes a 'not checked' file."""
    import inspect

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from hippo_peft import trainers
    from hippo_peft.trainers.budget import BudgetMixin
    for cls in (trainers.nnUNetTrainer_UNETR, trainers.nnUNetTrainer_SwinUNETR_PDoRA,
                getattr(trainers, "nnUNetTrainer_UNETR_LoRAPT_500it_lr3e-4_dlr3e-3_freshhead"),
                getattr(trainers, "nnUNetTrainer_500it")):
        mro = cls.__mro__
        assert mro.index(LabelHealthMixin) < mro.index(nnUNetTrainer), cls
        assert (inspect.signature(LabelHealthMixin.perform_actual_validation).parameters.keys()
                == inspect.signature(nnUNetTrainer.perform_actual_validation).parameters.keys())

    class FoldAll(BudgetMixin, _Trainer):
        fold = "all"

    trainer = FoldAll([[0.6, 0.6]] * 20, tmp_path / "fold_all")
    assert trainer.perform_actual_validation() is None
    check = json.loads((tmp_path / "fold_all" / "label_check.json").read_text())
    assert check["verdict"] == "not checked" and "fold 'all'" in check["reason"]
