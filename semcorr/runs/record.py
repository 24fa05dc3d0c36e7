"""What a run records of itself, and the context every run starts in.

One function, `run_record`, builds the config.json of every kind of run (evaluation, grid search,
ensemble, weight search, single pair, fine-tuning):

    {"kind": ..., "settings": the resolved settings, "resolved": what they resolved to once loaded
     (weights files and their hashes, image sizes and patch grids, pair-list fingerprint, ...),
     "environment": start time, host, versions, git commit, device, command}

`start_run` is the one setup before a run works: the output folder created and tried, the seeds set,
the start time taken (a RunContext, passed on instead of its parts).
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from semcorr.config.settings import REPO_ROOT, DataSettings, OutputSettings, as_record, from_record
from semcorr.runs.folders import Run, check_output_dir

PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "pillow", "safetensors")


@dataclass(frozen=True)
class RunContext:
    """When and how a run started."""

    started: float = field(default_factory=time.time)
    command: str = field(default_factory=lambda: " ".join(sys.argv))
    startup_s: float | None = field(default_factory=lambda: startup_seconds())  # the process's, before the run


def startup_seconds() -> float | None:
    """Seconds from the process's start to now (its imports and argument parsing) when the process runs one of
    the entry scripts, from Linux's /proc (10 ms resolution); None elsewhere (a notebook, a test, another OS)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main is None or Path(main).resolve().parent != REPO_ROOT:
        return None
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def start_run(output: OutputSettings, *, flag: str = "--output-dir") -> RunContext:
    """Before any work: the output folder created and tried with a test file, the seeds set, the clock started."""
    check_output_dir(output.output_dir, flag)
    seed_everything(output.seed)
    return RunContext()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds code that uses the global generator)
    torch.manual_seed(seed)


def run_record(kind: str, settings: object, *, resolved: dict, context: RunContext, device: object, **more) -> dict:
    """config.json of a run of `kind`: its settings (and `more` settings, each under its name), what they
    resolved to, and the environment."""
    recorded = {**as_record(settings), **{name: as_record(value) for name, value in more.items()}}
    return {"kind": kind, "settings": recorded, "resolved": resolved, "environment": environment(device, context)}


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


def environment(device: object, context: RunContext) -> dict[str, object]:
    """Start time, versions, commit (+dirty), host and device: what a reader needs to reproduce a run."""
    import torch

    device = torch.device(device)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(context.started)),
        "host": platform.node(),
        "python": sys.version.split()[0],
        "packages": versions,
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "command": context.command,
    }


def data_of(run: Run) -> DataSettings:
    """The data settings a run read its pairs with, at the folder it actually read them from."""
    data = from_record(DataSettings, run.config["settings"]["data"])
    return replace(data, root=run.config["resolved"].get("data_root") or data.root)


def pairs_of_run(run: Run) -> dict:
    """The run's pairs, reloaded from its dataset with its keypoint conventions (for drawing them), by pair_id."""
    from semcorr.data.datasets import load_pairs

    return {p.pair_id: p for p in load_pairs(data_of(run)).pairs}
