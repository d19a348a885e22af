"""The GPU check's Python steps (run by ``scripts/gpu_check.sh``; see the README's "GPU check").

Every step appends JSON lines to ``--jsonl`` as it goes (one per case checked), so that a step killed by its
timeout leaves what it had already checked. ``--device cuda`` checks the CUDA path as nnU-Net runs it (fp16
autocast, a GradScaler); ``--device cpu`` is the dry run's stand-in (bf16 autocast, a CPU GradScaler).

    python scripts/gpu_check_steps.py versions --device cuda --jsonl results.jsonl
    python scripts/gpu_check_steps.py adapters --device cuda --jsonl results.jsonl [--compile lorapt hyps pdora]
    python scripts/gpu_check_steps.py data --out DIR [--sample RAW_DATASET --n 20]
    python scripts/gpu_check_steps.py seed-checkpoint --plans PLANS.json --out src.safetensors
    python scripts/gpu_check_steps.py train-stats FOLD_DIR ... --jsonl results.jsonl
    python scripts/gpu_check_steps.py compare PRED_A PRED_B --jsonl results.jsonl
    python scripts/gpu_check_steps.py summary results.jsonl
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

if importlib.util.find_spec("hippo_peft") is None:  # not installed: this checkout's library (its trainers/ and
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # planners/ need the install: bash scripts/setup.sh)

# Tolerances of the property matrix under autocast, relative to the output's largest magnitude. One fp16 rounding is
# 2^-11 (5e-4), one bf16 rounding 2^-8 (4e-3); an exact start and a merge add or fold a few matrix products per
# layer, so the outputs may differ by tens of roundings: 2e-2 for fp16 and 5e-2 for bf16. Float32 (no autocast)
# must match to 1e-4, as in the CPU tests.
TOLERANCE = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 1e-4}
COMPILE_DEFAULT = ("lorapt", "hyps", "pdora")
PACKAGES = ("torch", "torchvision", "nnunetv2", "monai", "SimpleITK", "nibabel", "batchgenerators",
            "batchgeneratorsv2", "acvl-utils", "dynamic-network-architectures", "blosc2", "safetensors", "peft",
            "numpy", "scipy", "scikit-image", "timm")


def emit(path: str | None, record: dict) -> None:
    """Append one JSON line (and echo it): written at once, so a killed step keeps what it reported."""
    line = json.dumps(record, default=str)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def autocast_dtype(device: str) -> str:
    return "float16" if device == "cuda" else "bfloat16"


# ------------------------------------------------------------------------------------------------ a. versions
def _origin(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    return str(Path(spec.origin).resolve().parent) if spec and spec.origin else None


def cmd_versions(args) -> int:
    import importlib
    import importlib.metadata as md
    import platform

    import torch
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    imports = {}
    for module in ("nnunetv2.run.run_training", "nnunetv2.inference.predict_from_raw_data", "monai.networks.nets",
                   "hippo_peft.trainers", "SimpleITK"):
        try:
            mod = importlib.import_module(module)
            imports[module] = "stub" if getattr(mod, "HIPPO_PEFT_STUB", False) else "ok"
        except Exception as e:  # noqa: BLE001 -- reported, not raised: the step says what is missing
            imports[module] = f"{type(e).__name__}: {e}"
    cuda = torch.cuda.is_available()
    record = {"step": "versions", "ok": args.device != "cuda" or cuda, "python": platform.python_version(),
              "device": args.device, "cuda_available": cuda, "cuda": torch.version.cuda,
              "gpu": torch.cuda.get_device_name(0) if cuda else None,
              "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1) if cuda else None,
              "packages": versions, "imports": imports, "hippo_peft_from": _origin("hippo_peft")}
    record["ok"] = record["ok"] and all(v in ("ok", "stub") for k, v in imports.items() if k != "SimpleITK")
    emit(args.jsonl, record)
    return 0 if record["ok"] else 1


# ------------------------------------------------------------------------------------------------ b. adapters
def _network(arch: str, preset: str, device):
    import torch

    from hippo_peft.networks import build_network, get_arch, get_preset
    torch.manual_seed(0)
    patch = {"unetr": [48, 64, 48], "swinunetr": [64, 64, 64]}[arch]
    net = build_network(get_arch(arch).network_class_name, get_preset(arch, preset), patch, 1, 3).to(device)
    return net, patch


def _phantom_batch(patch, device, n: int = 2):
    """Hippocampus-like phantoms, z-scored and zero-padded to the patch: random noise can leave a small ReLU
    bottleneck (HyPS's serial adapter at the tiny preset) dead for every token, which says nothing about CUDA."""
    import numpy as np
    import torch

    from hippo_peft.experiments.synthetic import make_phantom
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for _ in range(n):
        img, lab = make_phantom(rng)
        img = (img - img.mean()) / img.std()
        pad = [(0, p - s) for s, p in zip(img.shape, patch)]
        xs.append(np.pad(img, pad)[None])
        ys.append(np.pad(lab, pad))
    return (torch.from_numpy(np.stack(xs)).float().to(device), torch.from_numpy(np.stack(ys)).long().to(device))


def _rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def check_method(method: str, arch: str, preset: str, device: str, compile_it: bool = False) -> dict:
    """Exact start, merge equivalence and gradients of one method under autocast with a GradScaler."""
    import copy

    import torch
    import torch.nn.functional as F

    from hippo_peft import adapters as A
    from hippo_peft import trainers
    dev = torch.device(device)
    dtype = autocast_dtype(device)
    tol = TOLERANCE[dtype]
    net, patch = _network(arch, preset, dev)
    x, y = _phantom_batch(patch, dev)
    config = getattr(trainers, trainers.trainer_name(arch, method)).adapter_config()
    out = {"step": "adapters", "method": method, "arch": arch, "preset": preset, "autocast": dtype,
           "tolerance": tol, "compile": compile_it}

    def forward(model, inp):
        with torch.autocast(dev.type, dtype=getattr(torch, dtype)):
            return model(inp).float()

    net.eval()
    with torch.no_grad():
        y0 = forward(net, x)
        A.inject(net, config)
        y1 = forward(net, x)
        for p in A.trainable_parameters(net):  # move away from the start so merge has something to fold
            p.add_(0.02 * torch.randn_like(p))
        y2 = forward(net, x)
        merged = A.merge(copy.deepcopy(net)) if method != "hyps" else None
        y3 = forward(merged, x) if merged is not None else None
        del merged
    out["exact_start_rel_err"] = _rel(y1, y0)
    out["merge_rel_err"] = _rel(y3, y2) if y3 is not None else None
    # training: every trainable tensor gets a finite, non-zero gradient, frozen tensors stay bit-identical
    net.train()
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    adapter_state = set(A.adapter_state_dict(net))
    frozen = {n: t.detach().clone() for n, t in list(net.named_parameters()) + list(net.named_buffers())
              if n not in adapter_state}
    model = torch.compile(net) if compile_it else net
    optimizer = torch.optim.AdamW(A.trainable_parameters(net), lr=1e-3, weight_decay=0.0)
    scaler = torch.amp.GradScaler(dev.type)
    got_grad, skipped, steps, t0 = set(), 0, 0, time.perf_counter()
    while steps < 6 and (steps < 2 or set(trainable) - got_grad):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(model, x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        finite = all(p.grad is None or torch.isfinite(p.grad).all() for p in trainable.values())
        if finite:
            got_grad |= {n for n, p in trainable.items() if p.grad is not None and float(p.grad.abs().sum()) > 0}
        else:
            skipped += 1  # the scaler skips this step and lowers its scale, as in nnU-Net
        scaler.step(optimizer)
        scaler.update()
        steps += 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out["train_seconds"] = round(time.perf_counter() - t0, 2)
    out["steps"], out["skipped_steps"] = steps, skipped
    out["no_gradient"] = sorted(set(trainable) - got_grad)[:5]
    out["frozen_moved"] = [n for n, t in list(net.named_parameters()) + list(net.named_buffers())
                           if n in frozen and not torch.equal(t.detach(), frozen[n])][:5]
    out["loss_finite"] = bool(torch.isfinite(loss))
    out["ok"] = (out["exact_start_rel_err"] < tol and (out["merge_rel_err"] is None or out["merge_rel_err"] < tol)
                 and not out["no_gradient"] and not out["frozen_moved"] and out["loss_finite"])
    return out


def cmd_adapters(args) -> int:
    from hippo_peft.adapters import method_specs
    methods = args.methods or [s.name for s in method_specs()]
    failed = 0
    cases = [(m, a, False) for a in args.arch for m in methods]
    cases += [(m, args.arch[0], True) for m in args.compile]
    for method, arch, compile_it in cases:
        try:
            record = check_method(method, arch, args.preset, args.device, compile_it)
        except Exception as e:  # noqa: BLE001 -- one failing case must not hide the others
            record = {"step": "adapters", "method": method, "arch": arch, "compile": compile_it, "ok": False,
                      "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        failed += not record["ok"]
        emit(args.jsonl, record)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ c. nnU-Net runs
def cmd_data(args) -> int:
    """An nnU-Net raw dataset for the training runs: ``--sample`` copies the first ``--n`` cases of a raw dataset
    (real images; files are copied, since a link would not travel), else phantoms. Reading is set to NibabelIO:
    the GPU machine carries no SimpleITK wheel."""
    import shutil

    from hippo_peft.experiments.synthetic import write_dataset
    out = Path(args.out)
    name = f"Dataset{args.dataset_id}_GPUCheck"
    target = out / name
    if args.sample:
        src = Path(args.sample)
        dj = json.loads((src / "dataset.json").read_text())
        ending = dj["file_ending"]
        cases = sorted(p.name[: -len(ending)] for p in (src / "labelsTr").glob(f"*{ending}"))[: args.n]
        for sub in ("imagesTr", "labelsTr"):
            (target / sub).mkdir(parents=True, exist_ok=True)
        for case in cases:
            shutil.copy(src / "labelsTr" / f"{case}{ending}", target / "labelsTr")
            for img in (src / "imagesTr").glob(f"{case}_*{ending}"):
                shutil.copy(img, target / "imagesTr")
        dj = {**dj, "numTraining": len(cases)}
    else:
        write_dataset(out, name, n_train=args.n)
        dj = json.loads((target / "dataset.json").read_text())
    dj["overwrite_image_reader_writer"] = "NibabelIO"
    (target / "dataset.json").write_text(json.dumps(dj, indent=1))
    print(target)
    return 0


def cmd_seed_checkpoint(args) -> int:
    """A seeded, randomly initialised network of a plans file as safetensors: the source every run starts from."""
    import torch
    from safetensors.torch import save_file

    from hippo_peft.nnunet.import_weights import network_from_plans
    torch.manual_seed(args.seed)
    net, _ = network_from_plans(args.plans)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.out)
    print(args.out)
    return 0


def cmd_train_stats(args) -> int:
    from hippo_peft.trainers.budget import STATS_FILE
    failed = 0
    for fold in args.folds:
        fold = Path(fold)
        stats_file = fold / STATS_FILE
        record = {"step": "train", "run": fold.parent.name, "ok": stats_file.is_file()
                  and (fold / "checkpoint_final.pth").is_file()}
        if stats_file.is_file():
            stats = json.loads(stats_file.read_text())
            steps = sorted(stats["step_seconds"])
            record.update(iterations=stats["iterations"], batch_size=stats["batch_size"],
                          patch_size=stats["patch_size"], device=stats["device"], trainable=stats["trainable"],
                          total=stats["total"], s_per_step_median=steps[len(steps) // 2] if steps else None,
                          peak_memory_mib=round(stats["peak_memory_mib"], 1),
                          peak_memory_kind=stats["peak_memory_kind"])
        failed += not record["ok"]
        emit(args.jsonl, record)
    return 1 if failed else 0


def cmd_compare(args) -> int:
    """Agreement of two prediction folders (the adapted model and its merged copy): Dice of the foreground."""
    import nibabel as nib
    import numpy as np
    a, b = Path(args.pred_a), Path(args.pred_b)
    files = sorted(p.name for p in a.glob("*.nii.gz"))
    dices = []
    for name in files:
        pa, pb = (np.asarray(nib.load(str(d / name)).dataobj) for d in (a, b))
        inter, total = float(((pa > 0) & (pb > 0)).sum()), float((pa > 0).sum() + (pb > 0).sum())
        dices.append(1.0 if total == 0 else 2 * inter / total)
    record = {"step": "predict", "cases": len(files), "adapted_vs_merged_dice_min": min(dices) if dices else None,
              "ok": bool(files) and len(list(b.glob("*.nii.gz"))) == len(files) and min(dices) > 0.98}
    emit(args.jsonl, record)
    return 0 if record["ok"] else 1


# ------------------------------------------------------------------------------------------------ wheels
# The GPU image's Python packages (the device tool's KINDS.md, read 2026-11-17), normalised names
GPU_IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
ENTRY_POINTS = ("nnunetv2.run.run_training", "nnunetv2.inference.predict_from_raw_data",
                "nnunetv2.imageio.nibabel_reader_writer", "nnunetv2.experiment_planning.plan_and_preprocess_api",
                "nnunetv2.training.dataloading.nnunet_dataset", "hippo_peft.trainers", "hippo_peft.cli",
                "hippo_peft.nnunet.planning", "hippo_peft.nnunet.adapter_files", "monai.networks.nets")


def cmd_needed(args) -> int:
    """The distributions whose modules the check's code paths import, minus what the GPU image has."""
    import importlib
    import importlib.metadata as md
    import re
    for module in ENTRY_POINTS:
        importlib.import_module(module)
    owners = md.packages_distributions()
    norm = (lambda n: re.sub(r"[-_.]+", "-", n).lower())
    used = {}
    for module in list(sys.modules):
        for dist in owners.get(module.split(".")[0], []):
            used[norm(dist)] = md.version(dist)
    missing = {d: v for d, v in sorted(used.items()) if d not in GPU_IMAGE and not d.startswith("nvidia")
               and d not in ("hippo-peft",)}
    print(json.dumps(missing, indent=1))
    return 0


# ------------------------------------------------------------------------------------------------ summary
def cmd_summary(args) -> int:
    """A Markdown summary of the JSON lines (rewritten after every step, so it is there even after a timeout)."""
    records = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.strip()]
    lines = ["# GPU check", ""]
    status = [r for r in records if r.get("step") == "status"]
    lines += ["| step | status | seconds |", "|---|---|---|"]
    for r in status:
        state = "TIMED OUT" if r["timed_out"] else "ok" if r["rc"] == 0 else f"FAILED rc={r['rc']}"
        lines.append(f"| {r['name']} | {state} | {r['seconds']:.0f} |")
    ver = next((r for r in records if r.get("step") == "versions"), None)
    if ver:
        lines += ["", f"device {ver['device']}, GPU {ver['gpu']}, torch {ver['packages'].get('torch')}, CUDA "
                      f"{ver['cuda']}, Python {ver['python']}"]
    ad = [r for r in records if r.get("step") == "adapters"]
    if ad:
        lines += ["", "| method | backbone | compile | autocast | exact start | merge | skipped steps | ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in ad:
            fmt = (lambda v: "-" if v is None else f"{v:.1e}")
            lines.append(f"| {r['method']} | {r['arch']} | {r.get('compile')} | {r.get('autocast', '-')} | "
                         f"{fmt(r.get('exact_start_rel_err'))} | {fmt(r.get('merge_rel_err'))} | "
                         f"{r.get('skipped_steps', '-')} | {'yes' if r['ok'] else 'NO ' + r.get('error', '')} |")
    tr = [r for r in records if r.get("step") == "train"]
    if tr:
        lines += ["", "| run | s/step | peak MiB | trainable / total | ok |", "|---|---|---|---|---|"]
        lines += [f"| {r['run']} | {r.get('s_per_step_median', '-')} | {r.get('peak_memory_mib', '-')} | "
                  f"{r.get('trainable', '-')} / {r.get('total', '-')} | {'yes' if r['ok'] else 'NO'} |" for r in tr]
    bench = [r for r in records if r.get("step") == "bench"]
    if bench:
        lines += ["", "| benchmark: backbone | preset | method | s/step | peak MiB | trainable |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['arch']} | {r['preset']} | {r['method']} | {r.get('s_per_step_median', 0):.4f} | "
                  f"{r.get('peak_MiB', 0):.0f} | {r.get('trainable', '-')} |" for r in bench]
    for r in records:
        if r.get("step") == "predict":
            lines += ["", f"prediction: {r['cases']} case(s), adapted vs merged Dice >= "
                          f"{r['adapted_vs_merged_dice_min']}; ok {r['ok']}"]
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("versions")
    s.add_argument("--device", default="cuda")
    s.add_argument("--jsonl")
    s.set_defaults(func=cmd_versions)
    s = sub.add_parser("adapters")
    s.add_argument("--device", default="cuda")
    s.add_argument("--preset", default="tiny")
    s.add_argument("--arch", nargs="+", default=["unetr", "swinunetr"])
    s.add_argument("--methods", nargs="+")
    s.add_argument("--compile", nargs="*", default=list(COMPILE_DEFAULT))
    s.add_argument("--jsonl")
    s.set_defaults(func=cmd_adapters)
    s = sub.add_parser("data")
    s.add_argument("--out", required=True)
    s.add_argument("--sample", help="a raw nnU-Net dataset to take the first --n labelled cases from")
    s.add_argument("--n", type=int, default=20)
    s.add_argument("--dataset-id", type=int, default=980)
    s.set_defaults(func=cmd_data)
    s = sub.add_parser("seed-checkpoint")
    s.add_argument("--plans", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_seed_checkpoint)
    s = sub.add_parser("train-stats")
    s.add_argument("folds", nargs="+")
    s.add_argument("--jsonl")
    s.set_defaults(func=cmd_train_stats)
    s = sub.add_parser("compare")
    s.add_argument("pred_a")
    s.add_argument("pred_b")
    s.add_argument("--jsonl")
    s.set_defaults(func=cmd_compare)
    s = sub.add_parser("needed")
    s.set_defaults(func=cmd_needed)
    s = sub.add_parser("summary")
    s.add_argument("jsonl")
    s.set_defaults(func=cmd_summary)
    args = p.parse_args(argv)
    if getattr(args, "device", None) == "cpu":
        import torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
