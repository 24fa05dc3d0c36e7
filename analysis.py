"""Analysis of results folders, with no backbone and no re-evaluation: tables of runs beside the
published numbers, PCK at any threshold, and the pairs of a run reloaded for drawing."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

import pck
from pairs import PairRecord, load_pairs
from published import PUBLISHED_ALPHAS, published_for
from results import Run, find_runs, read_run
from settings import AVERAGINGS, DEFAULT_THRESHOLDS

SETTINGS = {"official": "zero-shot", "fine-tuned": "fine-tuned", "random": "random weights", "custom": "custom weights"}


def run_settings(run: Run) -> dict[str, object]:
    """What a run evaluated: model, setting (from the weights actually loaded), dataset, split, PCK
    threshold, matcher, image size, protocol, pairs."""
    args, resolved, proto = run.config["args"], run.config["resolved"], run.metrics["protocol"]
    match = args["match"]
    matcher = match["matcher"]
    if matcher == "wsoftargmax":
        matcher += f" K{match['window']} T{match['temperature']:g}"
    members = resolved.get("members") or [resolved]
    origins = {m.get("weights_origin", "custom") for m in members}
    setting = "/".join(SETTINGS.get(o, o) for o in sorted(origins))
    if "members" in resolved:
        model = " + ".join(f"{m['weight']:.2f} {m['model']}" for m in members)
        setting = f"ensemble, {setting}"
    else:
        model = resolved["model"]
    protocol = run.config.get("protocol") or {"name": "default", "overrides": {}}
    overrides = ", ".join(f"{k}={v}" for k, v in protocol.get("overrides", {}).items())
    return {
        "run": run.name,
        "model": model,
        "setting": setting,
        "dataset": proto["dataset"],
        "split": proto["split"],
        "pck_norm": proto["pck_norm"],
        "matcher": matcher,
        "image_size": ", ".join("x".join(map(str, m["image_size"])) for m in members if "image_size" in m),
        "protocol": protocol["name"] + (f" ({overrides})" if overrides else ""),
        "pairs": run.metrics["counts"]["pairs"],
    }


def report_table(paths: list[str | Path], alphas: tuple[float, ...] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """One row per evaluation run found under `paths`: description, PCK and the published PCK."""
    rows = []
    for path in find_runs(paths, kinds=("evaluation",)):
        run = read_run(path, kinds=("evaluation",))
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
        row["path"] = str(path)
        rows.append(row)
    return pd.DataFrame(rows)


def _both(image: float, keypoint: float, digits: int) -> str:
    if np.isnan(image):
        return "–"
    return f"{image:.{digits}f}" + ("" if np.isnan(keypoint) else f" ({keypoint:.{digits}f})")


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
            cells.append(_both(row[f"pck@{a}_per_image"], row[f"pck@{a}_per_keypoint"], 1))
            cells.append(_both(row[f"published@{a}_per_image"], row[f"published@{a}_per_keypoint"], 2))
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


def run_pairs(run: Run) -> dict[str, PairRecord]:
    """The run's pairs, reloaded from its dataset (for drawing them), by pair_id."""
    args = run.config["args"]
    pairset = load_pairs(
        args["dataset"],
        root=run.config["resolved"].get("data_root") or args["data_root"],
        split=args["split"],
        layout=args["layout"],
        limit=args["limit"],
    )
    return {p.pair_id: p for p in pairset.pairs}


def mark_correct(table: pd.DataFrame, alphas: Iterable[float]) -> pd.DataFrame:
    """The per-keypoint table with a correct@alpha column for each alpha, by pck.py's rule
    (distance <= alpha * L): scores a table at thresholds it was not evaluated at."""
    return table.assign(**{pck.correct_column(a): table["distance"] <= a * table["norm_L"] for a in alphas})


def pck_curve(table: pd.DataFrame, alphas: Iterable[float]) -> pd.DataFrame:
    """PCK (%) at any alphas from a per-keypoint table, both averagings, computed as metrics.json's are."""
    alphas = [float(a) for a in alphas]
    scores = pck.overall(mark_correct(table, alphas), alphas)
    return pd.DataFrame([{"alpha": a, **scores[f"pck@{a:g}"]} for a in alphas])
