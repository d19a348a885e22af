"""The prepared GPU check, dry-run on the CPU: the same steps and output schema as on a GPU (tiny presets, bf16
autocast with a CPU GradScaler, phantoms), and a step that times out leaves the others reported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def dry_run(tmp_path: Path, *args: str, **env) -> tuple[subprocess.CompletedProcess, list[dict], Path]:
    out = tmp_path / "out"
    full_env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "2", "nnUNet_n_proc_DA": "0", **env}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), *args], env=full_env,
                          capture_output=True, text=True, timeout=3000, cwd=tmp_path)
    results = out / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    return proc, records, out


def logs(out: Path, name: str) -> str:
    with tarfile.open(out / "logs.tar.gz") as tar:
        member = tar.extractfile(f"logs/{name}.log")
        return member.read().decode()[-4000:] if member else ""


@pytest.mark.e2e
@pytest.mark.slow
def test_dry_run_reports_every_step(tmp_path):
    from hippo_peft.adapters import method_specs
    proc, records, out = dry_run(tmp_path)
    status = {r["name"]: r for r in records if r["step"] == "status"}
    assert list(status) == ["versions", "adapters", "train", "bench"], proc.stdout + proc.stderr
    for name, r in status.items():
        assert r["rc"] == 0 and not r["timed_out"], f"{name}: {r}\n{logs(out, name)}"
    assert proc.returncode == 0
    versions = next(r for r in records if r["step"] == "versions")
    assert versions["device"] == "cpu" and versions["imports"]["hippo_peft.trainers"] == "ok"
    adapters = [r for r in records if r["step"] == "adapters"]
    methods = {s.name for s in method_specs()}
    assert {(r["method"], r["arch"]) for r in adapters if not r["compile"]} == \
        {(m, a) for m in methods for a in ("unetr", "swinunetr")}
    assert all(r["ok"] and r["autocast"] == "bfloat16" for r in adapters), [r for r in adapters if not r["ok"]]
    assert [r["method"] for r in adapters if r["compile"]] == ["lorapt"]
    train = {r["run"]: r for r in records if r["step"] == "train"}
    assert len(train) == 4 and all(r["ok"] and r["iterations"] == 4 for r in train.values()), train
    lorapt = next(r for n, r in train.items() if n.startswith("nnUNetTrainer_UNETR_LoRAPT_4it"))
    full = next(r for n, r in train.items() if n.startswith("nnUNetTrainer_UNETR_4it"))
    assert lorapt["trainable"] < full["trainable"] <= full["total"]
    predict = next(r for r in records if r["step"] == "predict")
    assert predict["ok"] and predict["cases"] == 3
    bench = [r for r in records if r["step"] == "bench"]
    assert {(r["arch"], r["method"]) for r in bench} == {(a, m) for a in ("unetr", "swinunetr")
                                                          for m in ("full", "lorapt", "hyps", "pdora")}
    summary = (out / "summary.md").read_text()
    assert all(f"| {name} | ok |" in summary for name in status)


@pytest.mark.e2e
def test_a_step_that_times_out_leaves_the_others_reported(tmp_path):
    proc, records, out = dry_run(tmp_path, "--steps", "versions,adapters,bench", GPU_CHECK_TIMEOUT_ADAPTERS="2",
                                 GPU_CHECK_BENCH_METHODS="full")
    status = {r["name"]: r for r in records if r["step"] == "status"}
    assert list(status) == ["versions", "adapters", "bench"], proc.stdout + proc.stderr
    assert status["adapters"]["timed_out"] and status["adapters"]["limit_s"] == 2
    assert status["versions"]["rc"] == 0 and status["bench"]["rc"] == 0, logs(out, "bench")
    assert [r["method"] for r in records if r["step"] == "bench"] == ["full", "full"]
    assert proc.returncode == 1
    summary = (out / "summary.md").read_text()
    assert "| adapters | TIMED OUT |" in summary and "| bench | ok |" in summary


@pytest.mark.e2e
def test_checkout_is_installed_where_python_does_not_import_it(tmp_path):
    """The GPU machine's python has no hippo_peft: the check installs this checkout (offline, like the wheels), and
    hippo_peft.trainers comes from that install, not from the source tree (forced here, where .venv has it)."""
    proc, records, out = dry_run(tmp_path, "--steps", "versions", GPU_CHECK_INSTALL_CHECKOUT="1")
    install = [r for r in records if r["step"] == "install-checkout"]
    assert install and install[0]["ok"] and install[0]["rc"] == 0, proc.stdout + proc.stderr
    versions = next(r for r in records if r["step"] == "versions")
    assert versions["imports"]["hippo_peft.trainers"] == "ok", versions
    assert not versions["hippo_peft_from"].startswith(str(REPO) + os.sep), versions["hippo_peft_from"]
    assert versions["hippo_peft_from"].endswith(os.path.join("site", "hippo_peft")), versions["hippo_peft_from"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
