"""`hippo-peft benchmark`: few-shot transfer with every method side by side, a thin layer over nnU-Net's commands.

source (an nnU-Net dataset to pre-train on, a checkpoint, or a label-shift task made from part of the target)
-> `hippo-peft plan` of the target (and nnU-Net's own planner for the from-scratch baseline) -> k-shot draws with
fixed seeds, written as nnU-Net folds in ``splits_final.json`` (train: the draw, val: the validation cases and
the held-out test set) -> `nnUNetv2_train ... -tr <method trainer>_<N>it -pretrained_weights <source>` for every
method, `nnUNetv2_train ... -tr nnUNetTrainer_<N>it` from scratch and, for ``nnunet-ft``, nnU-Net's own U-Net
pre-trained on the same source, all for the same N iterations -> nnU-Net's final validation predicts validation and
test cases with the final weights (sliding window, original geometry) -> Dice, HD95 (MONAI) and volume error per
case, scored separately for the two sets -> a Markdown table, CSV/JSON of every run and PNG plots.

Validation and test cases are nnU-Net's "validation" of each fold only so that nnU-Net predicts them; they never
influence training: the budget is fixed, no early stopping, and results use the final weights, never
checkpoint_best. Choices between runs (a learning rate, a budget) are meant to be made on the validation cases
(``val_summary``), results reported on the test cases (``summary``).

A method may carry learning rates, ``lorapt@3e-4`` (every group) or ``lorapt@3e-4,1e-3`` (adapter, decoder + head):
the run uses ``<trainer>_<N>it_lr3e-4_dlr1e-3``. ``--iterations`` may list several budgets (learning curves).

Everything lives in one work folder. Rerunning the same command resumes: finished runs (``runs/<run>.json``)
are kept, an unfinished run restarts from scratch. The same folder can be extended by later commands with other
methods, rates, budgets, shots or draws (one source pre-training, one test and validation set for all); test set,
validation set, source, seed, preset and device stay as the first command fixed them.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hippo_peft.commands import console_script, nnunet_env, run_logged
from hippo_peft.networks.presets import ARCHS, PRESETS, get_arch

NNUNET_METHODS = ("nnunet", "nnunet-ft")  # nnU-Net's own U-Net: from scratch / pre-trained on the source


# The method lists derive from the registry (hippo_peft.adapters.method_specs) each time they are read, so a method
# registered by a user is a benchmark method too. Adapter methods train the papers' set (adapter + CNN decoder
# blocks + head); "<method>-strict" the adapter + head; the baselines what their config fixes.
def paper_methods() -> tuple[str, ...]:
    """Adapter methods (two parameter groups: adapter, decoder + head)."""
    from hippo_peft.adapters import method_specs
    return tuple(s.name for s in method_specs() if not s.baseline)


def adapter_methods() -> tuple[str, ...]:
    """Every setting of a registered method: the papers' settings, the strict ones, the baselines."""
    from hippo_peft.adapters import method_specs
    specs = method_specs()
    return (tuple(s.name for s in specs if not s.baseline) + tuple(s.settings[1] for s in specs if not s.baseline)
            + tuple(s.name for s in specs if s.baseline))


def all_methods() -> tuple[str, ...]:
    return adapter_methods() + ("full",) + NNUNET_METHODS


def default_methods() -> tuple[str, ...]:
    from hippo_peft.adapters import method_specs
    specs = [s for s in method_specs() if s.in_default_benchmark]
    return (tuple(s.name for s in specs if not s.baseline) + tuple(s.name for s in specs if s.baseline)
            + ("full", "nnunet"))


_DERIVED = {"PAPER_METHODS": paper_methods, "ADAPTER_METHODS": adapter_methods, "METHODS": all_methods,
            "DEFAULT_METHODS": default_methods,
            "STRICT_METHODS": lambda: tuple(m for m in adapter_methods() if m.endswith("-strict"))}


def __getattr__(name):  # the former constants (hippo_peft < 0.3), read from the registry now
    if name in _DERIVED:
        return _DERIVED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Version 2: the papers' trainable sets (hippo_peft 0.2). Version 3: validation cases, run names with the budget,
# folders extendable by later commands. A work folder of another version is refused.
SETTINGS_VERSION = 3
# Fixed by the first command on a work folder; the rest (archs, methods, shots, draws, iterations) may vary.
FIXED_SETTINGS = ("target", "source", "source_kind", "seed", "preset", "source_iterations", "device", "test_cases",
                  "val_cases", "source_cases", "settings_version")
_METHOD_TOKEN = re.compile(r"^(?P<method>[a-z-]+)(?:@(?P<lr>[^,]+)(?:,(?P<dlr>.+))?)?$")
LABEL_SHIFT = "label-shift"
DEFAULT_SOURCE = "Dataset002_BraTS2015mini"  # looked for beside the target dataset
TARGET_ID, SOURCE_ID = 961, 962
FINETUNE_PLANS = "nnUNetPlans_finetune"  # nnunet-ft on the target: nnU-Net's stock plans, own folder name
SOURCE_NNUNET_PLANS = "nnUNetPlans_fromTarget"  # the target's stock plans moved to the source (nnunet-ft)
# Per device: network size, iterations per run, source pre-training iterations, test cases (None: all not drawn)
PROFILES = {"cpu": {"preset": "compact", "iterations": 100, "source_iterations": 500, "n_test": 40, "n_val": 20},
            "cuda": {"preset": "paper", "iterations": 2500, "source_iterations": 25000, "n_test": None, "n_val": 20}}


class BenchmarkError(ValueError):
    """Bad input, found before any training."""


def parse_method(token: str) -> tuple[str, str | None, str | None]:
    """``"lorapt@3e-4,1e-3"`` -> ``("lorapt", "3e-4", "1e-3")``: method, rate of every group (or of the adapter
    group when a second rate follows), rate of the decoder + head group; rates in their one spelling."""
    from hippo_peft.trainers.budget import format_rate
    match = _METHOD_TOKEN.match(token)
    if not match or match["method"] not in all_methods():
        raise BenchmarkError(f"Unknown method '{token}'. Choose from: {', '.join(all_methods())} (nnunet = nnU-Net's "
                             f"default trainer from scratch, nnunet-ft = the same pre-trained on the source), "
                             f"optionally with learning rates: lorapt@3e-4 or lorapt@3e-4,1e-3 (adapter, decoder).")
    method, rates = match["method"], []
    for rate in (match["lr"], match["dlr"]):
        try:
            rates.append(None if rate is None else format_rate(float(rate)))
        except ValueError:
            raise BenchmarkError(f"'{token}': '{rate}' is not a learning rate > 0 (write e.g. 3e-4).") from None
    if rates[1] is not None and method not in paper_methods():
        raise BenchmarkError(f"'{token}': two rates (adapter, decoder + head) need a method that trains both, one "
                             f"of {', '.join(paper_methods())}; give {method} one rate.")
    return method, rates[0], rates[1]


def rate_suffix(token: str) -> str:
    """The trainer-name suffix of a method token's rates: ``_lr3e-4_dlr1e-3`` (empty without rates)."""
    _, lr, dlr = parse_method(token)
    return (f"_lr{lr}" if lr else "") + (f"_dlr{dlr}" if dlr else "")


@dataclass
class Settings:
    """Everything that defines a benchmark; stored as ``benchmark.json`` in the work folder."""

    target: str
    source: str
    source_kind: str  # dataset | checkpoint | label-shift | none (only nnU-Net from scratch)
    archs: list
    methods: list  # method tokens, possibly with rates (parse_method)
    shots: list
    draws: int
    seed: int
    preset: str
    iterations: list  # budgets: one run per method, draw and budget
    source_iterations: int
    device: str
    test_cases: list
    source_cases: list  # label-shift only: target cases used (merged) for pre-training, never drawn or tested
    train_draws: dict  # str(k) -> list of draws (lists of case ids)
    val_cases: list = None  # scored apart from the test set; never trained on, never drawn
    folds: list = None  # [k, draw] of each nnU-Net fold in splits_final.json, in order of first use
    settings_version: int = SETTINGS_VERSION  # see SETTINGS_VERSION

    def __post_init__(self):
        self.val_cases = list(self.val_cases or [])
        if self.folds is None:
            self.folds = [[k, d] for k in self.shots for d in range(self.draws)]


@dataclass(frozen=True)
class Run:
    arch: str | None  # None for nnU-Net's own network
    method: str  # token, possibly with rates: lorapt@3e-4
    k: int
    draw: int
    fold: int
    iterations: int

    @property
    def name(self) -> str:
        return f"{self.arch + '-' if self.arch else ''}{self.method}-k{self.k}-d{self.draw}-{self.iterations}it"

    @property
    def base_method(self) -> str:
        return parse_method(self.method)[0]


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


def _check_complete(raw: Path, cases: list[str]) -> None:
    """Every image and label of ``cases`` decodes to its end (a cut-short .nii.gz would read with zeros)."""
    from hippo_peft.image_check import IncompleteImageError, check_complete
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending, channels = dataset_json["file_ending"], len(dataset_json["channel_names"])
    problems = []
    for case in cases:
        for f in [raw / "labelsTr" / f"{case}{ending}"] + [raw / "imagesTr" / f"{case}_{c:04d}{ending}"
                                                            for c in range(channels)]:
            try:
                check_complete(f)
            except IncompleteImageError as e:
                problems.append(str(e))
    if problems:
        raise BenchmarkError(f"{len(problems)} file(s) of {raw} are cut short or corrupt: " + "; ".join(problems[:10])
                             + (" ..." if len(problems) > 10 else "") + ". Copy them again; nothing was trained.")


def _case_list(value) -> list[str]:
    """Case ids from a list, or from a text file (one id per line) given as a one-element list."""
    if value and len(value) == 1 and Path(value[0]).is_file():
        return [line.strip() for line in Path(value[0]).read_text().splitlines() if line.strip()]
    return list(value or [])


def resolve_settings(target: str, source: str | None = None, archs=("unetr",), methods=None,
                     shots=(5, 10, 20), draws: int = 3, seed: int = 0, preset: str | None = None,
                     iterations=None, source_iterations: int | None = None, device: str = "cpu",
                     n_test: int | None = -1, test_cases=None, train_draws_file: str | None = None,
                     n_source: int = 40, n_val: int = -1) -> Settings:
    """Check every input and fix the draws; raises :class:`BenchmarkError` before anything is trained.

    ``n_test=-1`` takes the device profile's test-set size; ``None`` takes every labelled case not drawn.
    ``n_val=-1`` takes the profile's validation-set size (drawn after the test set, before the draws); 0: none.
    ``iterations``: one budget or a list of budgets.
    """
    if device not in PROFILES:
        raise BenchmarkError(f"Unknown device '{device}'; use cpu or cuda.")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise BenchmarkError("--device cuda, but torch sees no CUDA device here. Use --device cpu.")
    profile = PROFILES[device]
    methods = default_methods() if methods is None else methods
    if not methods:
        raise BenchmarkError(f"No method given. Choose from: {', '.join(all_methods())}.")
    methods = list(dict.fromkeys(methods))
    for token in methods:
        parse_method(token)
    bad_archs = [a for a in archs if a not in ARCHS]
    if bad_archs or not archs:
        raise BenchmarkError(f"Unknown backbone(s) {', '.join(bad_archs)}; choose from {', '.join(sorted(ARCHS))}.")
    preset = preset or profile["preset"]
    if preset not in PRESETS["unetr"]:
        raise BenchmarkError(f"Unknown preset '{preset}'; choose from {', '.join(sorted(PRESETS['unetr']))}.")
    shots = sorted(set(int(k) for k in shots))
    if not shots or shots[0] < 1 or draws < 1:
        raise BenchmarkError(f"Need shot counts >= 1 and draws >= 1 (got shots {shots}, draws {draws}).")
    if iterations is None or iterations == []:
        iterations = [profile["iterations"]]
    iterations = sorted(set(int(n) for n in ([iterations] if isinstance(iterations, int) else iterations)))
    source_iterations = source_iterations or profile["source_iterations"]
    from hippo_peft.trainers.budget import split_budget
    for n in (*iterations, source_iterations):
        try:
            split_budget(n)
        except ValueError as e:
            raise BenchmarkError(str(e)) from None

    target_path = Path(target).resolve()
    _, cases = labelled_cases(target_path)
    if any(parse_method(m)[0] != "nnunet" for m in methods):
        source_kind, source = _resolve_source(source, target_path)
    else:  # nnU-Net from scratch only: nothing is pre-trained
        source_kind, source = "none", ""
    if source_kind == "checkpoint" and any(parse_method(m)[0] == "nnunet-ft" for m in methods):
        raise BenchmarkError(f"nnunet-ft pre-trains nnU-Net's own U-Net on the source, so it needs a source dataset "
                             f"or '{LABEL_SHIFT}', not a checkpoint ({source}). Drop nnunet-ft or give a dataset.")
    if source_kind == "dataset" and any(parse_method(m)[0] == "nnunet-ft" for m in methods):
        source_channels = len(labelled_cases(Path(source))[0]["channel_names"])
        target_channels = len(labelled_cases(target_path)[0]["channel_names"])
        if source_channels != target_channels:
            raise BenchmarkError(
                f"nnunet-ft: the source has {source_channels} input channel(s), the target {target_channels}; "
                f"nnU-Net's -pretrained_weights needs the same number (only our transformer trainers map channels). "
                f"Drop nnunet-ft, or use a source with {target_channels} channel(s) or '{LABEL_SHIFT}'.")
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
    if n_val == -1:
        n_val = profile["n_val"]
    if n_val < 0 or (n_val and n_val >= len(pool)):
        raise BenchmarkError(f"--n-val {n_val}: need between 0 and {len(pool) - 1} of the {len(pool)} labelled "
                             f"cases left after the test set{' and the label-shift source' if source_cases else ''}.")
    val_cases = sorted(random.Random(f"{seed}-val").sample(pool, n_val)) if n_val else []
    pool = [c for c in pool if c not in set(val_cases)]

    if train_draws_file:
        train_draws = _read_draws(Path(train_draws_file), shots, draws, cases)
    else:
        too_many = [k for k in shots if k > len(pool)]
        if too_many:
            raise BenchmarkError(
                f"k = {', '.join(map(str, too_many))} is larger than the {len(pool)} labelled cases available for "
                f"training ({len(cases)} labelled - {len(set(test_cases) | set(source_cases) | set(val_cases))} in the "
                f"test set{', the validation set' if val_cases else ''}"
                f"{' and the label-shift source' if source_cases else ''}). Use smaller --shots or a smaller test "
                f"(or validation) set.")
        train_draws = {str(k): [sorted(random.Random(f"{seed}-k{k}-d{d}").sample(pool, k)) for d in range(draws)]
                       for k in shots}
    drawn = {c for ds in train_draws.values() for d in ds for c in d}
    if set(val_cases) & drawn:
        raise BenchmarkError(f"Training draws contain validation cases: {', '.join(sorted(set(val_cases) & drawn))}"
                             f". Use --n-val 0 with a draws file that uses them, or other draws.")
    if not test_cases:  # default: every labelled case not drawn
        test_cases = sorted(c for c in available if c not in drawn and c not in set(val_cases))
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
    _check_complete(target_path, sorted(drawn | set(test_cases) | set(val_cases) | set(source_cases)))
    return Settings(target=str(target_path), source=source, source_kind=source_kind, archs=list(archs),
                    methods=list(methods), shots=shots, draws=draws, seed=seed, preset=preset, iterations=iterations,
                    source_iterations=source_iterations, device=device, test_cases=sorted(test_cases),
                    source_cases=source_cases, train_draws=train_draws, val_cases=val_cases)


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
    """This command's runs, ordered so that every method is compared on one draw (at every budget) before the next
    draw starts."""
    runs = []
    for k in s.shots:
        for d in range(s.draws):
            fold = s.folds.index([k, d])
            for n in s.iterations:
                for arch in s.archs:
                    runs += [Run(arch, m, k, d, fold, n) for m in s.methods if parse_method(m)[0] not in NNUNET_METHODS]
                runs += [Run(None, m, k, d, fold, n) for m in s.methods if parse_method(m)[0] in NNUNET_METHODS]
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
        """Start a new benchmark, or resume / extend one with the same fixed settings (FIXED_SETTINGS); never
        reuses a folder it did not make. ``s`` keeps this command's methods, budgets, shots and draws; the folder's
        ``benchmark.json`` records the union and the fold of every (k, draw) ever used."""
        if self.settings_file.is_file():
            old = json.loads(self.settings_file.read_text())
            if old.get("settings_version", 1) != s.settings_version:
                raise BenchmarkError(
                    f"{self.root} holds a benchmark made with hippo_peft settings version "
                    f"{old.get('settings_version', 1)}; this hippo_peft writes version {s.settings_version} (2: since "
                    f"0.2 the adapter methods also train the CNN decoder; 3: validation cases and the budget in every "
                    f"run's name), so its runs cannot be mixed with new ones. Start a new --workdir; keep the old "
                    f"one's report as it is.")
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
                     "methods": list(dict.fromkeys(old["methods"] + s.methods)), "draws": max(old["draws"], s.draws)}
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


def check_source_checkpoint(checkpoint: str, plans_file: Path, arch: str, trust_pickle: bool = False) -> None:
    """Refuse a checkpoint that does not fit the planned ``arch`` network (another backbone or preset)."""
    from hippo_peft.import_weights import network_from_plans
    from hippo_peft.weights import WeightsMismatchError, read_state_dict, transfer_weights

    network, in_channels = network_from_plans(plans_file)
    try:
        report = transfer_weights(network, read_state_dict(checkpoint, trust_pickle), in_channels)
    except WeightsMismatchError as e:
        name = get_arch(arch).network_class_name.rsplit(".", 1)[-1]
        raise BenchmarkError(f"--source {checkpoint} does not fit the {name} planned for this benchmark ({plans_file.stem})"
                             f": {e}") from None
    print(f"source checkpoint fits {arch}: {report.format()}")


# ------------------------------------------------------------------------------------------------ the benchmark
class Benchmark:
    def __init__(self, settings: Settings, workdir: str | Path, echo: bool = True, trust_pickle: bool = False):
        self.s = settings
        self.trust_pickle = trust_pickle
        self.w = Workdir(Path(workdir).resolve())
        self.echo = echo
        self.w.open(self.s)
        self.env = nnunet_env(self.w.root / "nnunet")
        self.env["nnUNet_compile"] = "f"  # compilation time would dominate these short runs
        if trust_pickle:  # the user's opt-in for the --source checkpoint, logged by every run that loads it
            from hippo_peft.safe_load import TRUST_ENV
            self.env[TRUST_ENV] = "1"
            print(f"--trust-pickle: the source checkpoint may be unpickled without the allow-list ({TRUST_ENV}=1 "
                  f"for every nnUNetv2_train run of this command).")
        self.raw, self.pre, self.results = (Path(self.env[k]) for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                                                         "nnUNet_results"))
        self.target_json, _ = labelled_cases(Path(self.s.target))
        self.target_name = f"Dataset{TARGET_ID}_BenchmarkTarget"
        self.source_name = f"Dataset{SOURCE_ID}_BenchmarkSource"

    # names
    def plans(self, arch: str | None, method: str = "nnunet") -> str:
        if arch:
            return f"nnUNetPlans_{get_arch(arch).plans_suffix}_{self.s.preset}"
        # nnunet-ft: the same plans under their own name, so that its folders do not meet nnunet's
        return FINETUNE_PLANS if parse_method(method)[0] == "nnunet-ft" else "nnUNetPlans"

    def trainer(self, run: Run) -> str:
        from hippo_peft.trainers import trainer_name
        base = "nnUNetTrainer" if run.arch is None else trainer_name(run.arch, run.base_method)
        return f"{base}_{run.iterations}it{rate_suffix(run.method)}"

    def fold_dir(self, run: Run) -> Path:
        return (self.results / self.target_name / f"{self.trainer(run)}__{self.plans(run.arch, run.method)}"
                                                  f"__3d_fullres" / f"fold_{run.fold}")

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
        hp = console_script("hippo-peft")
        for arch in s.archs:
            if not self.w.done(f"plan-{arch}"):
                self._cmd([hp, "plan", "-d", str(TARGET_ID), "--arch", arch, "--preset", s.preset, "-np", "1",
                           "--no-preprocess", "--overwrite"], "plan")
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
        # nnU-Net's "validation" of a fold is what its final validation predicts: our validation and test cases
        splits = [{"train": folder["train_draws"][str(k)][d], "val": sorted(s.val_cases + s.test_cases)}
                  for k, d in folder["folds"]]
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
        self._source_data()
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
        fold = self.results / self.source_name / f"{trainer}__{SOURCE_NNUNET_PLANS}__3d_fullres" / "fold_all"
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
        print(f"pre-training nnU-Net's U-Net on the source for {s.source_iterations} iterations ...", flush=True)
        self._cmd([console_script("nnUNetv2_train"), str(SOURCE_ID), "3d_fullres", "all", "-tr", trainer, "-p",
                   SOURCE_NNUNET_PLANS, "-device", s.device], "source-nnunet")
        self.w.mark("source-nnunet")
        return str(fold / "checkpoint_final.pth")

    def execute(self, run: Run, checkpoint: str | None) -> dict:
        fold = self.fold_dir(run)
        if fold.exists():
            shutil.rmtree(fold)  # unfinished: no run record was written
        cmd = [console_script("nnUNetv2_train"), str(TARGET_ID), "3d_fullres", str(run.fold), "-tr",
               self.trainer(run), "-p", self.plans(run.arch, run.method), "-device", self.s.device]
        if checkpoint:
            cmd += ["-pretrained_weights", checkpoint]
        seconds = run_logged(cmd, self.env, self.w.logs / f"{run.name}.log", echo=False)  # progress bar instead
        method, lr, dlr = parse_method(run.method)
        test, val = self._evaluate(fold, self.s.test_cases), self._evaluate(fold, self.s.val_cases)
        record = {"run": run.name, **asdict(run), "method": method, "method_token": run.method, "lr": lr,
                  "decoder_lr": dlr, "trainer": self.trainer(run), "plans": self.plans(run.arch, run.method),
                  "train_cases": self.s.train_draws[str(run.k)][run.draw], "n_test": len(self.s.test_cases),
                  "n_val": len(self.s.val_cases), "trust_pickle": self.trust_pickle,
                  "wall_seconds": round(seconds, 1), **self._cost(run, fold), **test,
                  "val_per_case": val.get("per_case", {}), "val_summary": val.get("summary")}
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

    def _evaluate(self, fold: Path, cases: list[str]) -> dict:
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

        from hippo_peft.image_check import check_complete
        from hippo_peft.metrics import case_metrics, label_regions
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
                raise RuntimeError(f"nnU-Net's validation wrote no prediction {pred_file}; see the run's log.")
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
        runs = planned_runs(self.s)
        todo = [r for r in runs if not self.w.record(r).is_file()]
        if len(todo) < len(runs):
            print(f"resuming: {len(runs) - len(todo)} of {len(runs)} runs already finished in {self.w.root}")
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
    # "started to learn" is judged on these: a case whose prediction holds no foreground at all, or misses a label
    empty = sum(all(c[n]["volume_predicted"] == 0 for n in regions) for c in per_case.values())
    missing = sum(any(c[n]["volume_predicted"] == 0 and c[n]["volume_reference"] > 0 for n in regions)
                  for c in per_case.values())
    return {"regions": out, "mean_dice": float(np.mean(singles)) if singles else None, "empty_predictions": empty,
            "predictions_missing_a_label": missing, "cases": len(per_case)}


def write_folder_report(workdir: str) -> Path:
    """The report of every finished run in a benchmark work folder, written to its ``report/``; trains nothing and
    reads only the folder's own records (so it also works while a benchmark is running)."""
    from types import SimpleNamespace

    from hippo_peft.benchmark_report import write_report
    w = Workdir(Path(workdir).resolve())
    if not w.settings_file.is_file():
        raise BenchmarkError(f"{w.root} holds no benchmark.json: not a work folder of `hippo-peft benchmark`.")
    records = [json.loads(f.read_text()) for f in sorted(w.runs.glob("*.json"))]
    if not records:
        raise BenchmarkError(f"{w.root} has no finished run yet (runs/ is empty): nothing to report.")
    settings = w.settings()
    write_report(records, SimpleNamespace(preset=settings["preset"], device=settings["device"]), w.report)
    return w.report / "benchmark.md"


def run_benchmark(workdir: str, trust_pickle: bool = False, **kwargs) -> list[dict]:
    settings = resolve_settings(**kwargs)
    if settings.source_kind == "checkpoint":  # readable, finite and safe to load, before anything is written
        from hippo_peft.weights import read_state_dict
        read_state_dict(settings.source, trust_pickle)
    return Benchmark(settings, workdir, trust_pickle=trust_pickle).run()
