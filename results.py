"""Results folders: a new timestamped folder per run, files written atomically, and provenance."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

REPO_ROOT = Path(__file__).resolve().parent
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "pillow", "safetensors")


def new_run_dir(output_dir: str | Path, parts: list[str], started: float | None = None) -> Path:
    """Create `<output_dir>/<YYYYmmdd-HHMMSS>_<parts...>/`; never reuses an existing folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started or time.time()))
    base = Path(output_dir) / "_".join([stamp, *(p.replace("/", "-") for p in parts if p)])
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary file next to `path` (same suffix), then rename it: readers never
    see half a file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (temporary file + rename)."""
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def write_csv(path: str | Path, table: pd.DataFrame) -> None:
    """Write CSV atomically, floats at full precision so that figures recompute exactly."""
    atomic_write(Path(path), lambda tmp: table.to_csv(tmp, index=False))


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save, atomically."""
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str | None:
    """HEAD of this repository, with '+dirty' when the work tree has changes; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def environment(device: torch.device) -> dict[str, object]:
    """Versions, commit, host and device: what a reader needs to reproduce a run."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "command": " ".join(sys.argv),
    }
