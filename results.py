"""Results folders: the one module that writes and reads every kind of run folder.

Each run writes a new timestamped folder, `<output dir>/<YYYYmmdd-HHMMSS>_<parts>/`, never
overwriting one. Every folder holds `config.json`, whose "kind" says what ran, and the files of
that kind (RUN_FILES below), each written atomically:

    evaluation     metrics.json, per_pair.csv, per_keypoint.csv   (+ vis/*.png with --save-vis)
    grid           best_parameters.json, grid_search_results.csv  (+ grid_search_heatmap.png)
    weight_search  best_weights.json, weight_search_results.csv   (+ weight_search.png)
    finetune       train_log.csv                                  (+ train_curves.png, best.pt, last.pt)
    match          matches.json                                   (+ matches.png, heatmap_<i>.png)

`write_run` / `write_file` write them and `read_run` reads them back: `read_run(p).read(name)`
returns exactly what `write_file(p, kind, name, value)` was given (JSON as dicts, CSV as DataFrames
with their id columns as strings). Folders written before config.json had a "kind" are recognised
by their files.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fileio import write_csv, write_json
from settings import AVERAGINGS, REPO_ROOT

if TYPE_CHECKING:
    from pairs import PairSet

PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "pillow", "safetensors")
CONFIG = "config.json"

# kind -> file name -> file; the first file of a kind also recognises folders written without a kind
RUN_FILES: dict[str, dict[str, str]] = {
    "evaluation": {"metrics": "metrics.json", "per_pair": "per_pair.csv", "per_keypoint": "per_keypoint.csv"},
    "grid": {"best_parameters": "best_parameters.json", "grid": "grid_search_results.csv"},
    "weight_search": {"best_weights": "best_weights.json", "weights": "weight_search_results.csv"},
    "finetune": {"train_log": "train_log.csv"},
    "match": {"matches": "matches.json"},
}
PICTURES = {
    "grid": "grid_search_heatmap.png",
    "weight_search": "weight_search.png",
    "finetune": "train_curves.png",
    "match": "matches.png",
}
# CSV columns read back as text (ids like "007" or "1" must not become numbers)
TEXT_COLUMNS = {
    "per_keypoint": {"pair_id": str, "category": str, "kp_id": str},
    "per_pair": {"pair_id": str, "category": str, "src_image": str, "trg_image": str, "src_path": str, "trg_path": str},
}
INTEGER_COLUMNS = {"grid": {"window": "Int64"}}


def pck_column(alpha: float, averaging: str) -> str:
    """The column of a grid or weight-search table that holds PCK@alpha with one averaging."""
    return f"pck@{alpha:g}_{averaging}"


class RunFolderError(ValueError):
    """A folder that is not a results folder of the expected kind, or a damaged one."""


# --- writing ---------------------------------------------------------------------------------------


def check_output_dir(output_dir: str | Path, flag: str = "--output-dir") -> Path:
    """The folder runs are written into, created and tried with a test file before any work starts."""
    path = Path(output_dir)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"{flag} {output_dir}: {blocker} is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise PermissionError(
            f"{flag} {output_dir} cannot be written ({err.strerror}); choose a folder you can write to"
        ) from None
    return path


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


def file_path(run_dir: str | Path, kind: str, name: str) -> Path:
    """Where file `name` of a run of `kind` lives."""
    files = _files_of(kind)
    if name not in files:
        raise ValueError(f"a {kind} run has no file {name!r}; its files are {', '.join(files)}")
    return Path(run_dir) / files[name]


def write_config(run_dir: str | Path, kind: str, config: dict) -> None:
    """config.json: the run's kind, then its settings."""
    _files_of(kind)
    write_json(Path(run_dir) / CONFIG, {"kind": kind, **{k: v for k, v in config.items() if k != "kind"}})


def write_file(run_dir: str | Path, kind: str, name: str, content: dict | pd.DataFrame) -> Path:
    """Write one file of a run: a dict as JSON, a DataFrame as CSV (as RUN_FILES says)."""
    path = file_path(run_dir, kind, name)
    if path.suffix == ".json":
        write_json(path, content)
    else:
        write_csv(path, content)
    return path


def write_run(run_dir: str | Path, kind: str, config: dict, **files: dict | pd.DataFrame) -> Path:
    """config.json and the given files of a run; config.json first, so that a reader knows the kind."""
    write_config(run_dir, kind, config)
    for name, content in files.items():
        write_file(run_dir, kind, name, content)
    return Path(run_dir)


# --- reading ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """A results folder: its kind, its config.json, and its files on demand (`read`, each file read once)."""

    path: Path
    kind: str
    config: dict
    _files: dict[str, dict | pd.DataFrame] = field(default_factory=dict, repr=False)  # files read so far

    @property
    def name(self) -> str:
        return self.path.name

    def has(self, name: str) -> bool:
        return file_path(self.path, self.kind, name).is_file()

    def read(self, name: str) -> dict | pd.DataFrame:
        """File `name` of this run, as write_file was given it (a table as a copy the caller may change)."""
        if name not in self._files:
            self._files[name] = self._load(name)
        value = self._files[name]
        return value.copy() if isinstance(value, pd.DataFrame) else value

    def _load(self, name: str) -> dict | pd.DataFrame:
        path = file_path(self.path, self.kind, name)
        if not path.is_file():
            raise RunFolderError(f"{self.path}: no {path.name} (this {self.kind} run is incomplete)")
        if path.suffix == ".json":
            return _read_json(path)
        dtypes = {**TEXT_COLUMNS.get(name, {}), **INTEGER_COLUMNS.get(name, {})}
        try:
            return pd.read_csv(path, dtype=dtypes, keep_default_na=name not in TEXT_COLUMNS)
        except (ValueError, pd.errors.ParserError) as err:
            raise RunFolderError(f"{path}: unreadable CSV ({err})") from None

    # the files of an evaluation, by their usual names
    @property
    def metrics(self) -> dict:
        return self.read("metrics")

    def keypoints(self) -> pd.DataFrame:
        return self.read("per_keypoint")

    def pairs(self) -> pd.DataFrame:
        return self.read("per_pair")


def read_run(path: str | Path, kinds: tuple[str, ...] | None = None) -> Run:
    """The run folder at `path` (of one of `kinds`, if given)."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"no such results folder: {path}")
    config_path = path / CONFIG
    config = _read_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise RunFolderError(f"{config_path}: not a JSON object (a damaged or foreign {CONFIG})")
    kind = config.get("kind") or _kind_from_files(path)
    if kind is None:
        raise RunFolderError(
            f"{path} is not a results folder: no {CONFIG} and none of "
            f"{', '.join(next(iter(f.values())) for f in RUN_FILES.values())}"
        )
    if kinds is not None and kind not in kinds:
        raise RunFolderError(f"{path} holds a {kind} run, not {' or '.join(kinds)}")
    if not config and kind != "match":
        raise RunFolderError(f"{path} is not a complete {kind} results folder: no {CONFIG}")
    return Run(path, kind, config)


def find_runs(paths: list[str | Path], kinds: tuple[str, ...] | None = None) -> list[Path]:
    """Results folders among `paths` and below them (of `kinds`, if given), oldest first by folder name."""
    markers = {CONFIG, *(name for files in RUN_FILES.values() for name in files.values())}
    found = set()
    for path in map(Path, paths):
        if not path.exists():
            raise RunFolderError(f"no such results folder: {path}")
        candidates = dict.fromkeys([path, *(p.parent for p in path.rglob("*") if p.name in markers)])
        for folder in candidates:
            kind = _kind_of(folder)
            if kind is not None and (kinds is None or kind in kinds):
                found.add(folder)
    return sorted(found, key=lambda p: (p.name, str(p)))


def _kind_of(folder: Path) -> str | None:
    config = folder / CONFIG
    if config.is_file():
        try:
            kind = json.loads(config.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind in RUN_FILES:
            return kind
    return _kind_from_files(folder)


def _kind_from_files(folder: Path) -> str | None:
    for kind, files in RUN_FILES.items():
        if (folder / next(iter(files.values()))).is_file():
            return kind
    if (folder / "last.pt").is_file():
        return "finetune"
    return None


def _files_of(kind: str) -> dict[str, str]:
    if kind not in RUN_FILES:
        raise ValueError(f"unknown run kind {kind!r}; kinds: {', '.join(RUN_FILES)}")
    return RUN_FILES[kind]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: unreadable JSON ({err})") from None


# --- an evaluation's metrics.json --------------------------------------------------------------------


UNITS = {
    "metrics.json": "PCK in % (pck@alpha: per_image and per_keypoint, see averaging)",
    "per_pair.csv": "pck@alpha in %; norm_L (the threshold length L) and the sizes in pixels",
    "per_keypoint.csv": "src/gt/pred x, y, distance and norm_L in pixels of the original image; similarity is the "
    "cosine similarity at the matched patch (-1..1); correct@alpha is distance <= alpha * norm_L",
}


def protocol(dataset: str, split: str, norm: str, coordinates: str = "centre") -> dict[str, object]:
    """What every figure of the run's files means: dataset, split, threshold, averagings and units."""
    from pck import NORM_DESCRIPTIONS

    origin = "pixel centres" if coordinates == "centre" else "0 at the image's edge (the original's convention)"
    return {
        "dataset": dataset,
        "split": split,
        "pck_norm": norm,
        "threshold": NORM_DESCRIPTIONS[norm],
        "averaging": AVERAGINGS,
        "unit": "%",
        "units": {**UNITS, "coordinates": f"x right, y down, integer values at {origin}"},
    }


def feature_timings(stats: list[dict]) -> dict[str, float | None]:
    """Extraction figures of one or more feature sets, summed."""
    keys = ("extraction_s", "cache_read_s", "images_extracted", "images_from_cache")
    total = {k: sum(s[k] for s in stats) for k in keys}
    rate = total["images_extracted"] / total["extraction_s"] if total["extraction_s"] > 0 else None
    return {**total, "images_per_s": rate}


def evaluation_metrics(
    eval_set: PairSet,
    *,
    norm: str,
    coordinates: str = "centre",
    table: pd.DataFrame,
    summary: dict,
    skipped: dict[str, int],
    feature_stats: list[dict],
    matching_s: float,
    started: float,
) -> dict:
    """metrics.json: protocol, PCK summary (and PCK per difficulty level where pairs carry SPair-71k's flags),
    counts and timings (extraction summed over members)."""
    import pck

    timings = feature_timings(feature_stats)
    if len(feature_stats) > 1:
        timings["per_member"] = [feature_timings([s]) for s in feature_stats]
    flags = pd.DataFrame([{"pair_id": p.pair_id, **p.flags} for p in eval_set.pairs])
    if pck.has_difficulty_flags(flags):  # SPair-71k: PCK by viewpoint, scale, truncation and occlusion level
        summary = {**summary, "difficulty": pck.difficulty(table, flags)}
    return {
        "protocol": protocol(eval_set.dataset, eval_set.split, norm, coordinates),
        **summary,
        "counts": {
            "pairs": len(eval_set.pairs),
            "keypoints": len(table),
            "images": feature_stats[0]["images"],
            "pairs_skipped": skipped,
            "notes": eval_set.notes,
        },
        "timings": {**timings, "matching_s": matching_s, "total_s": time.time() - started},
    }


# --- provenance ------------------------------------------------------------------------------------


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


def environment(device: object, started: float | None = None) -> dict[str, object]:
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
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "host": platform.node(),
        "python": sys.version.split()[0],
        "packages": versions,
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "command": " ".join(sys.argv),
    }
