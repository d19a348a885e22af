"""One loading policy for every weights file hippo_peft reads: loading never runs code from the file.

Order: a ``.safetensors`` file (or any file that starts like one) is read with safetensors; anything else with
``torch.load(weights_only=True)`` inside ``torch.serialization.safe_globals`` with exactly the non-tensor types that
nnU-Net 2.x checkpoints (ours and nnU-Net's own ``nnUNetTrainer``) carry: numpy scalars and dtypes in the logging
dict, under both the ``numpy.core`` (numpy 1) and ``numpy._core`` (numpy 2) spellings. A plain (MONAI) state dict
needs nothing beyond tensors. Anything else is refused *before* it is unpickled, naming the offending globals
(``torch.serialization.get_unsafe_globals_in_checkpoint``) and the opt-in: ``--trust-pickle`` on our commands,
``HIPPO_PEFT_TRUST_PICKLE=1`` for ``nnUNetv2_train ... -pretrained_weights`` with our trainers. The opt-in is
logged by the caller. ``hippo-peft convert-weights`` turns a trusted research checkpoint into a plain safetensors
file once, so that nothing else needs the opt-in.

Corrupt or wrong files (empty, truncated, random bytes, a directory, an image given as weights, a tampered
safetensors header) raise :class:`WeightsFileError` with one line: the file, what is wrong, what to do.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch

from hippo_peft.errors import HippoPeftError

logger = logging.getLogger(__name__)

TRUST_ENV = "HIPPO_PEFT_TRUST_PICKLE"
OPT_IN = f"--trust-pickle (or {TRUST_ENV}=1 for nnUNetv2_train)"


class WeightsFileError(HippoPeftError, ValueError):
    """A weights file that cannot be used: missing, corrupt, of another kind, or holding code; one-line message."""


class UnsafeCheckpointError(WeightsFileError):
    """A pickle checkpoint that needs globals outside the allow-list (it could run code when loaded)."""

    def __init__(self, path: Path, globals_: list[str]):
        self.globals = globals_
        super().__init__(
            f"{path}: refused to unpickle, it needs {', '.join(globals_) or 'globals outside the allow-list'} "
            f"(loading it could run code). If you trust its origin, convert it once with `hippo-peft convert-weights "
            f"{path} -o weights.safetensors --trust-pickle`, or pass {OPT_IN}.")


def _allowed_globals() -> list:
    """numpy types in nnU-Net checkpoints' logging dicts, as (object, name as pickled) for both numpy spellings."""
    import numpy as np
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    scalar = core.multiarray.scalar
    allowed = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 may pickle a dtype through its class
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType",
                     "Int8DType", "UInt8DType", "BoolDType"):
            if hasattr(dtypes, name):
                allowed.append((getattr(dtypes, name), f"numpy.dtypes.{name}"))
    return allowed


def trust_from_env() -> bool:
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def _kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:2] == b"\x1f\x8b" or head[:4] in (b"\\\x01\x00\x00", b"n+1\x00"):
        return "image"
    if head[:1] == b"\x80":  # pickle protocol 2+: torch's legacy format or a bare pickle
        return "pickle"
    return "unknown"


def _check_path(path: Path) -> None:
    if not path.exists():
        raise WeightsFileError(f"{path}: no such file. Give the path of a checkpoint (.pth/.pt) or a .safetensors "
                               f"file.")
    if path.is_dir():
        raise WeightsFileError(f"{path}: is a folder, not a weights file. For an nnU-Net fold, give its "
                               f"checkpoint_final.pth.")
    if path.stat().st_size == 0:
        raise WeightsFileError(f"{path}: the file is empty (an interrupted copy or download?). Fetch it again.")


def load_weights_file(path: str | Path, trust_pickle: bool = False):
    """The object stored in ``path`` (a dict of tensors for safetensors), read by the policy of this module.

    Args:
        path: a safetensors file, a torch checkpoint (zip or legacy format) of tensors and plain containers, or an
            nnU-Net checkpoint.
        trust_pickle: unpickle without the allow-list (only for files whose origin the user trusts).
    """
    path = Path(path)
    _check_path(path)
    kind = _kind(path)
    if kind == "image":
        raise WeightsFileError(f"{path}: this is a compressed or NIfTI image, not a weights file. Give a checkpoint "
                               f"(.pth/.pt) or a .safetensors file.")
    if kind == "safetensors" or path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsFileError(f"{path}: not a readable safetensors file ({_one_line(e)}). The file is corrupt or "
                                   f"truncated: fetch or export it again.") from None
    if kind == "unknown":
        raise WeightsFileError(f"{path}: not a torch checkpoint or safetensors file (unrecognised first bytes). Give "
                               f"a .pth/.pt checkpoint or a .safetensors file.")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise UnsafeCheckpointError(path, _unsafe_globals(path)) from None
    except Exception as e:  # noqa: BLE001 - corrupt files raise many types; one line for all
        raise WeightsFileError(f"{path}: cannot be read as a torch checkpoint ({_one_line(e)}). The file is corrupt "
                               f"or truncated: fetch it again.") from None
    # Only here, with the user's opt-in, and only for a file the allow-list refused: a warning every time.
    needs = ", ".join(_unsafe_globals(path)) or "globals outside it"
    logger.warning(f"hippo_peft: unpickling {path} without the allow-list ({needs}) because of the opt-in {OPT_IN}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise WeightsFileError(f"{path}: cannot be read as a torch checkpoint ({_one_line(e)}). The file is corrupt "
                               f"or truncated: fetch it again.") from None


def _unsafe_globals(path: Path) -> list[str]:
    """Globals the file needs that the allow-list does not hold (empty when they cannot be listed)."""
    allowed = {name for _, name in _allowed_globals()}
    if _kind(path) != "torch-zip":  # torch lists the globals of zip checkpoints only
        try:
            from torch import _weights_only_unpickler as wou
            allowed |= set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
        except (ImportError, AttributeError):
            pass
        return [g for g in _pickle_globals(path) if g not in allowed]
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError):
        return []
    return [g for g in found if g not in allowed]


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_NO_PUSH_OPS = {"PROTO", "FRAME", "STOP", "MEMOIZE", *_MEMO_PUT_OPS}


def _pickle_globals(path: Path) -> list[str]:
    """``module.name`` of every GLOBAL / STACK_GLOBAL in a non-zip pickle file, in order, read with
    ``pickletools.genops`` (a disassembler: nothing is imported or executed). torch's legacy format is several
    pickles in a row (then raw storage bytes): each is read until one does not parse. STACK_GLOBAL takes its module
    and name from the stack; we follow the string pushes and the memo (MEMOIZE / PUT, GET) that feed it, which is
    how pickle writes them, and report ``<unresolved STACK_GLOBAL>`` otherwise."""
    import pickletools
    found: list[str] = []
    with open(path, "rb") as f:
        while True:
            start = f.tell()
            stack: list = []  # what each op pushed, as far as it matters here: str, or None for anything else
            memo: dict = {}
            try:
                for op, arg, _ in pickletools.genops(f):
                    name = op.name
                    if name == "GLOBAL":  # arg: "module name"
                        found.append(".".join(str(arg).split(" ", 1)))
                        stack.append(None)
                    elif name == "STACK_GLOBAL":
                        module, attr = (stack[-2:] if len(stack) >= 2 else [None, None])
                        del stack[-2:]
                        found.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str)
                                     else "<unresolved STACK_GLOBAL>")
                        stack.append(None)
                    elif name in _STRING_OPS:
                        stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
                    elif name == "MEMOIZE":
                        memo[len(memo)] = stack[-1] if stack else None
                    elif name in _MEMO_PUT_OPS:
                        memo[arg] = stack[-1] if stack else None
                    elif name in _MEMO_GET_OPS:
                        stack.append(memo.get(arg))
                    elif name not in _NO_PUSH_OPS:
                        stack.append(None)  # a value or a stack change we need not follow: breaks a string pair
            except Exception:  # noqa: BLE001 - the end of the pickles (raw bytes, truncation): keep what was found
                break
            if f.tell() == start or not f.read(1):  # nothing parsed, or the end of the file
                break
            f.seek(-1, os.SEEK_CUR)
    return list(dict.fromkeys(found))


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0].split('. ')[0][:160]}" if text else type(error).__name__
