"""Few-shot transfer with every method side by side, a thin layer over nnU-Net's
commands (hippo-peft benchmark).

Steps:
  1. a source: an nnU-Net dataset to pre-train on, a checkpoint, or label-shift
     (--n-source target cases with their labels merged, never drawn or tested);
  2. hippo-peft plan of the target (and nnU-Net's own planner for the
     from-scratch baseline);
  3. k-shot draws with fixed seeds, written as nnU-Net folds in
     splits_final.json (train: the draw; val: the validation and test cases);
  4. nnUNetv2_train -tr <method trainer>_<N>it -pretrained_weights <source> for
     every method, nnUNetTrainer_<N>it from scratch and, for nnunet-ft,
     nnU-Net's own U-Net pre-trained on the same source, all for the same N
     iterations;
  5. nnU-Net's final validation predicts the validation and test cases with the
     final weights (sliding window, original geometry);
  6. Dice, HD95 and volume error per case, scored separately for the two sets;
     a Markdown table, CSV/JSON of every run and PNG plots in WORKDIR/report.

Validation and test cases never influence training: the budget is fixed, there
is no early stopping, and results use the final weights, never
checkpoint_best. Choose between runs (a learning rate, a budget) on the
validation cases (val_summary); report the test cases (summary).

A method may carry learning rates: lorapt@3e-4 (every group) or
lorapt@3e-4,1e-3 (adapter; decoder + head). Our backbones' methods start the
segmentation head from the source's; a +freshhead suffix (lorapt+freshhead,
full@3e-3+freshhead) starts it fresh instead (nnU-Net's own methods always
start it fresh). --iterations may list several budgets (learning curves).
--repeats R trains every run R times, each repeat in an nnU-Net fold of its
own (nnU-Net does not seed its runs, so repeats differ); a run whose nnU-Net
pseudo-Dice shows a label that is not learning gets a warning in its log, and
every run's label check (runs/<run>.json, label_check) goes into the report.

Everything lives in one work folder. Rerunning the same command resumes:
finished runs (runs/<run>.json) are kept, an unfinished run restarts from
scratch. Later commands may add methods, rates, budgets, shots or draws to the
same folder (one source pre-training, one test and validation set for all);
test set, validation set, source, seed, preset and device stay as the first
command set them.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from hippo_peft.errors import RefusedError
from hippo_peft.experiments.benchmark_settings import (  # noqa: F401  (the benchmark's public names)
    NNUNET_METHODS, paper_methods, adapter_methods, all_methods, default_methods, SETTINGS_VERSION,
    FIXED_SETTINGS, LABEL_SHIFT, DEFAULT_SOURCE, FINETUNE_PLANS, SOURCE_NNUNET_PLANS, PROFILES, BenchmarkError,
    parse_method, rate_suffix, Settings, Run, labelled_cases, resolve_settings, planned_runs, TARGET_ID, SOURCE_ID,
    FRESH_HEAD, head_init, fold_key)
from hippo_peft.experiments.commands import console_script, nnunet_env, run_logged
from hippo_peft.experiments.datasets import link_cases
from hippo_peft.experiments.pipeline import (fold_folder, our_plans, plan_command, planned_patch_size,
                                             source_plan_command, train_command)
from hippo_peft.networks.presets import get_arch

logger = logging.getLogger(__name__)


class Workdir:
    """Layout of the benchmark's folder; its own nnU-Net tree lives in ``nnunet/``."""

    def __init__(self, root: Path):
        self.root = root
        self.settings_file = root / "benchmark.json"
        self.runs, self.logs, self.adapters, self.report = (root / n for n in ("runs", "logs", "adapters", "report"))
        self.state = root / "state"

    def open(self, s: Settings) -> None:
        """Start a new benchmark, or resume / extend one with the same fixed settings (FIXED_SETTINGS); never
        reuses a folder it did not make. ``s`` keeps this command's methods, budgets, shots and draws; the folder's
        ``benchmark.json`` records the union and the fold of every (k, draw) ever used."""
        if self.settings_file.is_file():
            old = json.loads(self.settings_file.read_text())
            if old.get("settings_version") != s.settings_version:
                raise BenchmarkError(
                    f"{self.root} holds a benchmark made by another hippo_peft version (settings version "
                    f"{old.get('settings_version', 'unknown')}; this hippo_peft reads and writes version "
                    f"{s.settings_version}), so its runs cannot be mixed with new ones. Start a new --workdir; keep "
                    f"the old one's report as it is.")
            new = asdict(s)
            changed = [name for name in FIXED_SETTINGS if old.get(name) != new[name]]
            if changed:
                raise BenchmarkError(
                    f"{self.root} holds a benchmark with other fixed settings ({', '.join(changed)} differ; methods, "
                    f"--iterations, --shots and --draws may change). Rerun it with its own settings (see "
                    f"{self.settings_file}), or choose a new --workdir.")
            clash = [f"k={k} draw {d}" for k, ds in s.train_draws.items() for d, cases in enumerate(ds)
                     if d < len(old["train_draws"].get(k, [])) and old["train_draws"][k][d] != cases]
            if clash:
                raise BenchmarkError(f"{self.root} drew other cases for {', '.join(clash)} (another --train-draws "
                                     f"file?). Use the folder's draws (see {self.settings_file}) or a new --workdir.")
            s.folds = old["folds"] + [f for f in s.folds if f not in old["folds"]]
            union = {**new, "folds": s.folds,
                     "train_draws": {k: max(old["train_draws"].get(k, []), s.train_draws.get(k, []), key=len)
                                     for k in sorted({*old["train_draws"], *s.train_draws}, key=int)},
                     **{name: sorted(set(old[name]) | set(new[name])) for name in ("archs", "shots", "iterations")},
                     "methods": list(dict.fromkeys(old["methods"] + s.methods)), "draws": max(old["draws"], s.draws),
                     "repeats": max(old.get("repeats", 1), s.repeats)}
            self._write_settings(union)
        elif self.root.exists() and any(self.root.iterdir()):
            raise BenchmarkError(f"--workdir {self.root} is not empty and holds no benchmark.json; the benchmark "
                                 f"only writes into a new or empty folder, or resumes its own.")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self._write_settings(asdict(s))
        for folder in (self.runs, self.logs, self.adapters, self.report, self.state):
            folder.mkdir(parents=True, exist_ok=True)

    def _write_settings(self, settings: dict) -> None:
        tmp = self.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings, indent=1))
        tmp.replace(self.settings_file)

    def settings(self) -> dict:
        """The folder's record: fixed settings and the union of everything its commands ran."""
        return json.loads(self.settings_file.read_text())

    def done(self, step: str) -> bool:
        return (self.state / f"{step}.done").exists()

    def mark(self, step: str) -> None:
        (self.state / f"{step}.done").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))

    def record(self, run: Run) -> Path:
        return self.runs / f"{run.name}.json"


def _link_dataset(raw: Path, folder: Path, cases: list[str], dataset_json: dict, link_labels: bool = True):
    """An nnU-Net raw dataset of symlinks to ``cases`` of ``raw`` (the user's data are never copied)."""
    if folder.exists():
        shutil.rmtree(folder)  # our own, unfinished (its step was not marked done)
    (folder / "labelsTr").mkdir(parents=True)  # filled by _write_merged_labels when the labels are not linked
    link_cases(raw, folder, cases, "Tr", labels=link_labels, dataset_json=dataset_json)
    (folder / "dataset.json").write_text(json.dumps({**dataset_json, "numTraining": len(cases)}, indent=1))


def _write_merged_labels(raw: Path, folder: Path, cases: list[str], ending: str) -> None:
    """Label-shift source: every foreground label becomes label 1, geometry unchanged."""
    import SimpleITK as sitk
    for case in cases:
        image = sitk.ReadImage(str(raw / "labelsTr" / f"{case}{ending}"))
        merged = sitk.Cast(image > 0, sitk.sitkUInt8)
        merged.CopyInformation(image)
        sitk.WriteImage(merged, str(folder / "labelsTr" / f"{case}{ending}"))


def check_source_checkpoint(checkpoint: str, plans_file: Path, arch: str, trust_pickle: bool = False) -> None:
    """Refuse a checkpoint that does not fit the planned ``arch`` network (another backbone or preset)."""
    from hippo_peft.nnunet.import_weights import network_from_plans
    from hippo_peft.nnunet.weights import WeightsMismatchError, read_state_dict, transfer_weights

    network, in_channels = network_from_plans(plans_file)
    try:
        report = transfer_weights(network, read_state_dict(checkpoint, trust_pickle), in_channels)
    except WeightsMismatchError as e:
        name = get_arch(arch).network_class_name.rsplit(".", 1)[-1]
        raise BenchmarkError(f"--source {checkpoint} does not fit the {name} planned for this benchmark ({plans_file.stem})"
                             f": {e}") from None
    logger.info(f"source checkpoint fits {arch}: {report.format()}")


# ------------------------------------------------------------------------------------------------ the benchmark
class Benchmark:
    def __init__(self, settings: Settings, workdir: str | Path, echo: bool = True, trust_pickle: bool = False,
                 qc_page: bool = False, only_draws=None):
        self.s = settings
        self.qc_page = qc_page
        self.only_draws = only_draws
        self.trust_pickle = trust_pickle
        self.w = Workdir(Path(workdir).resolve())
        self.echo = echo
        self.w.open(self.s)
        self.env = nnunet_env(self.w.root / "nnunet")
        self.env["nnUNet_compile"] = "f"  # compilation time would dominate these short runs
        if trust_pickle:  # the user's opt-in for the --source checkpoint, logged by every run that loads it
            from hippo_peft.safe_load import TRUST_ENV
            self.env[TRUST_ENV] = "1"
            logger.info(f"--trust-pickle: the source checkpoint may be unpickled without the allow-list "
                        f"({TRUST_ENV}=1 for every nnUNetv2_train run of this command).")
        self.raw, self.pre, self.results = (Path(self.env[k]) for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                                                         "nnUNet_results"))
        self.target_json, _ = labelled_cases(Path(self.s.target))
        self.target_name = f"Dataset{TARGET_ID}_BenchmarkTarget"
        self.source_name = f"Dataset{SOURCE_ID}_BenchmarkSource"

    # names
    def plans(self, arch: str | None, method: str = "nnunet") -> str:
        if arch:
            return our_plans(arch, self.s.preset)
        # nnunet-ft: the same plans under their own name, so that its folders do not meet nnunet's
        return FINETUNE_PLANS if parse_method(method)[0] == "nnunet-ft" else "nnUNetPlans"

    def trainer(self, run: Run) -> str:
        from hippo_peft.trainers import trainer_name
        base = "nnUNetTrainer" if run.arch is None else trainer_name(run.arch, run.base_method)
        fresh = f"_{FRESH_HEAD}" if run.arch is not None and head_init(run.method) == "fresh" else ""
        return f"{base}_{run.iterations}it{rate_suffix(run.method)}{fresh}"

    def fold_dir(self, run: Run) -> Path:
        return fold_folder(self.results, self.target_name, self.trainer(run), self.plans(run.arch, run.method),
                           run.fold)

    def _cmd(self, cmd: list[str], log_name: str, **env) -> float:
        return run_logged(cmd, {**self.env, **env}, self.w.logs / f"{log_name}.log", echo=self.echo)

    # steps
    def prepare_target(self) -> None:
        s = self.s
        folder = self.w.settings()  # every draw of every command on this folder
        if not self.w.done("target"):
            # Every labelled case outside the label-shift source, so that plans and preprocessed data do not depend
            # on the draws and later commands can draw more (planning reads images, never trains on them).
            _, cases = labelled_cases(Path(s.target))
            _link_dataset(Path(s.target), self.raw / self.target_name,
                          [c for c in cases if c not in set(s.source_cases)], self.target_json)
            self.w.mark("target")
        for arch in s.archs:
            if not self.w.done(f"plan-{arch}"):
                self._cmd(plan_command(TARGET_ID, arch, s.preset, "--no-preprocess", "--overwrite"), "plan")
                if s.source_kind == "checkpoint":  # before any preprocessing or training
                    check_source_checkpoint(s.source, self.pre / self.target_name / f"{self.plans(arch)}.json", arch,
                                            self.trust_pickle)
                self._cmd([console_script("nnUNetv2_preprocess"), "-d", str(TARGET_ID), "-plans_name",
                           self.plans(arch), "-c", "3d_fullres", "-np", "1"], "plan")
                self.w.mark(f"plan-{arch}")
        if any(parse_method(m)[0] in NNUNET_METHODS for m in s.methods):
            if not self.w.done("plan-nnunet"):
                self._cmd([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(TARGET_ID), "-c", "3d_fullres",
                           "-np", "1"], "plan", nnUNet_n_proc_DA="1")  # its VRAM estimate crashes on 0 threads
                self.w.mark("plan-nnunet")
            # shares nnUNetPlans' preprocessed data (same data identifier)
            stock = json.loads((self.pre / self.target_name / "nnUNetPlans.json").read_text())
            (self.pre / self.target_name / f"{FINETUNE_PLANS}.json").write_text(
                json.dumps({**stock, "plans_name": FINETUNE_PLANS}, indent=1))
        # nnU-Net's "validation" of a fold is what its final validation predicts: our validation and test cases;
        # a repeat's fold ([k, draw, repeat]) holds the same cases as its draw's
        splits = [{"train": folder["train_draws"][str(k)][d], "val": sorted(s.val_cases + s.test_cases)}
                  for k, d, *_ in folder["folds"]]
        (self.pre / self.target_name / "splits_final.json").write_text(json.dumps(splits, indent=1))

    def source_checkpoint(self, arch: str) -> str:
        """Pre-train ``arch`` on the source (once) and return the checkpoint every run starts from."""
        s = self.s
        if s.source_kind == "checkpoint":
            return s.source
        trainer, plans = f"{get_arch(arch).trainer}_{s.source_iterations}it", self.plans(arch)
        fold = fold_folder(self.results, self.source_name, trainer, plans, "all")
        if self.w.done(f"source-{arch}"):
            return str(fold / "checkpoint_final.pth")
        self._source_data()
        patch = planned_patch_size(self.pre, self.target_name, plans)
        self._cmd(source_plan_command(SOURCE_ID, arch, s.preset, patch, "--overwrite"), "source")
        if fold.exists():
            shutil.rmtree(fold)  # an interrupted pre-training of ours
        logger.info(f"pre-training {arch} on the source for {s.source_iterations} iterations ...")
        self._cmd(train_command(SOURCE_ID, "all", trainer, plans, s.device), "source")
        self.w.mark(f"source-{arch}")
        return str(fold / "checkpoint_final.pth")

    def _source_data(self) -> None:
        s = self.s
        if self.w.done("source-data"):
            return
        if s.source_kind == LABEL_SHIFT:
            dj = {**self.target_json, "labels": {"background": 0, "hippocampus": 1}}
            folder = self.raw / self.source_name
            _link_dataset(Path(s.target), folder, s.source_cases, dj, link_labels=False)
            _write_merged_labels(Path(s.target), folder, s.source_cases, dj["file_ending"])
        else:
            dj, cases = labelled_cases(Path(s.source))
            _link_dataset(Path(s.source), self.raw / self.source_name, cases, dj)
        self.w.mark("source-data")

    def source_checkpoint_nnunet(self) -> str:
        """nnunet-ft: nnU-Net's own U-Net pre-trained on the source as nnU-Net's documentation does it (the
        target's stock plans moved to the source, ``nnUNetv2_move_plans_between_datasets``); the fine-tuning runs
        start from it with ``-pretrained_weights``, which skips the segmentation layers."""
        s = self.s
        trainer = f"nnUNetTrainer_{s.source_iterations}it"
        fold = fold_folder(self.results, self.source_name, trainer, SOURCE_NNUNET_PLANS, "all")
        if self.w.done("source-nnunet"):
            return str(fold / "checkpoint_final.pth")
        self._source_data()
        for cmd in (["nnUNetv2_extract_fingerprint", "-d", str(SOURCE_ID), "-np", "1"],
                    ["nnUNetv2_move_plans_between_datasets", "-s", str(TARGET_ID), "-t", str(SOURCE_ID), "-sp",
                     "nnUNetPlans", "-tp", SOURCE_NNUNET_PLANS],
                    ["nnUNetv2_preprocess", "-d", str(SOURCE_ID), "-plans_name", SOURCE_NNUNET_PLANS, "-c",
                     "3d_fullres", "-np", "1"]):
            self._cmd([console_script(cmd[0]), *cmd[1:]], "source-nnunet")
        if fold.exists():
            shutil.rmtree(fold)  # an interrupted pre-training of ours
        logger.info(f"pre-training nnU-Net's U-Net on the source for {s.source_iterations} iterations ...")
        self._cmd(train_command(SOURCE_ID, "all", trainer, SOURCE_NNUNET_PLANS, s.device), "source-nnunet")
        self.w.mark("source-nnunet")
        return str(fold / "checkpoint_final.pth")

    def execute(self, run: Run, checkpoint: str | None) -> dict:
        fold = self.fold_dir(run)
        if fold.exists():
            shutil.rmtree(fold)  # unfinished: no run record was written
        cmd = train_command(TARGET_ID, run.fold, self.trainer(run), self.plans(run.arch, run.method), self.s.device,
                            checkpoint)
        seconds = run_logged(cmd, self.env, self.w.logs / f"{run.name}.log", echo=False)  # progress bar instead
        method, lr, dlr = parse_method(run.method)
        test, val = self._evaluate(fold, self.s.test_cases), self._evaluate(fold, self.s.val_cases)
        from hippo_peft.nnunet.label_health import CHECK_FILE
        check = fold / CHECK_FILE  # written by the trainers' label check after the final validation
        loaded = fold / "pretrained_weights_report.json"  # what the head rules did (our trainers), not only the ask
        head_report = json.loads(loaded.read_text()).get("head") if loaded.is_file() else None
        record = {"run": run.name, **asdict(run), "method": method, "method_token": run.method, "lr": lr,
                  "decoder_lr": dlr, "head": head_init(run.method), "head_report": head_report,
                  "trainer": self.trainer(run),
                  "plans": self.plans(run.arch, run.method),
                  "train_cases": self.s.train_draws[str(run.k)][run.draw], "n_test": len(self.s.test_cases),
                  "n_val": len(self.s.val_cases), "trust_pickle": self.trust_pickle,
                  "wall_seconds": round(seconds, 1), **self._cost(run, fold), **test,
                  "val_per_case": val.get("per_case", {}), "val_summary": val.get("summary"),
                  "label_check": json.loads(check.read_text()) if check.is_file() else None}
        tmp = self.w.record(run).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(self.w.record(run))  # a record exists only for a finished run
        return record

    def _cost(self, run: Run, fold: Path) -> dict:
        from hippo_peft.trainers.budget import STATS_FILE
        stats = json.loads((fold / STATS_FILE).read_text())
        steps = sorted(stats["step_seconds"])
        cost = {k: stats[k] for k in ("trainable", "total", "batch_size", "patch_size", "peak_memory_mib",
                                      "peak_memory_kind")}
        cost["percent_trainable"] = 100 * stats["trainable"] / stats["total"]
        cost["seconds_per_step"] = steps[len(steps) // 2]  # median: the first steps include warm-up
        cost["compute_seconds"] = round(sum(steps), 1)  # training steps only: no data loading, no validation
        cost["load_average"] = stats.get("load_average")  # > the cores: something else shared the CPU
        if run.base_method in adapter_methods():
            from hippo_peft.nnunet.adapter_files import export_adapter
            out = self.w.adapters / run.name
            files_log = logging.getLogger(export_adapter.__module__)
            level = files_log.level
            files_log.setLevel(logging.WARNING)  # its "Wrote ..." line would cut through the progress bar
            try:
                export_adapter(str(fold), str(out), overwrite=True)
            finally:
                files_log.setLevel(level)
            cost["stored_bytes"] = sum(p.stat().st_size for p in out.glob("*.safetensors"))
            cost["stored_what"] = "adapter file"
        else:
            cost["stored_bytes"] = 4 * stats["total"]  # float32 weights of the whole network
            cost["stored_what"] = "whole network"
        return cost

    def _evaluate(self, fold: Path, cases: list[str]) -> dict:
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

        from hippo_peft.image_check import check_complete
        from hippo_peft.analysis.metrics import case_metrics, label_regions
        if not cases:
            return {}
        dj = self.target_json
        ending = dj["file_ending"]
        labels_dir = self.raw / self.target_name / "labelsTr"
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net announces its reader choice
            reader = determine_reader_writer_from_dataset_json(dj, str(labels_dir / f"{cases[0]}{ending}"))()
        regions = label_regions(dj["labels"])
        per_case = {}
        for case in cases:
            pred_file = fold / "validation" / f"{case}{ending}"
            if not pred_file.is_file():
                raise RefusedError(f"nnU-Net's validation wrote no prediction {pred_file}; see the run's log.")
            check_complete(pred_file)  # the references were checked before training
            ref, props = reader.read_seg(str(labels_dir / f"{case}{ending}"))
            pred, _ = reader.read_seg(str(pred_file))
            per_case[case] = case_metrics(ref[0], pred[0], props["spacing"], regions)
        return {"regions": {name: list(v) for name, v in regions.items()}, "per_case": per_case,
                "summary": summarize_cases(per_case, regions)}

    def run(self) -> list[dict]:
        from tqdm import tqdm

        self.prepare_target()
        bases = {parse_method(m)[0] for m in self.s.methods}
        checkpoints = {arch: self.source_checkpoint(arch) for arch in self.s.archs if bases - set(NNUNET_METHODS)}
        checkpoints["nnunet"] = None
        if "nnunet-ft" in bases:
            checkpoints["nnunet-ft"] = self.source_checkpoint_nnunet()
        runs = planned_runs(self.s, self.only_draws)
        todo = [r for r in runs if not self.w.record(r).is_file()]
        if len(todo) < len(runs):
            logger.info(f"resuming: {len(runs) - len(todo)} of {len(runs)} runs already finished in {self.w.root}")
        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="benchmark runs", unit="run")
        for run in todo:
            bar.set_postfix_str(run.name)
            record = self.execute(run, checkpoints[run.arch or run.base_method])
            val = f" (validation {record['val_summary']['mean_dice']:.3f})" if record["val_summary"] else ""
            bar.write(f"{run.name}: mean Dice {record['summary']['mean_dice']:.3f}{val} "
                      f"({record['wall_seconds']:.0f} s, {record['trainable']:,} trainable)")
            bar.update()
        bar.close()
        # the report covers every finished run of the folder, this command's and earlier ones'
        records = [json.loads(f.read_text()) for f in sorted(self.w.runs.glob("*.json"))]
        from hippo_peft.experiments.benchmark_report import write_report
        write_report(records, self.s, self.w.report)
        logger.info(f"report: {self.w.report / 'benchmark.md'}")
        if self.qc_page:
            from hippo_peft.experiments.benchmark_qc import write_benchmark_qc
            logger.info(f"QC page: {write_benchmark_qc(self.w.root, records, self.w.report)}")
        return records


def summarize_cases(per_case: dict, regions: dict) -> dict:
    """Means over test cases per region (NaNs left out and counted) and the mean Dice over the single labels."""
    import numpy as np
    out = {}
    for name in regions:
        values = {m: np.array([c[name][m] for c in per_case.values()], float)
                  for m in ("dice", "hd95", "abs_volume_error")}
        out[name] = {"dice": float(np.nanmean(values["dice"])) if (~np.isnan(values["dice"])).any() else None,
                     "dice_undefined": int(np.isnan(values["dice"]).sum()),
                     "hd95": float(np.nanmean(values["hd95"])) if (~np.isnan(values["hd95"])).any() else None,
                     "hd95_undefined": int(np.isnan(values["hd95"]).sum()),
                     "abs_volume_error": float(values["abs_volume_error"].mean())}
    singles = [out[n]["dice"] for n, labels in regions.items() if len(labels) == 1 and out[n]["dice"] is not None]
    # "started to learn" is judged on these: a case whose prediction holds no foreground at all, or misses a label
    empty = sum(all(c[n]["volume_predicted"] == 0 for n in regions) for c in per_case.values())
    missing = sum(any(c[n]["volume_predicted"] == 0 and c[n]["volume_reference"] > 0 for n in regions)
                  for c in per_case.values())
    return {"regions": out, "mean_dice": float(np.mean(singles)) if singles else None, "empty_predictions": empty,
            "predictions_missing_a_label": missing, "cases": len(per_case)}


def write_folder_report(workdir: str, qc_page: bool = False) -> Path:
    """The report of every finished run in a benchmark work folder, written to its ``report/``; trains nothing and
    reads only the folder's own records (so it also works while a benchmark is running). ``qc_page``: also the QC
    page of each method's worst and best test case (``report/qc/index.html``)."""
    from types import SimpleNamespace

    from hippo_peft.experiments.benchmark_report import write_report
    w = Workdir(Path(workdir).resolve())
    if not w.settings_file.is_file():
        raise BenchmarkError(f"{w.root} holds no benchmark.json: not a work folder of `hippo-peft benchmark`.")
    records = [json.loads(f.read_text()) for f in sorted(w.runs.glob("*.json"))]
    if not records:
        raise BenchmarkError(f"{w.root} has no finished run yet (runs/ is empty): nothing to report.")
    settings = w.settings()
    write_report(records, SimpleNamespace(preset=settings["preset"], device=settings["device"]), w.report)
    if qc_page:
        from hippo_peft.experiments.benchmark_qc import write_benchmark_qc
        logger.info(f"QC page: {write_benchmark_qc(w.root, records, w.report)}")
    return w.report / "benchmark.md"


def run_benchmark(workdir: str, trust_pickle: bool = False, qc_page: bool = False, only_draws=None,
                  **kwargs) -> list[dict]:
    settings = resolve_settings(**kwargs)
    planned_runs(settings, only_draws)  # a bad --only-draws is refused before anything is written
    if settings.source_kind == "checkpoint":  # readable, finite and safe to load, before anything is written
        from hippo_peft.nnunet.weights import read_state_dict
        read_state_dict(settings.source, trust_pickle)
    return Benchmark(settings, workdir, trust_pickle=trust_pickle, qc_page=qc_page, only_draws=only_draws).run()
