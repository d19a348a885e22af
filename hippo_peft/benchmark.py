"""`hippo-peft benchmark`: few-shot transfer with every method side by side, a thin layer over nnU-Net's commands.

source (an nnU-Net dataset to pre-train on, a checkpoint, or a label-shift task made from part of the target)
-> `hippo-peft plan` of the target (and nnU-Net's own planner for the from-scratch baseline) -> k-shot draws with
fixed seeds, written as nnU-Net folds in ``splits_final.json`` (train: the draw, val: the held-out test set)
-> `nnUNetv2_train ... -tr <method trainer>_<N>it -pretrained_weights <source>` for every method, and
`nnUNetv2_train ... -tr nnUNetTrainer_<N>it` from scratch, all for the same N iterations -> nnU-Net's final
validation predicts the test set with the final weights (sliding window, original geometry) -> Dice, HD95 (MONAI)
and volume error per case -> a Markdown table, CSV/JSON of every run and PNG plots.

The test set is nnU-Net's "validation" of each fold only so that nnU-Net predicts it; it never influences
training: the budget is fixed, no early stopping, and results use the final weights, never checkpoint_best.

Everything lives in one work folder. Rerunning the same command resumes: finished runs (``runs/<run>.json``)
are kept, an unfinished run restarts from scratch.
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hippo_peft.commands import console_script, nnunet_env, run_logged
from hippo_peft.networks.presets import ARCHS, PRESETS, get_arch

# Adapter methods train the papers' set (adapter + CNN decoder blocks + head); "<method>-strict" the adapter + head.
PAPER_METHODS = ("lorapt", "hyps", "pdora", "lora", "dora", "pissa")
STRICT_METHODS = tuple(f"{m}-strict" for m in PAPER_METHODS)
ADAPTER_METHODS = PAPER_METHODS + STRICT_METHODS + ("headonly", "decoderonly", "cnnonly")
METHODS = ADAPTER_METHODS + ("full", "nnunet")
DEFAULT_METHODS = PAPER_METHODS + ("headonly", "decoderonly", "full", "nnunet")
# What the methods train changed in hippo_peft 0.2 (the papers' trainable sets): a work folder from before is refused.
SETTINGS_VERSION = 2
LABEL_SHIFT = "label-shift"
DEFAULT_SOURCE = "Dataset002_BraTS2015mini"  # looked for beside the target dataset
TARGET_ID, SOURCE_ID = 961, 962
# Per device: network size, iterations per run, source pre-training iterations, test cases (None: all not drawn)
PROFILES = {"cpu": {"preset": "compact", "iterations": 100, "source_iterations": 500, "n_test": 40},
            "cuda": {"preset": "paper", "iterations": 2500, "source_iterations": 25000, "n_test": None}}


class BenchmarkError(ValueError):
    """Bad input, found before any training."""


@dataclass
class Settings:
    """Everything that defines a benchmark; stored as ``benchmark.json`` in the work folder."""

    target: str
    source: str
    source_kind: str  # dataset | checkpoint | label-shift | none (only nnU-Net from scratch)
    archs: list
    methods: list
    shots: list
    draws: int
    seed: int
    preset: str
    iterations: int
    source_iterations: int
    device: str
    test_cases: list
    source_cases: list  # label-shift only: target cases used (merged) for pre-training, never drawn or tested
    train_draws: dict  # str(k) -> list of draws (lists of case ids)
    settings_version: int = SETTINGS_VERSION  # of what each method trains (see SETTINGS_VERSION)

    @property
    def folds(self) -> list[tuple[int, int]]:
        """(k, draw) of each nnU-Net fold in splits_final.json."""
        return [(k, d) for k in self.shots for d in range(self.draws)]


@dataclass(frozen=True)
class Run:
    arch: str | None  # None for nnU-Net's own network
    method: str
    k: int
    draw: int
    fold: int

    @property
    def name(self) -> str:
        return f"{self.arch + '-' if self.arch else ''}{self.method}-k{self.k}-d{self.draw}"


# ----------------------------------------------------------------------------------------------------- inputs
def labelled_cases(raw: Path) -> tuple[dict, list[str]]:
    """dataset.json and the sorted ids of cases with a label and every channel's image."""
    if not (raw / "dataset.json").is_file():
        raise BenchmarkError(f"{raw} is not an nnU-Net raw dataset (no dataset.json). Point to a folder like "
                             f"$nnUNet_raw/Dataset004_Hippocampus.")
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))
    if not cases:
        raise BenchmarkError(f"{raw}/labelsTr has no {ending} label files: the benchmark needs labelled cases.")
    channels = len(dataset_json["channel_names"])
    missing = [f"{c}_{i:04d}{ending}" for c in cases for i in range(channels)
               if not (raw / "imagesTr" / f"{c}_{i:04d}{ending}").is_file()]
    if missing:
        raise BenchmarkError(f"{raw}/imagesTr lacks images of labelled cases: {', '.join(missing[:10])}"
                             f"{' ...' if len(missing) > 10 else ''}.")
    return dataset_json, cases


def _case_list(value) -> list[str]:
    """Case ids from a list, or from a text file (one id per line) given as a one-element list."""
    if value and len(value) == 1 and Path(value[0]).is_file():
        return [line.strip() for line in Path(value[0]).read_text().splitlines() if line.strip()]
    return list(value or [])


def resolve_settings(target: str, source: str | None = None, archs=("unetr",), methods=DEFAULT_METHODS,
                     shots=(5, 10, 20), draws: int = 3, seed: int = 0, preset: str | None = None,
                     iterations: int | None = None, source_iterations: int | None = None, device: str = "cpu",
                     n_test: int | None = -1, test_cases=None, train_draws_file: str | None = None,
                     n_source: int = 40) -> Settings:
    """Check every input and fix the draws; raises :class:`BenchmarkError` before anything is trained.

    ``n_test=-1`` takes the device profile's test-set size; ``None`` takes every labelled case not drawn.
    """
    if device not in PROFILES:
        raise BenchmarkError(f"Unknown device '{device}'; use cpu or cuda.")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise BenchmarkError("--device cuda, but torch sees no CUDA device here. Use --device cpu.")
    profile = PROFILES[device]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise BenchmarkError(f"Unknown method(s) {', '.join(unknown) or '(none given)'}. Choose from: "
                             f"{', '.join(METHODS)} (nnunet = nnU-Net's default trainer from scratch).")
    bad_archs = [a for a in archs if a not in ARCHS]
    if bad_archs or not archs:
        raise BenchmarkError(f"Unknown backbone(s) {', '.join(bad_archs)}; choose from {', '.join(sorted(ARCHS))}.")
    preset = preset or profile["preset"]
    if preset not in PRESETS["unetr"]:
        raise BenchmarkError(f"Unknown preset '{preset}'; choose from {', '.join(sorted(PRESETS['unetr']))}.")
    shots = sorted(set(int(k) for k in shots))
    if not shots or shots[0] < 1 or draws < 1:
        raise BenchmarkError(f"Need shot counts >= 1 and draws >= 1 (got shots {shots}, draws {draws}).")
    iterations = iterations or profile["iterations"]
    source_iterations = source_iterations or profile["source_iterations"]
    from hippo_peft.trainers.budget import split_budget
    for n in (iterations, source_iterations):
        try:
            split_budget(n)
        except ValueError as e:
            raise BenchmarkError(str(e)) from None

    target_path = Path(target).resolve()
    _, cases = labelled_cases(target_path)
    if any(m != "nnunet" for m in methods):
        source_kind, source = _resolve_source(source, target_path)
    else:  # nnU-Net from scratch only: nothing is pre-trained
        source_kind, source = "none", ""
    test_cases = _case_list(test_cases)
    unknown = sorted(set(test_cases) - set(cases))
    if unknown:
        raise BenchmarkError(f"Test case(s) not among the labelled cases of {target_path}: {', '.join(unknown)}.")
    source_cases: list[str] = []
    if source_kind == LABEL_SHIFT:
        candidates = [c for c in cases if c not in set(test_cases)]
        if not 0 < n_source < len(candidates):
            raise BenchmarkError(f"--n-source {n_source}: need between 1 and {len(candidates) - 1} of the "
                                 f"{len(candidates)} labelled target cases outside the test set.")
        source_cases = sorted(random.Random(f"{seed}-source").sample(candidates, n_source))
    available = [c for c in cases if c not in set(source_cases)]
    if not test_cases and n_test == -1:
        n_test = profile["n_test"]
    pool = [c for c in available if c not in set(test_cases)]
    if not test_cases and n_test is not None:
        if n_test < 1 or n_test >= len(pool):
            raise BenchmarkError(f"--n-test {n_test}: need between 1 and {len(pool) - 1} of the {len(pool)} "
                                 f"available labelled cases.")
        test_cases = sorted(random.Random(f"{seed}-test").sample(pool, n_test))
        pool = [c for c in pool if c not in set(test_cases)]

    if train_draws_file:
        train_draws = _read_draws(Path(train_draws_file), shots, draws, cases)
    else:
        too_many = [k for k in shots if k > len(pool)]
        if too_many:
            raise BenchmarkError(
                f"k = {', '.join(map(str, too_many))} is larger than the {len(pool)} labelled cases available for "
                f"training ({len(cases)} labelled - {len(set(test_cases) | set(source_cases))} in the test set"
                f"{' and the label-shift source' if source_cases else ''}). Use smaller --shots or a smaller test set.")
        train_draws = {str(k): [sorted(random.Random(f"{seed}-k{k}-d{d}").sample(pool, k)) for d in range(draws)]
                       for k in shots}
    drawn = {c for ds in train_draws.values() for d in ds for c in d}
    if not test_cases:  # default: every labelled case not drawn
        test_cases = sorted(c for c in available if c not in drawn)
        if not test_cases:
            raise BenchmarkError("Every labelled case is in a training draw: nothing is left to test on.")
    overlap = sorted(drawn & set(test_cases))
    if overlap:
        raise BenchmarkError(f"The test set overlaps the training draws in {len(overlap)} case(s): "
                             f"{', '.join(overlap[:20])}{' ...' if len(overlap) > 20 else ''}. A case must not be "
                             f"trained and tested on; remove them from --test-cases or from the draws file.")
    leaked = sorted(drawn & set(source_cases))
    if leaked:
        raise BenchmarkError(f"Training draws contain label-shift source cases: {', '.join(leaked)}.")
    return Settings(target=str(target_path), source=source, source_kind=source_kind, archs=list(archs),
                    methods=list(methods), shots=shots, draws=draws, seed=seed, preset=preset, iterations=iterations,
                    source_iterations=source_iterations, device=device, test_cases=sorted(test_cases),
                    source_cases=source_cases, train_draws=train_draws)


def _default_source(target: Path) -> Path:
    return target.parent / DEFAULT_SOURCE


def _resolve_source(source: str | None, target: Path) -> tuple[str, str]:
    """(kind, resolved source): kind is dataset, checkpoint or label-shift."""
    if source == LABEL_SHIFT:
        return LABEL_SHIFT, LABEL_SHIFT
    if source is None:
        path = _default_source(target)
        if not (path / "dataset.json").is_file():
            raise BenchmarkError(f"No source given and no {DEFAULT_SOURCE} beside {target}. Name one: --source "
                                 f"<nnU-Net raw dataset folder> | <checkpoint .pth/.pt/.safetensors> | {LABEL_SHIFT}.")
    else:
        path = Path(source).resolve()
    if path.is_file():
        return "checkpoint", str(path)
    if not path.exists():
        raise BenchmarkError(f"--source {source}: no such file or folder. Give an nnU-Net raw dataset folder, a "
                             f"checkpoint, or '{LABEL_SHIFT}'.")
    if path == target:
        raise BenchmarkError(f"--source is the target dataset itself; pre-training on it would see the test cases. "
                             f"Use '{LABEL_SHIFT}' for a source made from (other) target cases.")
    labelled_cases(path)  # a usable labelled dataset
    return "dataset", str(path)


def _read_draws(path: Path, shots: list[int], draws: int, cases: list[str]) -> dict:
    """A JSON file {"5": [[case, ...], ...], "10": ...}: one list per draw, exactly k cases each."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BenchmarkError(f"Cannot read the draws file {path}: {e}") from None
    problems = []
    for k in shots:
        ds = data.get(str(k))
        if not isinstance(ds, list) or len(ds) != draws:
            problems.append(f"k={k}: need a list of {draws} draws")
            continue
        for i, d in enumerate(ds):
            if len(d) != k or len(set(d)) != k:
                problems.append(f"k={k} draw {i}: {len(set(d))} distinct cases instead of {k}")
            unknown = sorted(set(d) - set(cases))
            if unknown:
                problems.append(f"k={k} draw {i}: unknown cases {', '.join(unknown)}")
    if problems:
        raise BenchmarkError(f"Draws file {path}: " + "; ".join(problems) + ".")
    return {str(k): [sorted(d) for d in data[str(k)]] for k in shots}


def planned_runs(s: Settings) -> list[Run]:
    """All runs, ordered so that every method is compared on one draw before the next draw starts."""
    runs = []
    for fold, (k, d) in enumerate(s.folds):
        for arch in s.archs:
            runs += [Run(arch, m, k, d, fold) for m in s.methods if m != "nnunet"]
        if "nnunet" in s.methods:
            runs.append(Run(None, "nnunet", k, d, fold))
    return runs


# ------------------------------------------------------------------------------------------------ work folder
class Workdir:
    """Layout of the benchmark's folder; its own nnU-Net tree lives in ``nnunet/``."""

    def __init__(self, root: Path):
        self.root = root
        self.settings_file = root / "benchmark.json"
        self.runs, self.logs, self.adapters, self.report = (root / n for n in ("runs", "logs", "adapters", "report"))
        self.state = root / "state"

    def open(self, s: Settings) -> None:
        """Start a new benchmark, or resume one with the same settings; never reuses a folder it did not make."""
        if self.settings_file.is_file():
            old = json.loads(self.settings_file.read_text())
            if old.get("settings_version", 1) != s.settings_version:
                raise BenchmarkError(
                    f"{self.root} holds a benchmark made with hippo_peft settings version "
                    f"{old.get('settings_version', 1)}; this hippo_peft trains other sets of tensors (version "
                    f"{s.settings_version}: since 0.2 the adapter methods also train the CNN decoder, decoderonly "
                    f"no longer trains the skip encoders), so its runs cannot be mixed with new ones. Start a new "
                    f"--workdir; keep the old one's report as it is.")
            new = asdict(s)
            changed = [f.name for f in fields(Settings) if f.name != "methods" and old.get(f.name) != new[f.name]]
            if changed:
                raise BenchmarkError(
                    f"{self.root} holds a benchmark with other settings ({', '.join(changed)} differ). Rerun it "
                    f"with its own settings to resume (see {self.settings_file}), or choose a new --workdir.")
            s.methods = list(dict.fromkeys(old["methods"] + s.methods))  # adding methods extends the benchmark
        elif self.root.exists() and any(self.root.iterdir()):
            raise BenchmarkError(f"--workdir {self.root} is not empty and holds no benchmark.json; the benchmark "
                                 f"only writes into a new or empty folder, or resumes its own.")
        for folder in (self.runs, self.logs, self.adapters, self.report, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        self.settings_file.write_text(json.dumps(asdict(s), indent=1))

    def done(self, step: str) -> bool:
        return (self.state / f"{step}.done").exists()

    def mark(self, step: str) -> None:
        (self.state / f"{step}.done").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))

    def record(self, run: Run) -> Path:
        return self.runs / f"{run.name}.json"


def _link_dataset(raw: Path, folder: Path, cases: list[str], dataset_json: dict, link_labels: bool = True):
    """An nnU-Net raw dataset of symlinks to ``cases`` of ``raw`` (the user's data are never copied)."""
    ending, channels = dataset_json["file_ending"], len(dataset_json["channel_names"])
    if folder.exists():
        shutil.rmtree(folder)  # our own, unfinished (its step was not marked done)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case in cases:
        for c in range(channels):
            (folder / "imagesTr" / f"{case}_{c:04d}{ending}").symlink_to(raw / "imagesTr" / f"{case}_{c:04d}{ending}")
        if link_labels:
            (folder / "labelsTr" / f"{case}{ending}").symlink_to(raw / "labelsTr" / f"{case}{ending}")
    (folder / "dataset.json").write_text(json.dumps({**dataset_json, "numTraining": len(cases)}, indent=1))


def _write_merged_labels(raw: Path, folder: Path, cases: list[str], ending: str) -> None:
    """Label-shift source: every foreground label becomes label 1, geometry unchanged."""
    import SimpleITK as sitk
    for case in cases:
        image = sitk.ReadImage(str(raw / "labelsTr" / f"{case}{ending}"))
        merged = sitk.Cast(image > 0, sitk.sitkUInt8)
        merged.CopyInformation(image)
        sitk.WriteImage(merged, str(folder / "labelsTr" / f"{case}{ending}"))


def check_source_checkpoint(checkpoint: str, plans_file: Path, arch: str) -> None:
    """Refuse a checkpoint that does not fit the planned ``arch`` network (another backbone or preset)."""
    from hippo_peft.import_weights import network_from_plans
    from hippo_peft.weights import WeightsMismatchError, read_state_dict, transfer_weights

    network, in_channels = network_from_plans(plans_file)
    try:
        report = transfer_weights(network, read_state_dict(checkpoint), in_channels)
    except WeightsMismatchError as e:
        name = get_arch(arch).network_class_name.rsplit(".", 1)[-1]
        raise BenchmarkError(f"--source {checkpoint} does not fit the {name} planned for this benchmark ({plans_file.stem})"
                             f": {e}") from None
    print(f"source checkpoint fits {arch}: {report.format()}")


# ------------------------------------------------------------------------------------------------ the benchmark
class Benchmark:
    def __init__(self, settings: Settings, workdir: str | Path, echo: bool = True):
        self.s = settings
        self.w = Workdir(Path(workdir).resolve())
        self.echo = echo
        self.w.open(self.s)
        self.env = nnunet_env(self.w.root / "nnunet")
        self.env["nnUNet_compile"] = "f"  # compilation time would dominate these short runs
        self.raw, self.pre, self.results = (Path(self.env[k]) for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                                                         "nnUNet_results"))
        self.target_json, _ = labelled_cases(Path(self.s.target))
        self.target_name = f"Dataset{TARGET_ID}_BenchmarkTarget"
        self.source_name = f"Dataset{SOURCE_ID}_BenchmarkSource"

    # names
    def plans(self, arch: str | None) -> str:
        return f"nnUNetPlans_{get_arch(arch).plans_suffix}_{self.s.preset}" if arch else "nnUNetPlans"

    def trainer(self, run: Run) -> str:
        from hippo_peft.trainers import trainer_name
        base = "nnUNetTrainer" if run.method == "nnunet" else trainer_name(run.arch, run.method)
        return f"{base}_{self.s.iterations}it"

    def fold_dir(self, run: Run) -> Path:
        return (self.results / self.target_name / f"{self.trainer(run)}__{self.plans(run.arch)}__3d_fullres"
                / f"fold_{run.fold}")

    def _cmd(self, cmd: list[str], log_name: str, **env) -> float:
        return run_logged(cmd, {**self.env, **env}, self.w.logs / f"{log_name}.log", echo=self.echo)

    # steps
    def prepare_target(self) -> None:
        s = self.s
        if not self.w.done("target"):
            used = sorted(set(s.test_cases) | {c for ds in s.train_draws.values() for d in ds for c in d})
            _link_dataset(Path(s.target), self.raw / self.target_name, used, self.target_json)
            self.w.mark("target")
        hp = console_script("hippo-peft")
        for arch in s.archs:
            if not self.w.done(f"plan-{arch}"):
                self._cmd([hp, "plan", "-d", str(TARGET_ID), "--arch", arch, "--preset", s.preset, "-np", "1",
                           "--no-preprocess", "--overwrite"], "plan")
                if s.source_kind == "checkpoint":  # before any preprocessing or training
                    check_source_checkpoint(s.source, self.pre / self.target_name / f"{self.plans(arch)}.json", arch)
                self._cmd([console_script("nnUNetv2_preprocess"), "-d", str(TARGET_ID), "-plans_name",
                           self.plans(arch), "-c", "3d_fullres", "-np", "1"], "plan")
                self.w.mark(f"plan-{arch}")
        if "nnunet" in s.methods and not self.w.done("plan-nnunet"):
            self._cmd([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(TARGET_ID), "-c", "3d_fullres",
                       "-np", "1"], "plan", nnUNet_n_proc_DA="1")  # its VRAM estimate crashes on 0 threads
            self.w.mark("plan-nnunet")
        splits = [{"train": s.train_draws[str(k)][d], "val": s.test_cases} for k, d in s.folds]
        (self.pre / self.target_name / "splits_final.json").write_text(json.dumps(splits, indent=1))

    def source_checkpoint(self, arch: str) -> str:
        """Pre-train ``arch`` on the source (once) and return the checkpoint every run starts from."""
        s = self.s
        if s.source_kind == "checkpoint":
            return s.source
        trainer, plans = f"{get_arch(arch).trainer}_{s.source_iterations}it", self.plans(arch)
        fold = self.results / self.source_name / f"{trainer}__{plans}__3d_fullres" / "fold_all"
        if self.w.done(f"source-{arch}"):
            return str(fold / "checkpoint_final.pth")
        if not self.w.done("source-data"):
            if s.source_kind == LABEL_SHIFT:
                dj = {**self.target_json, "labels": {"background": 0, "hippocampus": 1}}
                folder = self.raw / self.source_name
                _link_dataset(Path(s.target), folder, s.source_cases, dj, link_labels=False)
                _write_merged_labels(Path(s.target), folder, s.source_cases, dj["file_ending"])
            else:
                dj, cases = labelled_cases(Path(s.source))
                _link_dataset(Path(s.source), self.raw / self.source_name, cases, dj)
            self.w.mark("source-data")
        # UNETR's position embedding is tied to the patch size: plan the source with the target's.
        patch = json.loads((self.pre / self.target_name / f"{plans}.json").read_text())[
            "configurations"]["3d_fullres"]["patch_size"]
        self._cmd([console_script("hippo-peft"), "plan", "-d", str(SOURCE_ID), "--arch", arch, "--preset",
                   s.preset, "-np", "1", "--overwrite", "--patch-size", *map(str, patch)], "source")
        if fold.exists():
            shutil.rmtree(fold)  # an interrupted pre-training of ours
        print(f"pre-training {arch} on the source for {s.source_iterations} iterations ...", flush=True)
        self._cmd([console_script("nnUNetv2_train"), str(SOURCE_ID), "3d_fullres", "all", "-tr", trainer, "-p", plans,
                   "-device", s.device], "source")
        self.w.mark(f"source-{arch}")
        return str(fold / "checkpoint_final.pth")

    def execute(self, run: Run, checkpoint: str | None) -> dict:
        fold = self.fold_dir(run)
        if fold.exists():
            shutil.rmtree(fold)  # unfinished: no run record was written
        cmd = [console_script("nnUNetv2_train"), str(TARGET_ID), "3d_fullres", str(run.fold), "-tr",
               self.trainer(run), "-p", self.plans(run.arch), "-device", self.s.device]
        if checkpoint:
            cmd += ["-pretrained_weights", checkpoint]
        seconds = run_logged(cmd, self.env, self.w.logs / f"{run.name}.log", echo=False)  # progress bar instead
        record = {"run": run.name, **asdict(run), "trainer": self.trainer(run), "plans": self.plans(run.arch),
                  "train_cases": self.s.train_draws[str(run.k)][run.draw], "n_test": len(self.s.test_cases),
                  "wall_seconds": round(seconds, 1), **self._cost(run, fold), **self._evaluate(fold)}
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
        if run.method in ADAPTER_METHODS:
            from hippo_peft.adapter_files import export_adapter
            out = self.w.adapters / run.name
            with contextlib.redirect_stdout(io.StringIO()):
                export_adapter(str(fold), str(out), overwrite=True)
            cost["stored_bytes"] = sum(p.stat().st_size for p in out.glob("*.safetensors"))
            cost["stored_what"] = "adapter file"
        else:
            cost["stored_bytes"] = 4 * stats["total"]  # float32 weights of the whole network
            cost["stored_what"] = "whole network"
        return cost

    def _evaluate(self, fold: Path) -> dict:
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

        from hippo_peft.metrics import case_metrics, label_regions
        dj = self.target_json
        ending = dj["file_ending"]
        labels_dir = self.raw / self.target_name / "labelsTr"
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net announces its reader choice
            reader = determine_reader_writer_from_dataset_json(dj, str(labels_dir / f"{self.s.test_cases[0]}{ending}"))()
        regions = label_regions(dj["labels"])
        per_case = {}
        for case in self.s.test_cases:
            pred_file = fold / "validation" / f"{case}{ending}"
            if not pred_file.is_file():
                raise RuntimeError(f"nnU-Net's validation wrote no prediction {pred_file}; see the run's log.")
            ref, props = reader.read_seg(str(labels_dir / f"{case}{ending}"))
            pred, _ = reader.read_seg(str(pred_file))
            per_case[case] = case_metrics(ref[0], pred[0], props["spacing"], regions)
        return {"regions": {name: list(v) for name, v in regions.items()}, "per_case": per_case,
                "summary": summarize_cases(per_case, regions)}

    def run(self) -> list[dict]:
        from tqdm import tqdm

        self.prepare_target()
        checkpoints = {arch: self.source_checkpoint(arch) for arch in self.s.archs
                       if any(m != "nnunet" for m in self.s.methods)}
        runs = planned_runs(self.s)
        todo = [r for r in runs if not self.w.record(r).is_file()]
        if len(todo) < len(runs):
            print(f"resuming: {len(runs) - len(todo)} of {len(runs)} runs already finished in {self.w.root}")
        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="benchmark runs", unit="run")
        for run in todo:
            bar.set_postfix_str(run.name)
            record = self.execute(run, None if run.method == "nnunet" else checkpoints[run.arch])
            bar.write(f"{run.name}: mean Dice {record['summary']['mean_dice']:.3f} "
                      f"({record['wall_seconds']:.0f} s, {record['trainable']:,} trainable)")
            bar.update()
        bar.close()
        records = [json.loads(self.w.record(r).read_text()) for r in runs]
        from hippo_peft.benchmark_report import write_report
        write_report(records, self.s, self.w.report)
        print(f"report: {self.w.report / 'benchmark.md'}")
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
    return {"regions": out, "mean_dice": float(np.mean(singles)) if singles else None}


def run_benchmark(workdir: str, **kwargs) -> list[dict]:
    settings = resolve_settings(**kwargs)
    return Benchmark(settings, workdir).run()
