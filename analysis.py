"""Analysis of results folders, with no backbone and no re-evaluation: the runs found (a damaged one
skipped with a warning), tables of evaluations beside the published numbers, of fine-tuning runs and
of grid searches, PCK at any threshold, and the pairs of a run reloaded for drawing."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

import pck
from pairs import PairRecord, load_pairs
from published import PUBLISHED_ALPHAS, members_of, protocol_of, published_for
from results import RUN_FILES, Run, RunFolderError, find_runs, read_run
from settings import AVERAGINGS, DEFAULT_THRESHOLDS
from summary import PCK, matcher_text

SETTINGS = {"official": "zero-shot", "fine-tuned": "fine-tuned", "random": "random weights", "custom": "custom weights"}
# the files (and their keys) a report reads from each kind of run
REPORTED = {
    "evaluation": {"metrics": ("protocol", "counts"), "per_pair": (), "per_keypoint": ()},
    "finetune": {"train_log": ()},
    "grid": {"best_parameters": ("best", "argmax")},
}
CONFIG_KEYS = {"evaluation": ("args", "resolved"), "finetune": ("args", "resolved"), "grid": ("args",)}


class RunSkipped(UserWarning):
    """A results folder left out of a report: incomplete, damaged or unreadable."""


def check_run(run: Run) -> Run:
    """The run, when every file a report reads from it is there and readable; else RunFolderError naming the file."""
    missing = [key for key in CONFIG_KEYS.get(run.kind, ()) if key not in run.config]
    if missing:
        raise RunFolderError(f"{run.path / 'config.json'}: no {', '.join(missing)} (a damaged or foreign config.json)")
    for name, keys in REPORTED.get(run.kind, {}).items():
        file = run.path / RUN_FILES[run.kind][name]
        if not run.has(name):
            raise RunFolderError(f"{file}: missing (this {run.kind} run is incomplete)")
        if keys:
            content = run.read(name)
            absent = [k for k in keys if k not in content]
            if absent:
                raise RunFolderError(f"{file}: no {', '.join(absent)} (a damaged or foreign {file.name})")
    return run


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


def resolve_path(path: str | Path, bases: Iterable[str | Path]) -> Path:
    """`path` as it exists: as given when absolute, else below the first of `bases` that has it
    (FileNotFoundError listing every place tried)."""
    path = Path(path).expanduser()
    tried = [path] if path.is_absolute() else [Path(base) / path for base in dict.fromkeys(map(str, bases)) if base]
    for candidate in tried:
        if candidate.exists():
            return candidate.resolve()
    raise FileNotFoundError(f"no results folder {path}; tried {', '.join(map(str, tried))}")


def kinds_text(runs: list[Run]) -> str:
    """'3 results folders: 2 evaluation, 1 finetune'."""
    counts = pd.Series([run.kind for run in runs], dtype=object).value_counts()
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return f"{len(runs)} results folder{'' if len(runs) == 1 else 's'}" + (f": {kinds}" if kinds else "")


def run_settings(run: Run) -> dict[str, object]:
    """What a run evaluated: model, setting (from the weights actually loaded), dataset, split, PCK
    threshold, matcher, image size, protocol, pairs."""
    resolved, proto = run.config["resolved"], run.metrics["protocol"]
    members = members_of(run)
    origins = {m.get("weights_origin", "custom") for m in members}
    setting = "/".join(SETTINGS.get(o, o) for o in sorted(origins))
    if "members" in resolved:
        model = " + ".join(f"{m['weight']:.2f} {m['model']}" for m in members)
        setting = f"ensemble, {setting}"
    else:
        model = resolved["model"]
    protocol = protocol_of(run)
    overrides = ", ".join(f"{k}={v}" for k, v in protocol.get("overrides", {}).items())
    return {
        "run": run.name,
        "model": model,
        "setting": setting,
        "dataset": proto["dataset"],
        "split": proto["split"],
        "pck_norm": proto["pck_norm"],
        "matcher": matcher_text(run.config["args"]["match"]),
        "image_size": ", ".join("x".join(map(str, m["image_size"])) for m in members if "image_size" in m),
        "protocol": protocol["name"] + (f" ({overrides})" if overrides else ""),
        "pairs": run.metrics["counts"]["pairs"],
    }


def run_label(run: Run, detail: bool = True) -> str:
    """'dinov2_vitb14 zero-shot, argmax', with (detail) image size, checkpoint and protocol."""
    d = run_settings(run)
    label = f"{d['model']} {d['setting']}, {d['matcher']}"
    if not detail:
        return label
    checkpoint = run.config["args"].get("checkpoint")
    checkpoint = f", checkpoint {checkpoint}" if checkpoint else ""
    return f"{label}, {d['image_size']}{checkpoint}, protocol {d['protocol']}"


def unique_labels(runs: list[Run]) -> list[str]:
    """Short labels of runs, with the image size, then the folder's name, added where two would be the same."""
    labels = [run_label(run, detail=False) for run in runs]
    for extra in (lambda run: run_settings(run)["image_size"], lambda run: run.name):
        repeated = {label for label in labels if labels.count(label) > 1}
        labels = [
            f"{label}, {extra(run)}" if label in repeated else label for label, run in zip(labels, runs, strict=True)
        ]
    return labels


def report_table(runs: list[Run], alphas: tuple[float, ...] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """One row per evaluation run: description, PCK and the published PCK."""
    rows = []
    for run in runs:
        row = run_settings(run)
        entry = published_for(run)
        for alpha in alphas:
            key = f"pck@{alpha:g}"
            for avg in AVERAGINGS:
                row[f"{key}_{avg}"] = run.metrics.get(key, {}).get(avg, np.nan)
            i = PUBLISHED_ALPHAS.index(alpha) if alpha in PUBLISHED_ALPHAS else None
            row[f"published@{alpha:g}_per_image"] = entry.per_image[i] if entry and i is not None else np.nan
            row[f"published@{alpha:g}_per_keypoint"] = (
                entry.per_keypoint[i] if entry and entry.per_keypoint and i is not None else np.nan
            )
        row["published_note"] = entry.note if entry else ""
        row["path"] = str(run.path)
        rows.append(row)
    return pd.DataFrame(rows)


def _both(image: float, keypoint: float) -> str:
    if np.isnan(image):
        return "–"
    return PCK.format(image) + ("" if np.isnan(keypoint) else f" ({PCK.format(keypoint)})")


def to_markdown(table: pd.DataFrame, alphas: tuple[float, ...] = DEFAULT_THRESHOLDS) -> str:
    """A markdown table: PCK 'per image (per keypoint)', ours beside the published one."""
    head = ["model", "setting", "dataset", "split", "threshold", "matcher", "image size", "protocol", "pairs"]
    for alpha in alphas:
        head += [f"PCK@{alpha:g}", f"published@{alpha:g}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.to_dict("records"):
        cells = [
            row["model"],
            row["setting"],
            row["dataset"],
            row["split"],
            row["pck_norm"],
            row["matcher"],
            row["image_size"],
            row["protocol"],
            str(row["pairs"]),
        ]
        for alpha in alphas:
            a = f"{alpha:g}"
            cells.append(_both(row[f"pck@{a}_per_image"], row[f"pck@{a}_per_keypoint"]))
            cells.append(_both(row[f"published@{a}_per_image"], row[f"published@{a}_per_keypoint"]))
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({n for n in table.get("published_note", []) if n})
    legend = [
        "",
        "PCK in %, per image (per keypoint). threshold: bbox = alpha x max side of the target bounding box, "
        "image = of the target image, kpbox = of the target keypoints' box.",
        "published: the original project's number, shown only beside a run of its whole protocol: --protocol "
        "original without overrides, the same backbones (and ensemble weights), weights origin, matcher with K and T, "
        "image size, dataset, split, number of pairs and threshold.",
        *[f"- {note}" for note in notes],
    ]
    return "\n".join(lines + legend) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A markdown table of the columns of a frame of text (not its index)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _at(value: float, step: object) -> str:
    return "–" if pd.isna(value) else f"{PCK.format(value)} at step {int(step)}"


def finetune_table(runs: list[Run]) -> pd.DataFrame:
    """One row per fine-tuning run: model, data, steps, settings, and its best and last validation PCK."""
    rows = []
    for run in runs:
        args, resolved = run.config["args"], run.config["resolved"]
        log = run.read("train_log")
        column = f"val_pck@{args['val_alpha']:g}"
        val = log.dropna(subset=[column]) if column in log else log.iloc[:0]
        trained = val[val["step"] > 0] if (val["step"] > 0).any() else val  # step 0: the starting point
        best = trained.loc[trained[column].idxmax()] if len(val) else {column: np.nan, "step": 0}
        last = val.iloc[-1] if len(val) else {column: np.nan, "step": 0}
        start = f" from {args['checkpoint']}" if args.get("checkpoint") else ""
        rows.append({
            "run": run.name,
            "model": f"{args.get('model')}{start} ({resolved.get('weights_origin', '?')} weights)",
            "data": f"{args['dataset']} {args['train_split']} ({resolved.get('train_pairs', '?')} pairs), "
            f"val {args.get('val_split') or 'none'} ({resolved.get('val_pairs', 0)} pairs)",
            "steps": f"{int(log['step'].max()) if len(log) else 0} of {resolved.get('steps', '?')}",
            "settings": f"last {args.get('trainable_blocks')} blocks, lr {args.get('lr')}, "
            f"batch {resolved.get('global_batch', args.get('batch_size'))}, {args.get('schedule')}, "
            f"select {args.get('select')}, protocol {args.get('protocol', 'default')}",
            f"best val PCK@{args['val_alpha']:g}": _at(best[column], best["step"]),
            f"last val PCK@{args['val_alpha']:g}": _at(last[column], last["step"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def grid_table(runs: list[Run]) -> pd.DataFrame:
    """One row per grid search: model, data, and the best window K and temperature T at each alpha
    (with their PCK, and argmax's beside it)."""
    rows = []
    for run in runs:
        best_file = run.read("best_parameters")
        averaging = best_file.get("selected_by", "per_image")
        row = {
            "run": run.name,
            "model": best_file.get("model", run.config["args"].get("model")),
            "data": f"{best_file.get('dataset')} {best_file.get('split')} ({best_file.get('pairs', '?')} pairs, "
            f"{best_file.get('pck_norm')} threshold)",
            "selected by": averaging,
        }
        for alpha, entry in best_file["best"].items():
            argmax = best_file["argmax"].get(alpha, {}).get(f"pck_{averaging}", np.nan)
            row[f"best at PCK@{alpha}"] = (
                f"K={entry['window']} T={entry['temperature']:g}: {PCK.format(entry[f'pck_{averaging}'])} "
                f"(argmax {PCK.format(argmax)})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def run_pairs(run: Run) -> dict[str, PairRecord]:
    """The run's pairs, reloaded from its dataset with its keypoint conventions (for drawing them), by pair_id."""
    args = run.config["args"]
    conventions = (run.config.get("protocol") or {}).get("settings", {})
    pairset = load_pairs(
        args["dataset"],
        root=run.config["resolved"].get("data_root") or args["data_root"],
        split=args["split"],
        layout=args["layout"],
        limit=args["limit"],
        shift_one_based=conventions.get("pf_shift", True),
        clamp=conventions.get("clamp_keypoints", True),
        rescale_annotations=args.get("rescale_annotations", False),
    )
    return {p.pair_id: p for p in pairset.pairs}


def mark_correct(table: pd.DataFrame, alphas: Iterable[float]) -> pd.DataFrame:
    """The per-keypoint table with a correct@alpha column for each alpha, by pck.py's rule
    (distance <= alpha * L): scores a table at thresholds it was not evaluated at (a column it has is replaced
    in place)."""
    correct = pd.DataFrame({pck.correct_column(a): table["distance"] <= a * table["norm_L"] for a in alphas})
    present = [column for column in correct if column in table]
    scored = pd.concat([table, correct.drop(columns=present)], axis="columns")
    scored[present] = correct[present]
    return scored


def pck_curve(table: pd.DataFrame, alphas: Iterable[float]) -> pd.DataFrame:
    """PCK (%) at any alphas from a per-keypoint table, both averagings, computed as metrics.json's are."""
    alphas = [float(a) for a in alphas]
    scores = pck.overall(mark_correct(table, alphas), alphas)
    return pd.DataFrame([{"alpha": a, **scores[f"pck@{a:g}"]} for a in alphas])
