"""nnU-Net's environment: the path variables, the nnUNet_extTrainer shim folder, and the opt-in in-tree shim."""
from __future__ import annotations

import os
from pathlib import Path

import hippo_peft
from hippo_peft.errors import HippoPeftError, OutputExistsError

NNUNET_PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
EXT_TRAINER_DIR = Path(hippo_peft.__file__).resolve().parent / "nnunet_ext"
SHIM_NAME = "hippo_peft_shim.py"
SHIM_MARKER = "# written by `hippo-peft install-shim`"
SHIM_SOURCE = f'''{SHIM_MARKER}; remove it with `hippo-peft uninstall-shim`.
# Lets nnU-Net find hippo_peft's trainers without the nnUNet_extTrainer variable. Guarded: if hippo_peft is
# uninstalled, nnU-Net keeps working.
try:
    from hippo_peft.trainers import *  # noqa: F401,F403
except ImportError:
    pass
'''


class NnUNetEnvError(HippoPeftError, RuntimeError):
    pass


def require_nnunet_paths(*names: str) -> dict[str, str]:
    """Return the requested nnU-Net path variables or fail with the export lines to fix them."""
    names = names or NNUNET_PATH_VARS
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        lines = "\n".join(f"  export {n}=/path/to/{n}" for n in missing)
        raise NnUNetEnvError(f"nnU-Net's environment variable(s) {', '.join(missing)} are not set. Set them, e.g.\n"
                             f"{lines}\n(see nnU-Net's documentation/setting_up_paths.md).")
    return {n: os.environ[n] for n in names}


def ext_trainer_export_line() -> str:
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    paths = current if str(EXT_TRAINER_DIR) in current else current + [str(EXT_TRAINER_DIR)]
    return f"export nnUNet_extTrainer={os.pathsep.join(paths)}"


def nnunet_trainer_dir() -> Path:
    import nnunetv2
    return Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"


def install_shim(trainer_dir: Path | None = None) -> Path:
    """Write the guarded re-export module into nnunetv2's trainer folder. Refuses to replace a foreign file."""
    target = (trainer_dir or nnunet_trainer_dir()) / SHIM_NAME
    if target.exists() and SHIM_MARKER not in target.read_text():
        raise OutputExistsError(f"{target} exists and was not written by hippo-peft; not touching it.")
    target.write_text(SHIM_SOURCE)
    return target


def uninstall_shim(trainer_dir: Path | None = None) -> Path | None:
    """Remove our shim; returns the removed path, or None when there was none. Never removes a foreign file."""
    target = (trainer_dir or nnunet_trainer_dir()) / SHIM_NAME
    if not target.exists():
        return None
    if SHIM_MARKER not in target.read_text():
        raise OutputExistsError(f"{target} was not written by hippo-peft; not removing it.")
    target.unlink()
    return target
