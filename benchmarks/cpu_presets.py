"""CPU cost of one training step per backbone x preset, at the patch sizes `hippo-peft plan` gives the MSD
hippocampus crops (UNETR 48x64x48, SwinUNETR 64x64x64), batch 2, AdamW, cross-entropy.

Each configuration runs in a fresh subprocess so that peak memory (ru_maxrss) is its own. Reports the median of
--steps timed steps after one warm-up step, and peak resident memory minus the interpreter + torch baseline.

    python benchmarks/cpu_presets.py --steps 5 --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

PATCH = {"unetr": [48, 64, 48], "swinunetr": [64, 64, 64]}


def measure(arch: str, preset: str, steps: int, threads: int, batch: int) -> dict:
    import torch

    from hippo_peft.networks import build_network, get_arch, get_preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net = build_network(get_arch(arch).network_class_name, get_preset(arch, preset), PATCH[arch], 1, 3)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 1, *PATCH[arch])
    y = torch.randint(0, 3, (batch, *PATCH[arch]))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step allocates optimizer state and warms caches
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"arch": arch, "preset": preset, "patch": PATCH[arch], "batch": batch,
            "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
            "s_per_step_median": statistics.median(times), "s_per_step_all": times,
            "peak_rss_MiB": peak / 1024, "peak_rss_above_baseline_MiB": (peak - base_rss) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=["tiny", "compact", "paper"])
    parser.add_argument("--archs", nargs="+", default=["unetr", "swinunetr"])
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.threads, args.batch)))
        return
    rows = []
    for arch in args.archs:
        for preset in args.presets:
            out = subprocess.run([sys.executable, __file__, "--one", arch, preset, "--steps", str(args.steps),
                                  "--threads", str(args.threads), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"done {arch} {preset}", file=sys.stderr, flush=True)
    print(f"CPU: {platform.processor() or platform.machine()}, {args.threads} threads, batch {args.batch}, "
          f"median of {args.steps} steps\n")
    print("| backbone | preset | patch | parameters | s / training step (median) | peak memory above baseline |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['preset']} | {'x'.join(map(str, r['patch']))} | {r['params_M']:.1f} M | "
              f"{r['s_per_step_median']:.2f} | {r['peak_rss_above_baseline_MiB']:.0f} MiB |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
