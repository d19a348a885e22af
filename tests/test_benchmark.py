"""`hippo-peft benchmark`: input checks before any training, the draws, the budget trainers, and the whole
orchestration on phantoms in subprocesses, interrupted by SIGKILL and resumed without redoing finished runs."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from hippo_peft.experiments.benchmark import BenchmarkError, resolve_settings
from hippo_peft.cli import main
from hippo_peft.experiments.synthetic import write_dataset
from hippo_peft.trainers.budget import split_budget
from tests.conftest import bin_path


@pytest.fixture
def phantoms(tmp_path) -> tuple[Path, Path]:
    raw = tmp_path / "raw"
    target = write_dataset(raw, "Dataset001_Target", 8, seed=2)
    source = write_dataset(raw, "Dataset002_Source", 4, seed=1, source=True)
    return target, source


def cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_draws_are_seeded_disjoint_and_of_size_k(phantoms):
    target, source = phantoms
    s = resolve_settings(str(target), str(source), shots=[2, 3], draws=2, n_test=3, seed=5, n_val=1)
    again = resolve_settings(str(target), str(source), shots=[2, 3], draws=2, n_test=3, seed=5, n_val=1)
    assert s.train_draws == again.train_draws and s.test_cases == again.test_cases and s.val_cases == again.val_cases
    assert len(s.test_cases) == 3 and s.folds == [[2, 0], [2, 1], [3, 0], [3, 1]]
    assert len(s.val_cases) == 1 and not set(s.val_cases) & set(s.test_cases)
    for k in (2, 3):
        for draw in s.train_draws[str(k)]:
            assert len(set(draw)) == k and not set(draw) & (set(s.test_cases) | set(s.val_cases))
    assert s.train_draws["2"][0] != s.train_draws["2"][1] or s.train_draws["3"][0] != s.train_draws["3"][1]
    # default test set: every labelled case not drawn; label-shift source cases are never drawn or tested
    all_rest = resolve_settings(str(target), "label-shift", shots=[2], draws=2, n_test=None, n_source=3, n_val=0)
    drawn = {c for d in all_rest.train_draws["2"] for c in d}
    assert len(all_rest.source_cases) == 3 and not set(all_rest.source_cases) & (drawn | set(all_rest.test_cases))
    assert sorted(drawn | set(all_rest.test_cases) | set(all_rest.source_cases)) == [f"phantom_{i:03d}"
                                                                                     for i in range(8)]


def test_bad_input_fails_before_anything_runs(phantoms, tmp_path, capsys):
    target, source = phantoms
    work = tmp_path / "work"
    base = ["benchmark", "--target", str(target), "--source", str(source), "--workdir", str(work), "--n-val", "0"]
    err = cli_error(capsys, base + ["--methods", "lorapt", "qlora"])
    assert "qlora" in err and "lorapt" in err and "nnunet" in err
    err = cli_error(capsys, base + ["--methods", "lorapt@fast"])
    assert "'fast' is not a learning rate" in err
    err = cli_error(capsys, base + ["--methods", "full@1e-3,1e-4"])
    assert "two rates" in err and "give full one rate" in err
    err = cli_error(capsys, base[:-2] + ["--n-val", "6", "--n-test", "2"])
    assert "--n-val 6: need between 0 and 5" in err
    checkpoint = tmp_path / "source.pth"
    checkpoint.write_bytes(b"never read")
    err = cli_error(capsys, base[:3] + ["--source", str(checkpoint), "--workdir", str(work), "--methods", "nnunet-ft",
                                        "--n-val", "0"])
    assert "nnunet-ft pre-trains nnU-Net's own U-Net on the source" in err
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    torch.save({"network_weights": {"w": torch.zeros(2)}, "x": Payload()}, evil)
    err = cli_error(capsys, base[:3] + ["--source", str(evil), "--workdir", str(work), "--n-val", "0", "--n-test", "2",
                                    "--shots", "2"])
    assert "system" in err and "--trust-pickle" in err and not marker.exists()
    err = cli_error(capsys, base + ["--methods", "nnunet-ft"])  # the phantom source has 2 channels, the target 1
    assert "nnunet-ft: the source has 2 input channel(s), the target 1" in err
    err = cli_error(capsys, base + ["--shots", "2", "7", "--n-test", "2"])
    assert "k = 7 is larger than the 6 labelled cases available" in err
    draws = tmp_path / "draws.json"
    draws.write_text(json.dumps({"2": [["phantom_000", "phantom_001"]]}))
    err = cli_error(capsys, base + ["--shots", "2", "--draws", "1", "--train-draws", str(draws), "--test-cases",
                                    "phantom_001", "phantom_005"])
    assert "overlaps the training draws in 1 case(s): phantom_001" in err
    err = cli_error(capsys, base + ["--test-cases", "phantom_042"])
    assert "phantom_042" in err
    err = cli_error(capsys, ["benchmark", "--target", str(target), "--source", str(target), "--workdir", str(work),
                             "--n-val", "0"])
    assert "target dataset itself" in err
    err = cli_error(capsys, base + ["--iterations", "1"])
    assert "at least 2 iterations" in err
    assert not work.exists(), "nothing may be written for bad input"
    work.mkdir()
    (work / "mine.txt").write_text("a user's file")
    err = cli_error(capsys, base + ["--shots", "2", "--n-test", "2"])
    assert "not empty" in err and (work / "mine.txt").read_text() == "a user's file"
    label = target / "labelsTr" / "phantom_003.nii.gz"
    label.write_bytes(label.read_bytes()[:200])  # an interrupted copy: would read with zeros for the rest
    err = cli_error(capsys, base[:-2] + ["--workdir", str(tmp_path / "w2"), "--shots", "2", "--n-test", "2",
                                         "--n-val", "0"])
    assert "phantom_003.nii.gz: the compressed stream is cut short" in err and not (tmp_path / "w2").exists()


@pytest.mark.e2e
def test_source_checkpoint_of_another_backbone_is_refused_before_training(phantoms, tmp_path, capsys, nnunet_env,
                                                                          monkeypatch):
    from hippo_peft.networks import build_network
    from hippo_peft.networks.presets import get_preset
    for key in ("nnUNet_n_proc_DA", "nnUNet_def_n_proc", "OMP_NUM_THREADS"):
        monkeypatch.setenv(key, nnunet_env[key])
    target, _ = phantoms
    swin = build_network("monai.networks.nets.SwinUNETR", get_preset("swinunetr", "tiny"), [32, 32, 32], 2, 2)
    checkpoint = tmp_path / "swin.pth"
    torch.save({"network_weights": swin.state_dict()}, checkpoint)
    work = tmp_path / "work"
    err = cli_error(capsys, ["benchmark", "--target", str(target), "--source", str(checkpoint), "--workdir", str(work),
                             "--arch", "unetr", "--preset", "tiny", "--shots", "2", "--n-test", "2", "--n-val", "0"])
    assert "does not fit the UNETR" in err and "another backbone" in err
    assert not any((work / "nnunet" / "nnUNet_results").rglob("*.pth")), "no training may have started"
    assert not (work / "nnunet" / "nnUNet_preprocessed" / "Dataset961_BenchmarkTarget" / "nnUNetPlans_UNETR_tiny"
                ).exists(), "the check comes before preprocessing"


def test_budget_variants_train_exactly_n_iterations():
    import hippo_peft.trainers as trainers
    assert split_budget(100) == (4, 25) and split_budget(4) == (2, 2) and split_budget(7) == (7, 1)
    cls = trainers.nnUNetTrainer_UNETR_PDoRA_100it
    assert cls is trainers.nnUNetTrainer_UNETR_PDoRA_100it and cls.budget_iterations == 100
    assert cls.initial_lr_default == trainers.nnUNetTrainer_UNETR_PDoRA.initial_lr_default  # method's own rate
    assert trainers.nnUNetTrainer_SwinUNETR_100it.initial_lr_default == 1e-3  # full fine-tuning: the _short rate
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    assert issubclass(trainers.nnUNetTrainer_100it, nnUNetTrainer)
    with pytest.raises(AttributeError):
        trainers.nnUNetTrainer_UNETR_short_100it  # a schedule variant of a schedule variant is not a thing
    with pytest.raises(ValueError, match="at least 2"):
        trainers.nnUNetTrainer_UNETR_1it
    # learning-rate variants: one spelling per rate (one folder per rate); _dlr only beside _lr, on a decoder group
    swept = getattr(trainers, "nnUNetTrainer_UNETR_LoRAPT_100it_lr3e-4_dlr1e-3")  # a rate is no identifier
    assert swept.budget_iterations == 100 and (swept.initial_lr_default, swept.decoder_lr_default) == (3e-4, 1e-3)
    both = getattr(trainers, "nnUNetTrainer_UNETR_PDoRA_100it_lr2.5e-3")
    assert both.initial_lr_default == both.decoder_lr_default == 2.5e-3
    assert getattr(trainers, "nnUNetTrainer_UNETR_100it_lr3e-3").initial_lr_default == 3e-3
    for bad in ("nnUNetTrainer_UNETR_100it_lr0.0003", "nnUNetTrainer_UNETR_100it_lr3e-3_dlr1e-3",
                "nnUNetTrainer_UNETR_LoRAPT_100it_dlr1e-3", "nnUNetTrainer_100it_lr3e-04"):
        with pytest.raises(AttributeError):
            getattr(trainers, bad)
    from hippo_peft.experiments.benchmark import parse_method, rate_suffix
    from hippo_peft.trainers.budget import format_rate
    assert [format_rate(r) for r in (3e-4, 0.0025, 1e-2, 1.0)] == ["3e-4", "2.5e-3", "1e-2", "1e0"]
    assert parse_method("lorapt@0.0003,1E-3") == ("lorapt", "3e-4", "1e-3") and parse_method("full") == ("full", None,
                                                                                                         None)
    assert rate_suffix("lorapt@3e-4,1e-3") == "_lr3e-4_dlr1e-3" and rate_suffix("nnunet") == ""


def _records(work: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((work / "runs").glob("*.json"))}


@pytest.mark.e2e
@pytest.mark.slow
def test_benchmark_end_to_end_resumes_after_kill(phantoms, tmp_path, nnunet_env):
    target, source = phantoms
    work = tmp_path / "work"
    cmd = [bin_path("hippo-peft"), "benchmark", "--target", str(target), "--source", "label-shift", "--n-source", "3",
           "--workdir", str(work), "--preset", "tiny", "--methods", "lorapt@3e-3,2e-3", "lorapt-strict", "full",
           "nnunet-ft", "--shots", "2", "--draws", "1", "--iterations", "4", "--source-iterations", "4", "--n-test",
           "2", "--n-val", "1"]
    lorapt = "unetr-lorapt@3e-3,2e-3-k2-d0-4it"
    env = nnunet_env  # the benchmark points nnU-Net's paths into its work folder itself
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (work / "runs" / f"{lorapt}.json").is_file():
            assert proc.poll() is None and time.time() < deadline, "the benchmark ended before its first run"
            time.sleep(0.5)
        while not (work / "logs" / "unetr-lorapt-strict-k2-d0-4it.log").is_file():  # the second run has started
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and its nnU-Net child, mid-run
    finally:
        proc.wait()
    first = _records(work)
    assert list(first) == [lorapt]
    first_mtime = (work / "runs" / f"{lorapt}.json").stat().st_mtime

    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming: 1 of 4 runs already finished" in done.stdout
    records = _records(work)
    assert set(records) == {lorapt, "unetr-lorapt-strict-k2-d0-4it", "unetr-full-k2-d0-4it", "nnunet-ft-k2-d0-4it"}
    assert (work / "runs" / f"{lorapt}.json").stat().st_mtime == first_mtime  # not redone
    assert records[lorapt] == first[lorapt]
    # each source was pre-trained once: its log holds one training command
    assert (work / "logs" / "source.log").read_text().count("nnUNetv2_train") == 1
    source_nnunet = (work / "logs" / "source-nnunet.log").read_text()
    assert source_nnunet.count("nnUNetv2_train") == 1 and "nnUNetv2_move_plans_between_datasets" in source_nnunet

    test_cases = records["nnunet-ft-k2-d0-4it"]["per_case"].keys()
    val_cases = records["nnunet-ft-k2-d0-4it"]["val_per_case"].keys()
    assert len(val_cases) == 1 and not set(val_cases) & set(test_cases)
    for r in records.values():
        assert r["n_test"] == 2 and set(r["per_case"]) == set(test_cases) and set(r["val_per_case"]) == set(val_cases)
        assert not set(r["train_cases"]) & (set(test_cases) | set(val_cases))
        assert r["val_summary"]["cases"] == 1 and r["summary"]["cases"] == 2
        assert 0 <= r["summary"]["empty_predictions"] <= 2
        assert r["compute_seconds"] == pytest.approx(4 * r["seconds_per_step"], rel=1.0) and r["iterations"] == 4
        for region in ("Anterior", "Posterior", "Anterior+Posterior"):
            m = r["summary"]["regions"][region]
            assert m["dice"] is None or 0 <= m["dice"] <= 1
            assert m["abs_volume_error"] >= 0
        assert r["seconds_per_step"] > 0 and r["peak_memory_mib"] > 100 and r["stored_bytes"] > 0
        # every run, nnU-Net's too, checked its labels: early (a 1-epoch window of 2 epochs) and after validation
        assert r["label_check"]["verdict"] in ("ok", "lost a label") and r["label_check"]["early_warning_checked"]
        assert set(r["label_check"]["validation_dice"]) == {"Anterior", "Posterior"}
    # the label-shift source has one foreground class: both target classes start from it (head rules)
    head = json.loads(next((work / "nnunet" / "nnUNet_results").rglob(
        "nnUNetTrainer_UNETR_LoRAPT_4it_lr3e-3_dlr2e-3__*/fold_0/pretrained_weights_report.json")).read_text())["head"]
    assert sum("from the source's one foreground class 'hippocampus'" in line for line in head) == 2, head
    assert records[lorapt]["head_report"] == head and records[lorapt]["head"] == "source"
    strict, papers, full = (records[n] for n in ("unetr-lorapt-strict-k2-d0-4it", lorapt, "unetr-full-k2-d0-4it"))
    assert strict["trainer"] == "nnUNetTrainer_UNETR_LoRAPT_Strict_4it"
    assert papers["trainer"] == "nnUNetTrainer_UNETR_LoRAPT_4it_lr3e-3_dlr2e-3"
    assert (papers["method"], papers["lr"], papers["decoder_lr"]) == ("lorapt", "3e-3", "2e-3")
    log = next((work / "nnunet" / "nnUNet_results").rglob("nnUNetTrainer_UNETR_LoRAPT_4it_lr3e-3_dlr2e-3__*/fold_0/"
                                                           "training_log_*.txt")).read_text()
    assert "adapter: " in log and "lr 0.003" in log and "decoder+head: " in log and "lr 0.002" in log
    assert strict["trainable"] < 0.05 * full["trainable"]
    assert strict["trainable"] < papers["trainable"] < full["trainable"]  # the papers' setting adds the decoder
    assert strict["total"] == papers["total"] == full["total"]  # same base network
    assert records[lorapt]["stored_what"] == "adapter file"
    assert (work / "adapters" / lorapt / "adapter.safetensors").is_file()
    ft = records["nnunet-ft-k2-d0-4it"]
    assert ft["trainer"] == "nnUNetTrainer_4it" and ft["plans"] == "nnUNetPlans_finetune"
    ft_log = (work / "logs" / "nnunet-ft-k2-d0-4it.log").read_text()
    assert "Loading pretrained weights" in ft_log and "nnUNetPlans_fromTarget__3d_fullres/fold_all" in ft_log
    stats = json.loads(next((work / "nnunet" / "nnUNet_results").rglob("nnUNetTrainer_4it__nnUNetPlans_finetune*/"
                                                                       "fold_0/budget_stats.json")).read_text())
    assert len(stats["step_seconds"]) == 4  # exactly the budget
    # checkpoints written by nnU-Net's own nnUNetTrainer (source and fine-tuned) load by our policy with no opt-in
    from hippo_peft.safe_load import load_weights_file
    for ckpt in (work / "nnunet" / "nnUNet_results").rglob("nnUNetTrainer_4it__*/fold_*/checkpoint_final.pth"):
        assert load_weights_file(ckpt)["trainer_name"] == "nnUNetTrainer_4it"

    report = work / "report"
    for name in ("benchmark.md", "runs.csv", "cases.csv", "runs.json", "dice_vs_k.png", "dice_vs_params.png"):
        assert (report / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(report / "runs.csv")))
    assert len(rows) == 4 and {r["method"] for r in rows} == {"lorapt", "lorapt-strict", "full", "nnunet-ft"}
    assert len(list(csv.DictReader(open(report / "cases.csv")))) == 4 * 2 * 3  # runs x cases x regions
    table = (report / "benchmark.md").read_text()
    assert "nnU-Net fine-tuned" in table and "LoRA-PT lr 3e-3/2e-3 (unetr)" in table and "Dice k=2" in table
    assert "LoRA-PT strict (unetr)" in table and "validation Dice k=2" in table

    # a fixed setting changed in the same folder: refused, nothing touched
    changed = subprocess.run(cmd[:-1] + ["0"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert changed.returncode == 2 and "other fixed settings (val_cases" in changed.stderr
    assert _records(work) == records

    # a later command extends the folder with another budget: same test set and fold, the source not pre-trained
    # again, the report covers both commands' runs and draws the learning curve
    more = cmd[:cmd.index("--methods")] + ["--methods", "full", "--shots", "2", "--draws", "1", "--iterations", "6",
                                           "--source-iterations", "4", "--n-test", "2", "--n-val", "1"]
    done = subprocess.run(more, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    extended = _records(work)
    assert set(extended) == set(records) | {"unetr-full-k2-d0-6it"}
    assert {n: extended[n] for n in records} == records
    assert extended["unetr-full-k2-d0-6it"]["fold"] == records["unetr-full-k2-d0-4it"]["fold"]
    assert (work / "logs" / "source.log").read_text().count("nnUNetv2_train") == 1
    assert (report / "learning_curves.png").stat().st_size > 0
    assert len(list(csv.DictReader(open(report / "runs.csv")))) == 5
    assert json.loads((work / "benchmark.json").read_text())["iterations"] == [4, 6]


def test_work_folder_of_another_settings_version_is_refused(phantoms, tmp_path):
    """A benchmark folder whose benchmark.json has no settings version or another one holds runs this code cannot
    mix with its own: resuming into it is refused, nothing in it is touched."""
    from dataclasses import asdict

    from hippo_peft.experiments.benchmark import Workdir
    target, source = phantoms
    s = resolve_settings(str(target), str(source), methods=["lorapt"], shots=[2], draws=1, n_test=2, n_val=0)
    old = {k: v for k, v in asdict(s).items() if k != "settings_version"}
    work = tmp_path / "old"
    work.mkdir()
    (work / "benchmark.json").write_text(json.dumps(old))
    with pytest.raises(BenchmarkError, match="another hippo_peft version.*Start a new --workdir"):
        Workdir(work).open(s)
    assert sorted(p.name for p in work.iterdir()) == ["benchmark.json"]
    assert json.loads((work / "benchmark.json").read_text()) == old
    (work / "benchmark.json").write_text(json.dumps({**old, "settings_version": 2}))
    with pytest.raises(BenchmarkError, match="settings version 2; this hippo_peft reads and writes version"):
        Workdir(work).open(s)
    with pytest.raises(BenchmarkError, match="Unknown method"):
        resolve_settings(str(target), str(source), methods=["lorapt-strictly"], shots=[2], draws=1, n_test=2)


def test_a_later_command_extends_the_folder_with_new_shots_and_keeps_folds(phantoms, tmp_path):
    """Later commands may add shots, draws, budgets and methods: earlier folds keep their numbers and cases, the
    folder's record holds the union; a clashing draws file is refused."""
    from hippo_peft.experiments.benchmark import Workdir, planned_runs
    target, source = phantoms
    common = dict(target=str(target), source=str(source), n_test=2, n_val=1)
    first = resolve_settings(**common, methods=["lorapt"], shots=[3], draws=2, iterations=10)
    Workdir(tmp_path / "w").open(first)
    later = resolve_settings(**common, methods=["full", "lorapt@1e-3"], shots=[2, 3], draws=1, iterations=[10, 20])
    Workdir(tmp_path / "w").open(later)
    assert later.folds == [[3, 0], [3, 1], [2, 0]]  # (3, 0) and (3, 1) keep folds 0 and 1
    runs = planned_runs(later)
    assert {(r.k, r.draw, r.fold) for r in runs} == {(2, 0, 2), (3, 0, 0)}
    assert len(runs) == 2 * 2 * 2 and {r.iterations for r in runs} == {10, 20}
    record = json.loads((tmp_path / "w" / "benchmark.json").read_text())
    assert record["methods"] == ["lorapt", "full", "lorapt@1e-3"] and record["iterations"] == [10, 20]
    assert record["train_draws"]["3"] == first.train_draws["3"] and record["shots"] == [2, 3]
    draws = tmp_path / "draws.json"
    other = [c for c in later.train_draws["2"][0]][:1] + [c for c in first.train_draws["3"][0]
                                                          if c not in later.train_draws["2"][0]][:1]
    draws.write_text(json.dumps({"2": [other]}))
    clash = resolve_settings(**common, methods=["full"], shots=[2], draws=1, train_draws_file=str(draws))
    with pytest.raises(BenchmarkError, match="drew other cases for k=2 draw 0"):
        Workdir(tmp_path / "w").open(clash)
    # nnU-Net from scratch alone, with the folder's source: the same fixed settings (a label-shift source fixes
    # the test set, so ignoring the source would move it)
    shifted = dict(target=str(target), source="label-shift", n_source=3, n_test=2, n_val=1)
    Workdir(tmp_path / "ls").open(resolve_settings(**shifted, methods=["lorapt"], shots=[2], draws=1))
    scratch = resolve_settings(**shifted, methods=["nnunet"], shots=[2], draws=2)
    assert scratch.source_kind == "label-shift" and scratch.source_cases
    Workdir(tmp_path / "ls").open(scratch)
    assert resolve_settings(target=str(target), methods=["nnunet"], shots=[2], draws=1, n_test=2,
                            n_val=1).source_kind == "none"
    moved = resolve_settings(**{**common, "n_val": 0}, methods=["full"], shots=[2], draws=1)
    with pytest.raises(BenchmarkError, match="other fixed settings \\(val_cases differ"):
        Workdir(tmp_path / "w").open(moved)


def _record(method, k=10, draw=0, n=500, lr=None, dlr=None, arch="unetr", test=0.5, val=0.5, empty=0, seconds=100.0):
    token = method + (f"@{lr}" + (f",{dlr}" if dlr else "") if lr else "")
    region = {"dice": test, "dice_undefined": 0, "hd95": 3.0, "hd95_undefined": 0, "abs_volume_error": 10.0}
    return {"run": f"{arch + '-' if arch else ''}{token}-k{k}-d{draw}-{n}it", "arch": arch, "method": method,
            "method_token": token, "lr": lr, "decoder_lr": dlr, "k": k, "draw": draw, "fold": 0, "iterations": n,
            "n_test": 40, "n_val": 20, "regions": {"Anterior": [1], "Posterior": [2], "Anterior+Posterior": [1, 2]},
            "summary": {"mean_dice": test, "empty_predictions": empty, "cases": 40,
                        "regions": {name: region for name in ("Anterior", "Posterior", "Anterior+Posterior")}},
            "val_summary": {"mean_dice": val, "empty_predictions": 0, "cases": 20}, "per_case": {},
            "trainable": 10, "total": 100, "percent_trainable": 10.0, "seconds_per_step": seconds / n,
            "compute_seconds": seconds, "load_average": {"median": 2.1, "max": 2.5, "cpus": 2},
            "peak_memory_mib": 1000.0, "stored_bytes": 400, "stored_what": "adapter file"}


def test_report_chooses_rates_on_validation_and_compares_at_equal_compute():
    """The report's choices use validation Dice only, skip runs that have not started to learn, interpolate curves
    at equal compute without extrapolating, and pair draws."""
    from types import SimpleNamespace

    from hippo_peft.experiments.benchmark_report import (at_compute, curves, lost_labels, markdown, paired_differences,
                                                         rate_choices)
    records = [_record("lorapt", k=20, lr="3e-4", val=0.5, test=0.9),  # best on the test set: must not matter
               _record("lorapt", k=20, lr="1e-3", val=0.7, test=0.6),
               _record("lorapt", k=20, lr="3e-3", val=0.8, test=0.7, empty=4),  # 10 % empty: has not started to learn
               _record("full", k=20, lr="1e-3", val=0.6), _record("full", k=20, lr="3e-3", val=0.65, dlr=None)]
    choices = {c["method"]: c for c in rate_choices(records)}
    assert choices["lorapt"]["chosen"] == "lorapt@1e-3" and choices["full"]["chosen"] == "full@3e-3"
    assert [x["lr"] for x in choices["lorapt"]["rates"]] == ["3e-4", "1e-3", "3e-3"]
    assert not choices["lorapt"]["at_edge"]  # 1e-3 lies inside the swept range; full has only two rates

    curve = [_record("nnunet", arch=None, k=5, n=250, seconds=100, test=0.5),
             _record("nnunet", arch=None, k=5, n=500, seconds=200, test=0.7),
             _record("full", lr="1e-3", k=5, n=250, seconds=50, test=0.4),
             _record("full", lr="1e-3", k=5, n=500, seconds=100, test=0.6),
             _record("full", lr="1e-3", k=5, n=1000, seconds=200, test=0.8)]
    cs = curves(curve)
    full = cs[("full fine-tuning lr 1e-3 (unetr)", 5)]
    assert [p["iterations"] for p in full] == [250, 500, 1000]
    assert at_compute(full, 100) == pytest.approx(0.6) and at_compute(full, 200) == pytest.approx(0.8)
    assert at_compute(full, (100 * 200) ** 0.5) == pytest.approx(0.7)  # halfway in log-seconds
    assert at_compute(full, 400) is None and at_compute(full, 20) is None  # never extrapolated

    draws = [_record("nnunet", arch=None, draw=d, test=t) for d, t in enumerate((0.6, 0.7, 0.8))]
    draws += [_record("lorapt", lr="1e-3", draw=d, test=t) for d, t in enumerate((0.7, 0.7, 0.9))]
    draws += [_record("full", lr="1e-3", draw=d, test=0.1, empty=40 if d == 0 else 0) for d in range(3)]
    diffs = {x["label"]: x for x in paired_differences(draws, "nnunet")}
    assert diffs["LoRA-PT lr 1e-3 (unetr)"]["diffs"] == pytest.approx([0.1, 0.0, 0.1])
    assert diffs["full fine-tuning lr 1e-3 (unetr)"]["diffs"] == pytest.approx([-0.6, -0.7])  # draw 0 never learned

    lost = _record("hyps", lr="1e-2", k=7, test=0.4)  # learned the anterior, lost the posterior
    lost["summary"]["regions"] = {**lost["summary"]["regions"],
                                  "Anterior": {**lost["summary"]["regions"]["Anterior"], "dice": 0.75},
                                  "Posterior": {**lost["summary"]["regions"]["Posterior"], "dice": 0.05}}
    assert lost_labels(lost) == ["Posterior"] and lost_labels(draws[0]) == []
    assert lost_labels(draws[-1]) == []  # Dice 0.1 on every label: learned nothing, lost nothing
    settings = SimpleNamespace(preset="compact", device="cpu")
    text = markdown(records + curve + draws + [lost], settings)
    # the run's cell and the legend; nothing else (full fine-tuning's draws at Dice 0.1 learned no label)
    assert "0.400 *lost a label*" in text and text.count("*lost a label*") == 2
    assert "### Learning rates, chosen on the validation cases" in text and "| **1e-3** |" in text
    assert "### Learning curves" in text and "Equal compute, k = 5" in text
    assert "### Paired differences over draws" in text and "+0.067 ± 0.058" in text
    assert "*not started*" in text


def test_benchmark_report_rewrites_a_folders_report_from_its_runs(tmp_path, capsys):
    """`hippo-peft benchmark-report WORKDIR` reports the finished runs (e.g. while a benchmark still runs), and
    refuses a folder that is not a benchmark's or has no finished run."""
    work = tmp_path / "work"
    assert "holds no benchmark.json" in cli_error(capsys, ["benchmark-report", str(work)])
    (work / "runs").mkdir(parents=True)
    (work / "benchmark.json").write_text(json.dumps({"preset": "compact", "device": "cpu"}))
    assert "no finished run yet" in cli_error(capsys, ["benchmark-report", str(work)])
    for r in (_record("lorapt", lr="1e-3", val=0.7), _record("lorapt", lr="3e-3", val=0.6)):
        (work / "runs" / f"{r['run']}.json").write_text(json.dumps(r))
    assert main(["benchmark-report", str(work)]) == 0
    text = (work / "report" / "benchmark.md").read_text()
    assert "LoRA-PT lr 1e-3 (unetr)" in text and "| **1e-3** |" in text
    assert len(list(csv.DictReader(open(work / "report" / "runs.csv")))) == 2


REPO = Path(__file__).resolve().parents[1]
# The committed work-folder exports (benchmark.json + runs/ + the report's tables, benchmarks/evidence/export.sh).
# docs/benchmark/papers_setting_k10 holds only a report (no benchmark.json, no run records): nothing to rebuild.
EVIDENCE = ["docs/benchmark/evidence", "docs/benchmark/evidence/brats", "docs/benchmark/head"]


@pytest.mark.parametrize("folder", EVIDENCE)
def test_committed_evidence_rebuilds_to_the_committed_tables(folder, tmp_path):
    """The report builder (`hippo-peft benchmark-report`) reads the committed run records of this settings version
    and rebuilds exactly the committed tables: the evidence stays readable by the current code."""
    import shutil

    from hippo_peft.experiments.benchmark import SETTINGS_VERSION, write_folder_report
    committed = REPO / folder
    # 3: runs made before the head rules (every head started fresh); the report reads them as they are
    assert json.loads((committed / "benchmark.json").read_text())["settings_version"] in (3, SETTINGS_VERSION)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(committed / "benchmark.json", work)
    shutil.copytree(committed / "runs", work / "runs")
    report = write_folder_report(str(work)).parent
    for name in ("benchmark.md", "runs.csv"):
        assert (report / name).read_text() == (committed / name).read_text(), f"{folder}/{name} differs"


def test_freshhead_tokens_parse_name_their_trainer_and_are_refused_for_nnunet():
    from hippo_peft.experiments.benchmark import Benchmark, Run, head_init, parse_method, rate_suffix
    assert parse_method("lorapt@3e-4,3e-3+freshhead") == ("lorapt", "3e-4", "3e-3")
    assert parse_method("full+freshhead") == ("full", None, None) and parse_method("lorapt@1e+0") == ("lorapt", "1e0",
                                                                                                        None)
    assert [head_init(t) for t in ("lorapt", "full@3e-3+freshhead", "lorapt-strict+freshhead", "nnunet", "nnunet-ft")
            ] == ["source", "fresh", "fresh", "fresh", "fresh"]
    assert rate_suffix("lorapt@3e-4,3e-3+freshhead") == "_lr3e-4_dlr3e-3"
    for token in ("nnunet+freshhead", "nnunet-ft@1e-2+freshhead"):
        with pytest.raises(BenchmarkError, match="nnU-Net's own loader .* always leaves its segmentation layers fresh"):
            parse_method(token)
    with pytest.raises(BenchmarkError, match="unknown option '\\+freshheads'; the one option is \\+freshhead"):
        parse_method("lorapt+freshheads")
    # Benchmark.trainer reads nothing of the instance: the names without a work folder
    name = lambda arch, token: Benchmark.trainer(None, Run(arch, token, 2, 0, 0, 500))  # noqa: E731
    assert name("unetr", "lorapt@3e-4,3e-3+freshhead") == "nnUNetTrainer_UNETR_LoRAPT_500it_lr3e-4_dlr3e-3_freshhead"
    assert name("unetr", "full@3e-3+freshhead") == "nnUNetTrainer_UNETR_500it_lr3e-3_freshhead"
    assert name("unetr", "lorapt@3e-4") == "nnUNetTrainer_UNETR_LoRAPT_500it_lr3e-4"
    assert name(None, "nnunet-ft") == "nnUNetTrainer_500it"  # fresh head, nnU-Net's own rule: no suffix


def test_repeats_get_their_own_names_folds_and_splits(phantoms, tmp_path):
    """Repeat 0 keeps the folds and names runs had without repeats; a repeat r >= 1 is named -r<r> and trains its
    draw's cases in a fold of its own; a later command may add repeats to a folder."""
    from hippo_peft.experiments.benchmark import Benchmark, Workdir, planned_runs
    target, source = phantoms
    common = dict(target=str(target), source=str(source), n_test=2, n_val=1, methods=["lorapt"], shots=[2, 3],
                  draws=2, iterations=10)
    with pytest.raises(BenchmarkError, match="--repeats 0"):
        resolve_settings(**common, repeats=0)
    once = resolve_settings(**common)
    Workdir(tmp_path / "w").open(once)
    twice = resolve_settings(**common, repeats=2)
    assert twice.folds[:4] == once.folds == [[2, 0], [2, 1], [3, 0], [3, 1]]
    assert twice.folds[4:] == [[2, 0, 1], [2, 1, 1], [3, 0, 1], [3, 1, 1]]
    bench = Benchmark(twice, tmp_path / "w", echo=False)  # extends the folder: repeat folds after the old ones
    runs = planned_runs(twice)
    assert [(r.name, r.fold) for r in runs[:2]] == [("unetr-lorapt-k2-d0-10it", 0), ("unetr-lorapt-k2-d0-10it-r1", 4)]
    assert len({r.name for r in runs}) == len({r.fold for r in runs}) == 8
    draw1 = planned_runs(twice, only_draws=[1])  # repeats of one draw: its folds, nothing else
    assert [(r.k, r.draw, r.repeat, r.fold) for r in draw1] == [(2, 1, 0, 1), (2, 1, 1, 5), (3, 1, 0, 3), (3, 1, 1, 7)]
    with pytest.raises(BenchmarkError, match="--only-draws 2: draws are numbered 0 to 1"):
        planned_runs(twice, only_draws=[2])
    record = bench.w.settings()
    assert record["repeats"] == 2 and record["folds"] == twice.folds
    for step in ("target", "plan-unetr"):  # planning done: prepare_target only writes the splits
        bench.w.mark(step)
    (bench.pre / bench.target_name).mkdir(parents=True)
    bench.prepare_target()
    splits = json.loads((bench.pre / bench.target_name / "splits_final.json").read_text())
    assert len(splits) == 8 and all(splits[r.fold]["train"] == twice.train_draws[str(r.k)][r.draw] for r in runs)
    assert splits[4] == splits[0] and splits[4]["val"] == sorted(twice.val_cases + twice.test_cases)


def test_report_counts_lost_labels_warnings_and_repeats():
    """The lost-label section counts right warnings, false alarms and misses per method and k (n/a without a label
    check); repeats are runs of their draw and the paired differences average them; a fresh head is its own
    method."""
    from types import SimpleNamespace

    from hippo_peft.experiments.benchmark_report import label_warnings, markdown, method_label, paired_differences

    def run(draw, repeat=0, lost=False, fired=None, test=0.7, head="source", method="lorapt"):
        r = _record(method, k=5, draw=draw, test=test, arch=None if method == "nnunet" else "unetr")
        if lost:
            r["summary"]["regions"] = {**r["summary"]["regions"],
                                       "Posterior": {**r["summary"]["regions"]["Posterior"], "dice": 0.01}}
        r["repeat"], r["head"] = repeat, head
        r["label_check"] = None if fired is None else {"verdict": "ok", "early_warning_checked": True,
                                                       "early_warning": {"labels": ["Posterior"]} if fired else None}
        return r

    lorapt = [run(0, fired=True, lost=True), run(0, 1, fired=True, test=0.6), run(1, lost=True, fired=False),
              run(1, 1, fired=False, test=0.8)]
    fresh = [run(d, head="fresh", lost=True) for d in range(2)]  # no label check
    nnunet = [run(d, r, method="nnunet", test=0.5 + 0.1 * r, head="fresh") for d in range(2) for r in range(2)]
    rows = {x["label"]: x for x in label_warnings(lorapt + fresh + nnunet)}
    assert method_label(fresh[0]) == "LoRA-PT (unetr, head fresh)" and method_label(nnunet[0]) == "nnU-Net from scratch"
    assert {k: rows["LoRA-PT (unetr)"][k] for k in ("runs", "lost", "checked", "fired", "right", "false_alarms",
                                                    "missed")} == dict(runs=4, lost=2, checked=4, fired=2, right=1,
                                                                       false_alarms=1, missed=1)
    assert rows["LoRA-PT (unetr, head fresh)"]["checked"] == 0 and rows["nnU-Net from scratch"]["runs"] == 4
    text = markdown(lorapt + fresh + nnunet, SimpleNamespace(preset="compact", device="cpu"))
    assert "### Lost labels and the early warning" in text and "draws of k training cases × 2 repeats" in text
    assert "| LoRA-PT (unetr) | 5 | 4 | 2 | 2 | 1 | 1 | 1 |" in text
    assert "| LoRA-PT (unetr, head fresh) | 5 | 2 | 2 | n/a | n/a | n/a | n/a |" in text
    assert "| all runs | all | 10 | 4 | 2 of 4 checked | 1 | 1 | 1 |" in text
    # one value per draw: LoRA-PT's repeats (0.7, 0.6) and (0.7, 0.8) against nnU-Net's (0.5, 0.6) on each draw
    diffs = {x["label"]: x["diffs"] for x in paired_differences(lorapt + fresh + nnunet, "nnunet")}
    assert diffs["LoRA-PT (unetr)"] == pytest.approx([0.1, 0.2])
