"""Running nnU-Net's console commands from our orchestration (demo, benchmark): this environment's scripts, a private
nnU-Net tree, output into a log file, and failures that show the log's tail."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from hippo_peft.errors import RefusedError
from hippo_peft.nnunet.env import ext_trainer_export_line

logger = logging.getLogger(__name__)


def run_logged(cmd: list[str], env: dict, log: Path, echo: bool = True) -> float:
    """Run a console command, its output into ``log``; raise with the log's tail if it fails. Returns seconds.
    ``echo``: log the command line (INFO) first."""
    if echo:
        logger.info(f"$ {' '.join(cmd)}")
    start = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
    if proc.returncode:
        tail = "".join(open(log).readlines()[-30:])
        raise RefusedError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    return time.time() - start


def console_script(name: str) -> str:
    """A console script of this environment (works without an activated venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def nnunet_env(root: Path) -> dict:
    """This process's environment with a private nnU-Net tree under ``root``, our trainers, and low process counts
    (unless the user set them)."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"))
    env.setdefault("nnUNet_n_proc_DA", "0")
    env.setdefault("nnUNet_def_n_proc", "1")
    env["nnUNet_extTrainer"] = ext_trainer_export_line().split("=", 1)[1]
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env
