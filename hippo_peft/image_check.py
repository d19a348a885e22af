"""Images and label maps are read completely or not at all.

A truncated ``.nii.gz`` (an interrupted copy, a full disk) still opens in most readers: the missing voxels come back
as zeros and a volume measured from it is silently wrong. :func:`check_complete` reads the NIfTI header (NIfTI-1 and
NIfTI-2, either byte order), decompresses a ``.nii.gz`` stream to its end (a gzip stream without its end marker or
with a bad checksum fails) and checks that the voxel data the header promises is all there. Other formats are left to
their reader.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

from hippo_peft.errors import HippoPeftError

_CHUNK = 1 << 20


class IncompleteImageError(HippoPeftError, ValueError):
    """An image or label map whose file is cut short or does not decode; the message names the file."""


def _needed_bytes(header: bytes, name: str) -> int:
    """vox_offset + voxel bytes promised by a NIfTI-1/2 header."""
    for order in "<>":
        size = struct.unpack(f"{order}i", header[:4])[0]
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(f"{order}8h", header[40:56])
            bitpix = struct.unpack(f"{order}h", header[72:74])[0]
            offset = int(struct.unpack(f"{order}f", header[108:112])[0])
            break
        if size == 540 and len(header) >= 540:
            bitpix = struct.unpack(f"{order}h", header[14:16])[0]
            dims = struct.unpack(f"{order}8q", header[16:80])
            offset = struct.unpack(f"{order}q", header[168:176])[0]
            break
    else:
        raise IncompleteImageError(f"{name}: not a NIfTI file (no valid header); the file is corrupt or cut short.")
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 0 for d in dims[1:ndim + 1]) or bitpix <= 0:
        raise IncompleteImageError(f"{name}: the NIfTI header is invalid (dims {dims[:ndim + 1]}, bitpix {bitpix}).")
    return max(offset, 348) + math.prod(dims[1:ndim + 1]) * bitpix // 8


def check_complete(path: str | Path) -> None:
    """Raise :class:`IncompleteImageError` if a NIfTI file (``.nii`` / ``.nii.gz``) is cut short or does not
    decode; other formats pass unchecked."""
    path = Path(path)
    name = path.name
    if name.endswith(".nii.gz"):
        total, header = 0, b""
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    if len(header) < 540:
                        header += chunk[:540 - len(header)]
                    total += len(chunk)
        except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise IncompleteImageError(f"{name}: the compressed stream is cut short or corrupt ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else 'no detail'}); copy the file again."
                                       ) from None
    elif name.endswith(".nii"):
        total = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(540)
    else:
        return
    needed = _needed_bytes(header, name)
    if total < needed:
        raise IncompleteImageError(f"{name}: {total:,} bytes of image data where the header promises {needed:,}: "
                                   f"the file is cut short; copy it again.")
