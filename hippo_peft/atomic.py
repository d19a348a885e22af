"""Files and folders users keep are written atomically: a killed command leaves the old state or the new one.

Files: written under a hidden temporary name in the same folder, then ``os.replace``d onto the final name.
Folders: built in a hidden temporary sibling, then renamed; with ``overwrite`` the old folder is first moved aside
and deleted only after the new one is in place. Temporaries of a killed run carry a hidden name no command accepts
and are removed by the next run of the same output.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from hippo_peft.errors import OutputExistsError


def _temporary(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def _remove_stale(path: Path) -> None:
    """Temporaries a killed run of this output left behind."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on error it is removed.

    Args:
        path: the file to write (its folder must exist).
    """
    path = Path(path)
    _remove_stale(path)
    tmp = _temporary(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """``Path.write_text``, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False):
    """Yield a new, empty temporary folder beside ``path``; on success it becomes ``path`` (replacing an existing
    one only with ``overwrite``), on error it is removed and ``path`` is untouched.

    Args:
        path: the folder to create.
        overwrite: replace an existing folder (moved aside, deleted once the new one is in place).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it. Nothing was written.")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = _temporary(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if path.exists():
            old = _temporary(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
