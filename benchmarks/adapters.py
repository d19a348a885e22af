"""Per adaptation method, side by side with full fine-tuning in one run: trainable parameters, seconds per training
step and peak memory, adapter file size, and inference time of the adapted vs the merged vs the base network.

Every (backbone, preset, method) runs in its own subprocess so that its peak memory is its own; methods use the
configs of our nnU-Net trainers: ``nnUNetTrainer_<BACKBONE>_<METHOD>`` (method ``lorapt`` ...: the papers' setting,
adapter + CNN decoder blocks + head) and ``nnUNetTrainer_<BACKBONE>_<METHOD>_Strict`` (``lorapt-strict`` ...: adapter +
head). One step is
forward + cross-entropy + backward + AdamW on batch 2 at the patch sizes `hippo-peft plan` gives the MSD
hippocampus crops. Peak memory: on CPU the process's peak resident set while training minus its resident set before
the network was built (interpreter and libraries), with the kernel's high-water mark reset after the network is
built and decomposed so that the one-off SVD does not count; on CUDA ``torch.cuda.max_memory_allocated``. Times are medians over ``--steps`` steps after one warm-up step;
inference (batch 1, no grad) of the base, the adapted and a merged copy is timed in the same process before training.

    python benchmarks/adapters.py --arch unetr swinunetr --preset compact paper --steps 5 --threads 2 \\
        --out benchmarks/results/adapters_cpu.json

``--counts-only`` builds and injects without timing anything (trainable counts and adapter file sizes, seconds).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATCH = {"unetr": [48, 64, 48], "swinunetr": [64, 64, 64]}
if importlib.util.find_spec("hippo_peft") is None:  # not installed: this checkout's library (its trainers/ and
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # planners/ need the install: bash scripts/setup.sh)
from hippo_peft.experiments.benchmark import adapter_methods  # noqa: E402  (every setting of every registered method)


def known_methods() -> list[str]:
    """Full fine-tuning (the reference) and every setting of every registered method."""
    return ["full", *adapter_methods()]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def measure(arch: str, preset: str, method: str, steps: int, threads: int, device: str, batch: int = 2,
            counts_only: bool = False) -> dict:
    import torch
    from safetensors.torch import save_file

    from hippo_peft import adapters
    from hippo_peft import trainers
    from hippo_peft.networks import build_network, get_arch, get_preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    baseline_kib = _rss_kib("VmRSS")  # interpreter + libraries, before any tensor of ours
    net = build_network(get_arch(arch).network_class_name, get_preset(arch, preset), PATCH[arch], 1, 3).to(dev)
    x = torch.randn(batch, 1, *PATCH[arch], device=dev)
    y = torch.randint(0, 3, (batch, *PATCH[arch]), device=dev)
    tmp = Path(tempfile.mkdtemp())
    torch.save(net.state_dict(), tmp / "full.pth")
    result = {"arch": arch, "preset": preset, "method": method, "patch": PATCH[arch], "batch": batch,
              "device": device, "threads": threads, "weights_bytes": (tmp / "full.pth").stat().st_size}

    def infer_time(model, n=max(3, steps)) -> float:
        model.eval()
        times = []
        with torch.no_grad():
            for i in range(n + 1):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x[:1])
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - start)
        model.train()
        return statistics.median(times)

    if counts_only:
        if method != "full":
            adapters.inject(net, getattr(trainers, trainers.trainer_name(arch, method)).adapter_config())
            save_file(adapters.adapter_state_dict(net), str(tmp / "adapter.safetensors"))
            result["adapter_bytes"] = (tmp / "adapter.safetensors").stat().st_size
        report = adapters.trainable_report(net)
        return {**result, "trainable": report.trainable, "total": report.total, "percent": report.percent}
    # inference first, all in this process and state: base, adapted, merged (a merged copy; speed does not depend
    # on the adapter's values)
    result["infer_s_base"] = infer_time(net)
    if method != "full":
        t0 = time.perf_counter()
        trainer = getattr(trainers, trainers.trainer_name(arch, method))
        adapters.inject(net, trainer.adapter_config())
        result["inject_s"] = time.perf_counter() - t0
        result["infer_s_adapted"] = infer_time(net)
        if method != "hyps":  # HyPS's serial adapters cannot be folded (see hippo_peft.adapters.hyps)
            merged = adapters.merge(copy.deepcopy(net))
            result["infer_s_merged"] = infer_time(merged)
            del merged
    report = adapters.trainable_report(net)
    result.update(trainable=report.trainable, total=report.total, percent=report.percent)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak()
    times = []
    for i in range(steps + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step allocates optimizer state and warms caches
            times.append(time.perf_counter() - start)
    result["s_per_step_median"] = statistics.median(times)
    result["s_per_step_all"] = times
    result["peak_MiB"] = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
                          else (_rss_kib("VmHWM") - baseline_kib) / 1024)
    if method != "full":
        save_file(adapters.adapter_state_dict(net), str(tmp / "adapter.safetensors"))
        result["adapter_bytes"] = (tmp / "adapter.safetensors").stat().st_size
    return result


def trains(method: str) -> str:
    return "adapter + head" if method.endswith("-strict") else TRAINS[method]


def counts_table(results: list[dict]) -> str:
    lines = ["| backbone | preset | method | trains | trainable | % of network | adapter file |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        size = f"{r['adapter_bytes'] / 2**10:,.0f} KiB" if "adapter_bytes" in r else "-"
        lines.append(f"| {r['arch']} | {r['preset']} | {r['method']} | {trains(r['method'])} | {r['trainable']:,} | "
                     f"{r['percent']:.3f} | {size} |")
    return "\n".join(lines)


TRAINS = {"full": "everything", "headonly": "head", "decoderonly": "decoder blocks + head",
          "cnnonly": "skip encoders + decoder blocks + head",
          **{m: "adapter + decoder blocks + head" for m in ("lorapt", "hyps", "pdora", "lora", "dora", "pissa")}}


def table(results: list[dict]) -> str:
    if "s_per_step_median" not in results[0]:
        return counts_table(results)
    full = {(r["arch"], r["preset"]): r for r in results if r["method"] == "full"}
    lines = ["| backbone | preset | method | trainable | % of network | s / step | step vs full | peak MiB | "
             "peak vs full | adapter file | file vs weights | inference adapted / merged vs base |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = full.get((r["arch"], r["preset"]))
        step = r["s_per_step_median"] / f["s_per_step_median"] if f else float("nan")
        peak = r["peak_MiB"] / f["peak_MiB"] if f else float("nan")
        if r["method"] == "full":
            size, ratio, infer = "-", "-", f"base {r['infer_s_base']:.3f} s"
        else:
            size = f"{r['adapter_bytes'] / 2**10:.0f} KiB"
            ratio = f"{100 * r['adapter_bytes'] / r['weights_bytes']:.2f} %"
            base = r["infer_s_base"]  # measured in the same process, just before injection
            merged = f"{r['infer_s_merged'] / base:.2f}x" if "infer_s_merged" in r else "not mergeable"
            infer = f"{r['infer_s_adapted'] / base:.2f}x / {merged}"
        lines.append(f"| {r['arch']} | {r['preset']} | {r['method']} | {r['trainable']:,} | {r['percent']:.3f} | "
                     f"{r['s_per_step_median']:.2f} | {step:.2f} | {r['peak_MiB']:.0f} | {peak:.2f} | {size} | "
                     f"{ratio} | {infer} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", default=["unetr", "swinunetr"])
    p.add_argument("--preset", nargs="+", default=["compact"])
    methods_known = known_methods()
    p.add_argument("--method", nargs="+", default=methods_known)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write every measurement here as JSON")
    p.add_argument("--counts-only", action="store_true", help="trainable counts and file sizes only, no timing")
    p.add_argument("--one", nargs=3, metavar=("ARCH", "PRESET", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.threads, args.device, counts_only=args.counts_only)))
        return
    unknown = sorted(set(args.method) - set(methods_known))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {methods_known}")
    methods = ["full"] + [m for m in args.method if m != "full"]  # the reference first
    results = []
    for arch in args.arch:
        for preset in args.preset:
            for method in methods:
                print(f"{arch} {preset} {method} ...", file=sys.stderr, flush=True)
                proc = subprocess.run([sys.executable, __file__, "--one", arch, preset, method, "--steps",
                                       str(args.steps), "--threads", str(args.threads), "--device", args.device]
                                      + (["--counts-only"] if args.counts_only else []),
                                      capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(
                                          args.threads)))
                if proc.returncode:
                    sys.exit(f"{arch} {preset} {method} failed:\n{proc.stderr[-3000:]}")
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
