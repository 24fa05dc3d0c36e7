"""Gather results folders into one table, model x dataset x matcher x PCK, beside published numbers.

    python report.py results/                                   # every evaluation run under results/
    python report.py results/ --markdown report.md --csv report.csv --alphas 0.05 0.1 0.2

Each row is one evaluation run (a folder with config.json and metrics.json: single models and
ensembles; grid and weight searches are skipped). PCK is written "per image (per keypoint)".
The 'published' columns hold the original project's numbers (ViT-B backbones, square resize,
nearest patch) when a run has the same backbone, setting, matcher, dataset, split and PCK
threshold; they are copied in PUBLISHED below, so this script needs nothing but the runs.
Also the loaders the notebooks use: load_run, run_pairs, mark_correct, pck_curve.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import pck
from cli import run_main
from pairs import PairRecord, load_pairs
from results import atomic_write, write_csv

DEFAULT_ALPHAS = (0.05, 0.1, 0.2)
PUBLISHED_ALPHAS = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Published:
    """One published result of the original project, PCK (%) at alphas 0.05 / 0.1 / 0.2."""

    dataset: str
    pck_norm: str
    model: str  # canonical backbone name, or "ensemble"
    setting: str  # zero-shot | fine-tuned | ensemble
    matcher: str
    per_image: tuple[float, float, float]
    per_keypoint: tuple[float, float, float] | None
    note: str


_PF = "averaging not stated; matcher not stated for zero-shot rows (argmax as in its SPair rows)"
PUBLISHED = [
    Published(
        "spair",
        "bbox",
        "dinov2_vitb14",
        "zero-shot",
        "argmax",
        (35.61, 51.90, 67.64),
        (38.12, 54.61, 70.41),
        "DINOv2-B/14 @518",
    ),
    Published(
        "spair",
        "bbox",
        "dinov3_vitb16",
        "zero-shot",
        "argmax",
        (32.39, 48.30, 62.85),
        (36.77, 53.67, 68.45),
        "DINOv3-B/16 @512",
    ),
    Published("spair", "bbox", "sam_vit_b", "zero-shot", "argmax", (11.72, 20.44, 33.41), None, "SAM-B @512"),
    Published(
        "spair",
        "bbox",
        "dinov2_vitb14",
        "fine-tuned",
        "wsoftargmax",
        (46.59, 58.89, 69.58),
        None,
        "last 2 blocks, logit scale 10; K9 T0.1",
    ),
    Published(
        "spair",
        "bbox",
        "dinov3_vitb16",
        "fine-tuned",
        "wsoftargmax",
        (56.41, 69.27, 78.74),
        (60.54, 73.67, 82.60),
        "last 3 blocks, logit scale 15, lr 1e-4; K5 T0.2",
    ),
    Published(
        "spair", "bbox", "sam_vit_b", "fine-tuned", "wsoftargmax", (25.92, 37.38, 50.04), None, "last 4 blocks; K7 T0.1"
    ),
    Published(
        "spair",
        "bbox",
        "ensemble",
        "ensemble",
        "wsoftargmax",
        (57.75, 70.08, 79.32),
        (62.21, 74.69, 83.27),
        "0.25 DINOv2 + 0.65 DINOv3 + 0.10 SAM, fine-tuned; K5 T0.2",
    ),
    Published("pf-pascal", "image", "dinov2_vitb14", "zero-shot", "argmax", (63.79, 82.52, 93.54), None, _PF),
    Published("pf-pascal", "image", "dinov3_vitb16", "zero-shot", "argmax", (65.80, 86.92, 95.65), None, _PF),
    Published("pf-pascal", "image", "sam_vit_b", "zero-shot", "argmax", (31.96, 48.98, 66.65), None, _PF),
    Published(
        "pf-pascal",
        "image",
        "dinov3_vitb16",
        "fine-tuned",
        "wsoftargmax",
        (62.13, 78.60, 88.24),
        None,
        "fine-tuned on SPair-71k; " + _PF,
    ),
    Published("pf-pascal", "image", "ensemble", "ensemble", "wsoftargmax", (63.32, 79.25, 88.47), None, _PF),
    Published("pf-willow", "image", "dinov2_vitb14", "zero-shot", "argmax", (54.13, 80.78, 93.78), None, _PF),
    Published("pf-willow", "image", "dinov3_vitb16", "zero-shot", "argmax", (60.86, 85.97, 96.61), None, _PF),
    Published("pf-willow", "image", "sam_vit_b", "zero-shot", "argmax", (33.66, 50.46, 68.67), None, _PF),
    Published(
        "pf-willow",
        "image",
        "dinov3_vitb16",
        "fine-tuned",
        "wsoftargmax",
        (61.94, 83.26, 94.04),
        None,
        "fine-tuned on SPair-71k; " + _PF,
    ),
    Published("pf-willow", "image", "ensemble", "ensemble", "wsoftargmax", (63.22, 83.81, 94.50), None, _PF),
]


@dataclass
class Run:
    """An evaluation results folder: its config.json and metrics.json, and its tables on demand."""

    path: Path
    config: dict
    metrics: dict

    @property
    def name(self) -> str:
        return self.path.name

    def keypoints(self) -> pd.DataFrame:
        return pck.read_keypoint_table(self.path / "per_keypoint.csv")

    def pairs(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "per_pair.csv", dtype={"pair_id": str, "category": str})


def load_run(path: str | Path) -> Run:
    """Read a results folder written by an evaluation (training_free_evaluation.py, evaluate.py, ensemble)."""
    path = Path(path)
    files = {name: path / f"{name}.json" for name in ("config", "metrics")}
    missing = [f.name for f in files.values() if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not an evaluation results folder: no {', '.join(missing)}")
    try:
        return Run(path, *(json.loads(f.read_text()) for f in files.values()))
    except ValueError as err:
        raise ValueError(f"{path}: unreadable results file ({err})") from None


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Evaluation results folders among `paths` and below them, oldest first (by folder name)."""
    found = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"no such results folder: {path}")
        found.update(m.parent for m in [path / "metrics.json", *path.rglob("metrics.json")] if m.is_file())
    return sorted(found, key=lambda p: (p.name, str(p)))


def describe(run: Run) -> dict[str, object]:
    """What a run evaluated: model, setting, dataset, split, PCK threshold, matcher, pairs."""
    args, resolved, proto = run.config["args"], run.config["resolved"], run.metrics["protocol"]
    match = args["match"]
    matcher = match["matcher"]
    if matcher == "wsoftargmax":
        matcher += f" K{match['window']} T{match['temperature']:g}"
    if "members" in resolved:
        model = " + ".join(f"{m['weight']:.2f} {m['spec'].split(':')[0].split('@')[0]}" for m in resolved["members"])
        setting = "ensemble"
    else:
        model = resolved["model"]
        setting = (
            "fine-tuned"
            if args.get("checkpoint")
            else "random weights"
            if resolved["weights"] == "random"
            else "custom weights"
            if args.get("weights")
            else "zero-shot"
        )
    return {
        "run": run.name,
        "model": model,
        "setting": setting,
        "dataset": proto["dataset"],
        "split": proto["split"],
        "pck_norm": proto["pck_norm"],
        "matcher": matcher,
        "image_size": "x".join(map(str, resolved["image_size"])) if "image_size" in resolved else "",
        "pairs": run.metrics["counts"]["pairs"],
    }


def published_for(run: Run) -> Published | None:
    """The original project's number for the same backbone, setting, matcher and protocol (test split)."""
    info = describe(run)
    model = "ensemble" if info["setting"] == "ensemble" else run.config["resolved"]["model"]
    for entry in PUBLISHED:
        if (entry.dataset, entry.pck_norm, entry.model, entry.setting, entry.matcher, "test") == (
            info["dataset"],
            info["pck_norm"],
            model,
            info["setting"],
            run.config["args"]["match"]["matcher"],
            info["split"],
        ):
            return entry
    return None


def report_table(paths: list[str | Path], alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> pd.DataFrame:
    """One row per evaluation run found under `paths`: description, PCK and the published PCK."""
    rows = []
    for path in find_runs(paths):
        run = load_run(path)
        row = describe(run)
        entry = published_for(run)
        for alpha in alphas:
            key = f"pck@{alpha:g}"
            for avg in pck.AVERAGING:
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


def to_markdown(table: pd.DataFrame, alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> str:
    """A markdown table: PCK 'per image (per keypoint)', ours beside the published one."""
    head = ["model", "setting", "dataset", "split", "threshold", "matcher", "pairs"]
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
        "published: the original project (ViT-B, square resize, nearest patch); shown only for the same backbone, "
        "setting, matcher, dataset, split and threshold.",
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


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("paths", nargs="+", help="results folders, or folders holding them")
    p.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS), help="PCK thresholds shown")
    p.add_argument("--markdown", help="also write the markdown table here")
    p.add_argument("--csv", help="also write the full table (numbers, paths) here")
    args = p.parse_args(argv)
    table = report_table(args.paths, tuple(args.alphas))
    if table.empty:
        raise FileNotFoundError(f"no evaluation results (metrics.json) under {', '.join(args.paths)}")
    text = to_markdown(table, tuple(args.alphas))
    print(text)
    if args.markdown:
        atomic_write(Path(args.markdown), lambda tmp: tmp.write_text(text))
    if args.csv:
        write_csv(args.csv, table)
    return table


if __name__ == "__main__":
    run_main(main)
