"""Results folders: the one module that writes and reads every kind of run folder (its format).

Each run writes a new timestamped folder, `<output dir>/<YYYYmmdd-HHMMSS>_<parts>/`, never
overwriting one. Every folder holds `config.json`, whose "kind" says what ran, and the files of
that kind (RUN_FILES below), each written atomically; a run that writes its files at its end
writes them into a hidden staging folder first (`write_new_run`), so that a run that fails while
writing (a full disk) leaves no folder that looks like a run:

    evaluation     metrics.json, per_pair.csv, per_keypoint.csv   (+ per_keypoint_kap.csv with --kap,
                                                                     vis/*.png with --save-vis)
    grid           best_parameters.json, grid_search_results.csv  (+ grid_search_heatmap.png)
    weight_search  best_weights.json, weight_search_results.csv   (+ weight_search.png)
    finetune       train_log.csv                                  (+ train_curves.png, best.pt, last.pt)
    match          matches.json, matches.csv                      (+ matches.png, heatmap_<i>.png)

`write_run` / `write_file` write them and `read_run` reads them back: `read_run(p).read(name)`
returns exactly what `write_file(p, kind, name, value)` was given (JSON as dicts, CSV as DataFrames
with their id columns as strings). What config.json holds is semcorr/runs/record.py's.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import pck
from semcorr.storage.files import make_folder, write_csv, write_failure, write_json

CONFIG = "config.json"
STAGING_SUFFIX = ".partial"  # a run folder being written (write_new_run); never read as a run

# kind -> file name -> file
RUN_FILES: dict[str, dict[str, str]] = {
    "evaluation": {
        "metrics": "metrics.json",
        "per_pair": "per_pair.csv",
        "per_keypoint": "per_keypoint.csv",
        "per_keypoint_kap": "per_keypoint_kap.csv",
    },
    "grid": {"best_parameters": "best_parameters.json", "grid": "grid_search_results.csv"},
    "weight_search": {"best_weights": "best_weights.json", "weights": "weight_search_results.csv"},
    "finetune": {"train_log": "train_log.csv"},
    "match": {"matches": "matches.json", "match_table": "matches.csv"},
    "benchmarks": {"benchmarks": "benchmarks.csv"},
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
    "per_keypoint_kap": {"pair_id": str, "category": str, "kp_id": str},
    "per_pair": {"pair_id": str, "category": str, "src_image": str, "trg_image": str, "src_path": str, "trg_path": str},
    "match_table": {"pair_id": str, "id": str},
    "benchmarks": {"run": str},
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


def run_name(parts: list[str], started: float | None = None) -> str:
    """`<YYYYmmdd-HHMMSS>_<parts...>`: a run folder's name."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started or time.time()))
    return "_".join([stamp, *(p.replace("/", "-") for p in parts if p)])


def new_run_dir(output_dir: str | Path, parts: list[str], started: float | None = None) -> Path:
    """Create `<output_dir>/<YYYYmmdd-HHMMSS>_<parts...>/`; never reuses an existing folder (fine-tuning, whose
    folder fills while it runs; a run whose files are written at its end uses write_new_run)."""
    base = Path(output_dir) / run_name(parts, started)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        except OSError as err:
            raise write_failure(candidate, err, folder=True) from None


def write_new_run(
    output_dir: str | Path, parts: list[str], started: float | None, write: Callable[[Path], object]
) -> Path:
    """A new run folder `<output_dir>/<YYYYmmdd-HHMMSS>_<parts...>/` holding what write(folder) puts in it.

    write works in a hidden staging folder (`.<name>.<random>.partial`), renamed into place once it returns
    and removed when it fails (a full disk, an interruption): a folder with a run's name is always complete.
    """
    base = make_folder(output_dir) / run_name(parts, started)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{base.name}.", suffix=STAGING_SUFFIX, dir=output_dir))
    except OSError as err:
        raise write_failure(base, err, folder=True) from None
    try:
        write(staging)
        return _publish(staging, base)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish(staging: Path, base: Path) -> Path:
    """Rename `staging` to `base` (or `base-2`, `base-3`, ... when taken); the name it got."""
    candidate, n = base, 1
    while True:
        try:
            staging.rename(candidate)  # onto a missing or empty folder only: a run is never overwritten
            return candidate
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                raise write_failure(candidate, err, folder=True) from None
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
        text = name in TEXT_COLUMNS  # ids as written ("NA" is one); only an empty field is missing
        dtypes = {**TEXT_COLUMNS.get(name, {}), **INTEGER_COLUMNS.get(name, {})}
        try:
            return pd.read_csv(path, dtype=dtypes, keep_default_na=not text, na_values=[""] if text else None)
        except (ValueError, pd.errors.ParserError) as err:
            raise RunFolderError(f"{path}: unreadable CSV ({err})") from None

    # the files of an evaluation, by their usual names
    @property
    def metrics(self) -> dict:
        return self.read("metrics")

    def keypoints(self) -> pd.DataFrame:
        """per_keypoint.csv, with the run's rule for a correct keypoint (pck.STRICT) for scoring it again."""
        table = self.read("per_keypoint")
        recorded = file_path(self.path, self.kind, "metrics").is_file()
        table.attrs[pck.STRICT] = bool(recorded and self.metrics.get("protocol", {}).get("strict", False))
        return table

    def pairs(self) -> pd.DataFrame:
        return self.read("per_pair")


def read_run(path: str | Path, kinds: tuple[str, ...] | None = None) -> Run:
    """The run folder at `path` (of one of `kinds`, if given)."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"no such results folder: {path}")
    config_path = path / CONFIG
    if not config_path.is_file():
        raise RunFolderError(f"{path} is not a results folder: it has no {CONFIG}")
    config = _read_json(config_path)
    if not isinstance(config, dict) or config.get("kind") not in RUN_FILES:
        raise RunFolderError(
            f"{config_path}: not the config.json of a run (no known 'kind'; a damaged or foreign file)"
        )
    if kinds is not None and config["kind"] not in kinds:
        raise RunFolderError(f"{path} holds a {config['kind']} run, not {' or '.join(kinds)}")
    return Run(path, config["kind"], config)


def find_runs(paths: list[str | Path], kinds: tuple[str, ...] | None = None) -> list[Path]:
    """Results folders among `paths` and below them (of `kinds`, if given), oldest first by folder name."""
    found = set()
    for path in map(Path, paths):
        if not path.exists():
            raise RunFolderError(f"no such results folder: {path}")
        for config in [path / CONFIG, *path.rglob(CONFIG)]:
            if config.parent.name.endswith(STAGING_SUFFIX):  # a run being written, or one that died writing
                continue
            kind = _kind_of(config)
            if kind is not None and (kinds is None or kind in kinds or kind == "unreadable"):
                found.add(config.parent)
    return sorted(found, key=lambda p: (p.name, str(p)))


def _kind_of(config: Path) -> str | None:
    """The kind a config.json names (None when it names none, or is unreadable: read_run says why)."""
    if not config.is_file():
        return None
    try:
        kind = json.loads(config.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return "unreadable"
    return kind if kind in RUN_FILES else None


def _files_of(kind: str) -> dict[str, str]:
    if kind not in RUN_FILES:
        raise ValueError(f"unknown run kind {kind!r}; kinds: {', '.join(RUN_FILES)}")
    return RUN_FILES[kind]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: unreadable JSON ({err})") from None


# --- reading runs for a report: a damaged folder is skipped with a warning -------------------------------

# the files (and their keys) a report reads from each kind of run
REPORTED = {
    "evaluation": {"metrics": ("protocol", "counts"), "per_pair": (), "per_keypoint": ()},
    "finetune": {"train_log": ()},
    "grid": {"best_parameters": ("best", "argmax")},
}
# the numbers a report reads: JSON fields (dotted paths) and CSV columns (fnmatch patterns) that must be finite
# numbers; every other CSV column but the text ones must hold numbers (a training row has no validation PCK: NaN)
FINITE = {
    "metrics": ("*pck@*", "counts.pairs", "counts.keypoints"),
    "best_parameters": ("best.*", "argmax.*"),
    "per_keypoint": ("*",),
    "per_pair": ("norm_L", "pck@*"),
    "train_log": ("step",),
}
CONFIG_KEYS = ("settings", "resolved")


class RunSkipped(UserWarning):
    """A results folder left out of a report: incomplete, damaged or unreadable."""


def check_run(run: Run) -> Run:
    """The run, when every file a report reads from it is there, readable and holds numbers where a report reads
    numbers; else RunFolderError naming the file (and the field)."""
    missing = [key for key in CONFIG_KEYS if key not in run.config]
    if missing:
        raise RunFolderError(f"{run.path / CONFIG}: no {', '.join(missing)} (a damaged or foreign config.json)")
    for name, keys in REPORTED.get(run.kind, {}).items():
        file = run.path / RUN_FILES[run.kind][name]
        if not run.has(name):
            raise RunFolderError(f"{file}: missing (this {run.kind} run is incomplete)")
        content = run.read(name)
        absent = [k for k in keys if k not in content]
        if absent:
            raise RunFolderError(f"{file}: no {', '.join(absent)} (a damaged or foreign {file.name})")
        problem = _table_problem(content, name) if isinstance(content, pd.DataFrame) else _json_problem(content, name)
        if problem:
            raise RunFolderError(f"{file}: {problem} (a damaged file)")
    return run


def _json_problem(content: dict, name: str) -> str | None:
    """The first field of `content` read as a number that is not a finite one, or None."""
    for where, value in _leaves(content):
        if any(fnmatch.fnmatchcase(where, pattern) for pattern in FINITE.get(name, ())) and not _finite(value):
            return f"field {where} is {value!r}, not a finite number"
    return None


def _leaves(content: object, where: str = "") -> Iterator[tuple[str, object]]:
    """(dotted path, value) of every value of a JSON tree that is not a dict."""
    if isinstance(content, dict):
        for key, value in content.items():
            yield from _leaves(value, f"{where}.{key}" if where else str(key))
    else:
        yield where, content


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _table_problem(table: pd.DataFrame, name: str) -> str | None:
    """The first column of a CSV read as numbers that holds something else (or, where it must be finite, a
    blank, NaN or inf), with the row; or None."""
    for column in table.columns.difference(list(TEXT_COLUMNS.get(name, {})), sort=False):
        numbers, given = _numbers(table[column])
        finite = any(fnmatch.fnmatchcase(column, pattern) for pattern in FINITE.get(name, ()))
        bad = ~np.isfinite(numbers) if finite else numbers.isna() & given
        if bad.any():
            row = int(bad.to_numpy().argmax())
            return f"column {column} holds {table[column].iloc[row]!r} in row {row + 1}, not a finite number"
    return None


def _numbers(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A CSV column as floats (True / False as 1 / 0; anything else that is not a number as NaN), and which of its
    cells are not blank."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.astype(float), column.notna()
    text = column.astype(str)
    return pd.to_numeric(text.replace({"True": "1", "False": "0"}), errors="coerce"), column.notna() & (text != "")


def load_runs(paths: list[str | Path], kinds: tuple[str, ...] | None = None) -> list[Run]:
    """The results folders under `paths` (of `kinds`) in the order the paths are given, each path's runs
    oldest first, each folder once; one that is incomplete or damaged is skipped with a RunSkipped warning
    naming the file at fault."""
    found = {folder.resolve(): folder for path in paths for folder in find_runs([path], kinds)}
    runs = []
    for path in found.values():
        try:
            runs.append(check_run(read_run(path, kinds)))
        except RunFolderError as err:
            warnings.warn(f"skipped {err}", RunSkipped, stacklevel=2)
    return runs


def resolve_path(path: str | Path, bases: list[str | Path]) -> Path:
    """`path` as it exists: as given when absolute, else below the first of `bases` that has it
    (FileNotFoundError listing every place tried)."""
    path = Path(path).expanduser()
    tried = [path] if path.is_absolute() else [Path(base) / path for base in dict.fromkeys(map(str, bases)) if base]
    for candidate in tried:
        if candidate.exists():
            return candidate.resolve()
    raise FileNotFoundError(f"no results folder {path}; tried {', '.join(map(str, tried))}")
