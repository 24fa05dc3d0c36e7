"""Atomic file writes and file hashing: the one way every module writes a file that others read."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary file next to `path` (same suffix), then rename it: readers never
    see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (temporary file + rename)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def write_csv(path: str | Path, table: pd.DataFrame) -> None:
    """Write CSV atomically, floats at full precision so that figures recompute exactly."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save, atomically."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


_DIGESTS: dict[tuple[str, int, int, int, str], str] = {}


def file_sha256(path: str | Path, chunk: int = 1 << 22, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (sha256 unless another hashlib `algorithm` is named).

    Cached per file (real path, inode, size, modification time) and algorithm: a weights file of
    gigabytes is read once however often it is asked about, and again once it changes.
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_ino, stat.st_size, stat.st_mtime_ns, algorithm)
    if key not in _DIGESTS:
        digest = hashlib.new(algorithm)
        with open(real, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
