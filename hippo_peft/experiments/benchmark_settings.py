"""What a benchmark is: its methods (derived from the method registry), its settings (checked against the data
before anything is written or trained), its runs and its k-shot draws. :mod:`.benchmark` runs them."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from hippo_peft.errors import HippoPeftError
from hippo_peft.networks.presets import ARCHS, PRESETS


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


# The version of the work-folder layout (benchmark.json, run names with the budget, validation cases, the papers'
# trainable sets; 4: the head starts from the source, head-fresh runs are '+freshhead') this code reads and writes; a
# work folder of another version is refused.
SETTINGS_VERSION = 4
# Fixed by the first command on a work folder; the rest (archs, methods, shots, draws, iterations) may vary.
FIXED_SETTINGS = ("target", "source", "source_kind", "seed", "preset", "source_iterations", "device", "test_cases",
                  "val_cases", "source_cases", "settings_version")
_METHOD_TOKEN = re.compile(r"^(?P<method>[a-z-]+)(?:@(?P<lr>[^,]+)(?:,(?P<dlr>.+))?)?$")
# "+<option>" at the end of a token; letters only, so that a rate written 1e+3 is not taken for one
_TOKEN_OPTION = re.compile(r"^(?P<body>.+?)(?:\+(?P<option>[a-z]+))?$")
FRESH_HEAD = "freshhead"  # lorapt+freshhead: the segmentation head starts fresh instead of from the source's
LABEL_SHIFT = "label-shift"
DEFAULT_SOURCE = "Dataset002_BraTS2015mini"  # looked for beside the target dataset
TARGET_ID, SOURCE_ID = 961, 962
FINETUNE_PLANS = "nnUNetPlans_finetune"  # nnunet-ft on the target: nnU-Net's stock plans, own folder name
SOURCE_NNUNET_PLANS = "nnUNetPlans_fromTarget"  # the target's stock plans moved to the source (nnunet-ft)
# Per device: network size, iterations per run, source pre-training iterations, test cases (None: all not drawn).
# CPU: 500 iterations, chosen on the validation curves of the evidence (docs/evidence_record.md, "Learning curves"): the
# smallest budget at which LoRA-PT, full fine-tuning and nnU-Net had all started to learn and LoRA-PT had reached
# its plateau (validation Dice 0.398 / 0.801 / 0.796 / 0.802 at 250 / 500 / 1000 / 2000); source 1,500 as there.
PROFILES = {"cpu": {"preset": "compact", "iterations": 500, "source_iterations": 1500, "n_test": 40, "n_val": 20},
            "cuda": {"preset": "paper", "iterations": 2500, "source_iterations": 25000, "n_test": None, "n_val": 20}}


class BenchmarkError(HippoPeftError, ValueError):
    """Bad input, found before any training."""


def _split_option(token: str) -> tuple[str, str | None]:
    """``"lorapt@3e-4+freshhead"`` -> ``("lorapt@3e-4", "freshhead")``."""
    match = _TOKEN_OPTION.match(token)
    if match["option"] is not None and match["option"] != FRESH_HEAD:
        raise BenchmarkError(f"'{token}': unknown option '+{match['option']}'; the one option is +{FRESH_HEAD} "
                             f"(the segmentation head starts fresh instead of from the source's), e.g. "
                             f"lorapt@3e-4+{FRESH_HEAD}.")
    return match["body"], match["option"]


def parse_method(token: str) -> tuple[str, str | None, str | None]:
    """``"lorapt@3e-4,1e-3"`` -> ``("lorapt", "3e-4", "1e-3")``: method, rate of every group (or of the adapter
    group when a second rate follows), rate of the decoder + head group; rates in their one spelling. A
    ``+freshhead`` suffix is accepted (see :func:`head_init`) and not part of the result."""
    from hippo_peft.trainers.budget import format_rate
    body, option = _split_option(token)
    match = _METHOD_TOKEN.match(body)
    if not match or match["method"] not in all_methods():
        raise BenchmarkError(f"Unknown method '{token}'. Choose from: {', '.join(all_methods())} (nnunet = nnU-Net's "
                             f"default trainer from scratch, nnunet-ft = the same pre-trained on the source), "
                             f"optionally with learning rates: lorapt@3e-4 or lorapt@3e-4,1e-3 (adapter, decoder), "
                             f"and +{FRESH_HEAD} for a head that starts fresh: lorapt@3e-4+{FRESH_HEAD}.")
    method, rates = match["method"], []
    for rate in (match["lr"], match["dlr"]):
        try:
            rates.append(None if rate is None else format_rate(float(rate)))
        except ValueError:
            raise BenchmarkError(f"'{token}': '{rate}' is not a learning rate > 0 (write e.g. 3e-4).") from None
    if rates[1] is not None and method not in paper_methods():
        raise BenchmarkError(f"'{token}': two rates (adapter, decoder + head) need a method that trains both, one "
                             f"of {', '.join(paper_methods())}; give {method} one rate.")
    if option == FRESH_HEAD and method in NNUNET_METHODS:
        raise BenchmarkError(f"'{token}': +{FRESH_HEAD} is for our backbones' methods; nnU-Net's own loader "
                             f"(-pretrained_weights) always leaves its segmentation layers fresh, so {method}'s head "
                             f"is fresh already. Write {method}" + (f"@{match['lr']}" if match["lr"] else "") + ".")
    return method, rates[0], rates[1]


def head_init(token: str) -> str:
    """Where a method token's segmentation head starts: ``"source"`` (the source's head, the default of our
    backbones' methods) or ``"fresh"`` (``+freshhead``, and nnU-Net's methods: its loader skips the head)."""
    method = parse_method(token)[0]
    return "fresh" if method in NNUNET_METHODS or _split_option(token)[1] == FRESH_HEAD else "source"


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
    # [k, draw] (repeat 0) or [k, draw, repeat] of each nnU-Net fold in splits_final.json, in order of first use:
    # a repeat trains on its draw's cases in a fold (so a fold folder) of its own
    folds: list = None
    settings_version: int = SETTINGS_VERSION  # see SETTINGS_VERSION
    repeats: int = 1  # runs per (method, draw, budget): nnU-Net does not seed its runs, so each repeat differs

    def __post_init__(self):
        self.val_cases = list(self.val_cases or [])
        if self.folds is None:  # repeat 0 first, so its fold numbers do not depend on --repeats
            self.folds = [fold_key(k, d, r) for r in range(self.repeats) for k in self.shots
                          for d in range(self.draws)]


def fold_key(k: int, draw: int, repeat: int = 0) -> list[int]:
    """A fold's entry in Settings.folds: ``[k, draw]`` for repeat 0 (as before repeats existed), else
    ``[k, draw, repeat]``."""
    return [k, draw] if repeat == 0 else [k, draw, repeat]


@dataclass(frozen=True)
class Run:
    arch: str | None  # None for nnU-Net's own network
    method: str  # token, possibly with rates: lorapt@3e-4
    k: int
    draw: int
    fold: int
    iterations: int
    repeat: int = 0  # repeat 0 keeps the name runs had before repeats existed

    @property
    def name(self) -> str:
        return (f"{self.arch + '-' if self.arch else ''}{self.method}-k{self.k}-d{self.draw}-{self.iterations}it"
                + (f"-r{self.repeat}" if self.repeat else ""))

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
                     n_source: int = 40, n_val: int = -1, repeats: int = 1) -> Settings:
    """Check every input and fix the draws; raises :class:`BenchmarkError` before anything is trained.

    ``n_test=-1`` takes the device profile's test-set size; ``None`` takes every labelled case not drawn.
    ``n_val=-1`` takes the profile's validation-set size (drawn after the test set, before the draws); 0: none.
    ``iterations``: one budget or a list of budgets. ``repeats``: runs of every (method, draw, budget), each in its
    own nnU-Net fold.
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
    if repeats < 1:
        raise BenchmarkError(f"--repeats {repeats}: give 1 (each run once) or more.")
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
    # A given source is always resolved, also for nnU-Net from scratch alone: a label-shift source fixes the test
    # set and the draws, so a later "--methods nnunet" on the same folder must see the same cases.
    if source is not None or any(parse_method(m)[0] != "nnunet" for m in methods):
        source_kind, source = _resolve_source(source, target_path)
    else:  # nnU-Net from scratch only and no source given: nothing is pre-trained
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
                    source_cases=source_cases, train_draws=train_draws, val_cases=val_cases, repeats=repeats)


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


def planned_runs(s: Settings, only_draws=None) -> list[Run]:
    """This command's runs, ordered so that every method is compared on one draw (at every budget) before the next
    repeat or draw starts. ``only_draws``: the draw numbers to run (default: all of ``s.draws``), e.g. repeats of
    the one draw that lost a label."""
    if only_draws is not None:
        bad = sorted(set(only_draws) - set(range(s.draws)))
        if bad or not only_draws:
            raise BenchmarkError(f"--only-draws {' '.join(map(str, only_draws))}: draws are numbered 0 to "
                                 f"{s.draws - 1} (--draws {s.draws}); give numbers in that range.")
    runs = []
    for k in s.shots:
        for d in range(s.draws) if only_draws is None else sorted(set(only_draws)):
            for r in range(s.repeats):
                fold = s.folds.index(fold_key(k, d, r))
                for n in s.iterations:
                    for arch in s.archs:
                        runs += [Run(arch, m, k, d, fold, n, r) for m in s.methods
                                 if parse_method(m)[0] not in NNUNET_METHODS]
                    runs += [Run(None, m, k, d, fold, n, r) for m in s.methods if parse_method(m)[0] in NNUNET_METHODS]
    return runs


# ------------------------------------------------------------------------------------------------ work folder
