"""Every benchmark in one table, as papers print them: one row per model setting, one column per benchmark and
PCK threshold, each number recomputed from its run's per_keypoint.csv at the thresholds asked.

    table = benchmark_table(runs, alphas=(0.05, 0.1, 0.15))     # runs: evaluation results folders
    paper.to_markdown(table), paper.write_table(table, "paper/")

A benchmark is a dataset with its layout (when it has several) and split (when not the test split). Runs are
grouped into rows by a multi-benchmark run's folder (`--dataset a b c` writes one, listing its runs), else by
their labels without the data (labels.run_labels with the data fields left out).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import pck
from semcorr.config.settings import AVERAGINGS, LAYOUTS
from semcorr.report.labels import run_labels
from semcorr.report.paper import DATASET_NAMES, Table, best_in_columns
from semcorr.runs.folders import Run

DATA_FIELDS = ("data", "layout", "data root", "threshold", "pairs")  # what tells benchmarks apart, not models


def benchmark_name(run: Run) -> str:
    """'SPair-71k', 'AP-10K cross-species', 'PF-Pascal val': the dataset, its layout when it has several, its split
    when not the test split."""
    data = run.config["settings"]["data"]
    name = DATASET_NAMES.get(data["dataset"], data["dataset"])
    layouts = LAYOUTS.get(data["dataset"], ())
    layout = f" {data['layout']}" if layouts and data.get("layout") not in (None, layouts[0]) else ""
    return name + layout + ("" if data["split"] == "test" else f" {data['split']}")


def row_names(runs: list[Run], groups: dict[Path, str] | None = None) -> tuple[list[str], str]:
    """Each run's row and what every row shares: the label (labels.run_labels, the data left out) of its
    multi-benchmark run (`groups`: run folder -> that run's name; the first of its runs stands for it), else its
    own; two multi-benchmark runs that read alike get their names."""
    groups = groups or {}
    keys = [groups.get(run.path.resolve(), str(run.path.resolve())) for run in runs]
    first = {key: run for key, run in reversed(list(zip(keys, runs, strict=True)))}
    shown = run_labels(list(first.values()), leave_out=DATA_FIELDS, unique=False)
    label = dict(zip(first, shown.names, strict=True))
    repeated = {name for name in label.values() if list(label.values()).count(name) > 1}
    label = {
        key: f"{name} ({key})" if name in repeated and key in groups.values() else name for key, name in label.items()
    }
    return [label[key] for key in keys], shown.common


def benchmark_table(
    runs: list[Run], alphas, averaging: str = "per_image", groups: dict[Path, str] | None = None
) -> Table:
    """Rows (model settings) x (benchmark, PCK@alpha), the best per column in bold. Two runs of one row on one
    benchmark: the later one (in the order given) is shown."""
    rows, common = row_names(runs, groups)
    values: dict[str, dict[str, float]] = {}
    described: dict[str, str] = {}
    for run, row in zip(runs, rows, strict=True):
        name = benchmark_name(run)
        curve = pck.pck_curve(run.keypoints(), alphas)
        for alpha, value in zip(alphas, curve[averaging], strict=True):
            values.setdefault(row, {})[f"{name} PCK@{alpha:g}"] = value
        described[name] = benchmark_text(run, name)
    frame = pd.DataFrame.from_dict(values, orient="index").rename_axis("run")
    order = list(DATASET_NAMES.values())  # SPair-71k first, as papers print them

    def rank(name: str) -> tuple[int, str]:
        return next((i for i, known in enumerate(order) if name.startswith(known)), len(order)), name

    described = dict(sorted(described.items(), key=lambda item: rank(item[0])))
    frame = frame[[column for name in described for column in frame if column.startswith(f"{name} PCK@")]]
    caption = (
        f"PCK in %, {averaging.replace('_', ' ')} ({AVERAGINGS[averaging]}), of each benchmark at each threshold "
        f"alpha: {'; '.join(described.values())}."
        + (f" Every row: {common}." if common else "")
        + " Best per column in bold."
    )
    return Table("benchmarks", frame, caption, best_in_columns(frame, dict.fromkeys(frame.columns, "max")))


def benchmark_text(run: Run, name: str) -> str:
    """'SPair-71k: 12,234 pairs, correct when within alpha * max side of the target bounding box'."""
    proto = run.metrics["protocol"]
    rule = "<" if proto.get("strict") else "<="
    threshold = pck.NORM_DESCRIPTIONS[proto["pck_norm"]]
    return f"{name}: {run.metrics['counts']['pairs']:,} pairs, correct when distance {rule} {threshold}"
