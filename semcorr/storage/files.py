"""Atomic file writes, folders made, file hashing, and what a refused torch file asks for: the one way every
module writes a file that others read, and says so in one line when the disk refuses."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


class WriteError(OSError):
    """A file or folder could not be written (a full disk, a file-size limit, no permission, a file in the way);
    the message names it and what to do."""


WHY = {
    errno.ENOSPC: "no space is left on its disk",
    errno.EFBIG: "it would exceed the file-size limit (a full disk, a quota or `ulimit -f`)",
    errno.EDQUOT: "the disk quota is used up",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "its file system is read-only",
}


def write_failure(path: str | Path, err: BaseException, *, folder: bool = False) -> WriteError:
    """The one-line error for the file (or `folder`) at `path` that could not be written because of `err`."""
    path = Path(path)
    blocker = next((p for p in ([path] if folder else []) + list(path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        why, action = f"{blocker} is a file, not a folder", "choose another path"
    elif not folder and not path.parent.is_dir():
        why, action = f"its folder {path.parent} does not exist", "create it or choose another path"
    elif isinstance(err, OSError) and err.errno in WHY:
        why, action = WHY[err.errno], "free some space or choose another folder, then run again"
    elif isinstance(err, OSError):
        why, action = err.strerror or str(err), "choose another folder, then run again"
    else:  # torch's writer reports a failed write as a RuntimeError
        why, action = "the write failed (a full disk or a file-size limit?)", "free some space, then run again"
    return WriteError(f"cannot write {path}: {why}; {action}")


def make_folder(path: str | Path) -> Path:
    """The folder at `path`, created with its parents; a WriteError naming it when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_failure(path, err, folder=True) from None
    return path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary file next to `path` (same suffix), then rename it: readers never
    see half a file. A write that fails (full disk, file-size limit, missing folder) is a WriteError naming
    `path`, and `path` keeps what it held."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        raise write_failure(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (temporary file + rename)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def write_csv(path: str | Path, table: pd.DataFrame) -> None:
    """Write CSV atomically, each float at the shortest text that reads back as the same number, so that figures
    recompute exactly: by pyarrow's writer (ten times pandas' on a run's 100,000 keypoints), or pandas' for a table
    Arrow cannot type (a column of mixed objects)."""
    atomic_write(path, lambda tmp: _to_csv(table, tmp))


def _to_csv(table: pd.DataFrame, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        arrow = pa.Table.from_pandas(table, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        table.to_csv(tmp, index=False)
        return
    with open(tmp, "wb") as f:
        pacsv.write_csv(arrow, f, pacsv.WriteOptions(quoting_style="needed"))


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save, atomically; a failed write is a WriteError naming `path`."""
    import torch

    def save(tmp: Path) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:  # torch's writer reports a full disk or a file-size limit as a RuntimeError
            raise write_failure(path, err) from None

    atomic_write(path, save)


_DIGESTS: dict[tuple[str, int, int, int, int, str], str] = {}
DOWNLOAD_RECORD = ".download-manifest.json"  # download.py's record, per folder, of the files it fetched and checked


def file_identity(stat: os.stat_result) -> dict[str, int]:
    """What tells a file's content has not changed without reading it: inode, size, modification and change
    times (the change time moves with new content even where `cp -p` or `rsync -t` put the old modification time
    back, and no tool can set it)."""
    return {"inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def file_sha256(path: str | Path, chunk: int = 1 << 22, algorithm: str = "sha256", remember: Path | None = None) -> str:
    """The hex digest of a file's bytes (sha256 unless another hashlib `algorithm` is named).

    Cached per file (real path, file_identity) and algorithm: a weights file of gigabytes is read once however
    often it is asked about, and again once it changes. A sha256 recorded for the file with its identity unchanged
    since is taken without reading the file: download.py's (its folder's DOWNLOAD_RECORD), or one an earlier run
    kept in the JSON file `remember` (which this adds to; a weights file is then read once, not by every run).
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, algorithm)
    if key in _DIGESTS:
        return _DIGESTS[key]
    records = [(Path(real).parent / DOWNLOAD_RECORD, Path(real).name), *([(remember, real)] if remember else [])]
    recorded = (recorded_sha256(f, name, stat) for f, name in records) if algorithm == "sha256" else iter(())
    digest = next(filter(None, recorded), None)
    if digest is None:
        digest = read_digest(real, chunk, algorithm)
        if remember is not None and algorithm == "sha256":
            remember_sha256(remember, real, stat, digest)
    _DIGESTS[key] = digest
    return digest


def read_digest(path: str, chunk: int, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_records(record: Path) -> dict:
    """A JSON file of {name: {"sha256", "identity", ...}}; empty when absent or unreadable."""
    try:
        records = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def recorded_sha256(record: Path, name: str, stat: os.stat_result) -> str | None:
    """The sha256 that `record` gives the file `name`, if the file's identity is the recorded one."""
    entry = read_records(record).get(name)
    if not isinstance(entry, dict) or entry.get("identity") != file_identity(stat):
        return None
    sha = entry.get("sha256")
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def remember_sha256(record: Path, name: str, stat: os.stat_result, sha: str) -> None:
    """Add a file's sha256 and identity to `record`; where it cannot be written, nothing is kept (it is only saved
    time)."""
    records = read_records(record)
    records[name] = {"sha256": sha, "identity": file_identity(stat)}
    try:
        make_folder(record.parent)
        write_json(record, records)
    except WriteError:
        pass


def code_on_load(err: BaseException) -> str | None:
    """The global a torch file asked to import when `torch.load(weights_only=True)` refused it (a file that would
    run code when unpickled), or None when `err` is another failure."""
    if not isinstance(err, pickle.UnpicklingError) or "weights only load failed" not in str(err).lower():
        return None
    named = re.search(r"GLOBAL ([\w.]+)", str(err))
    return named[1] if named else "an object that is not plain data"


def code_on_load_message(path: str | Path, name: str) -> str:
    """One line for a torch file that asks to run code when loaded."""
    return (
        f"{path} asks to run code when it is loaded (it names {name}); this toolkit loads weights only "
        "(torch.load with weights_only=True) and refuses it: never load it another way unless you trust its source"
    )
