"""Two evaluation runs over the same pairs, compared from their results folders alone: each run's PCK
and the difference, overall, per category and per SPair-71k difficulty level, with paired bootstrap
confidence intervals over pairs (scipy.stats.bootstrap, fixed seed). A difference is called more than
noise only when the interval of the difference excludes 0. Also the figures of a comparison: PCK per
keypoint id side by side, and easy and hard keypoint examples with both runs' predictions.

    table = compare_runs(zero_shot, fine_tuned, ("zero-shot", "fine-tuned"), alpha=0.1)
    paper.write_table(table, "paper/spair-test-bbox")
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import pck
from semcorr.report import paper
from semcorr.runs.folders import Run
from semcorr.runs.record import pairs_of_run

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
SEED = 0
BOOTSTRAP_VALUES = 2_000_000  # values per array in one batch of resamples (memory)


def check_comparable(a: Run, b: Run) -> None:
    """ValueError unless both runs scored the same pairs (same pairs fingerprint) with the same threshold."""
    pa, pb = a.metrics["protocol"], b.metrics["protocol"]
    for key in ("dataset", "split", "pck_norm"):
        if pa[key] != pb[key]:
            raise ValueError(
                f"cannot compare {a.path} and {b.path}: {key} {pa[key]} vs {pb[key]}; "
                "compare two runs of the same dataset, split and PCK threshold"
            )
    fa, fb = (run.config["resolved"].get("pairs_fingerprint") for run in (a, b))
    ids_a, ids_b = a.pairs()["pair_id"].tolist(), b.pairs()["pair_id"].tolist()
    if (fa != fb) if fa and fb else (ids_a != ids_b):
        raise ValueError(
            f"cannot compare {a.path} and {b.path}: they evaluated different pair lists (pairs fingerprint "
            f"{fa} vs {fb}; {len(ids_a):,} vs {len(ids_b):,} pairs). A paired comparison needs the same pairs: "
            "evaluate both runs with the same dataset, split, layout and --limit"
        )


def paired_counts(a: Run, b: Run, alpha: float) -> pd.DataFrame:
    """Per pair (same order as run a): category, the difficulty flags (when the pairs have them), keypoints,
    and the keypoints correct at alpha in each run."""
    counts = []
    for run, name in ((a, "correct_a"), (b, "correct_b")):
        scored = pck.mark_correct(run.keypoints(), [alpha])
        counts.append(
            scored.groupby("pair_id", sort=False).agg(
                category=("category", "first"),
                keypoints=("kp_id", "size"),
                **{name: (pck.correct_column(alpha), "sum")},
            )
        )
    both = counts[0].join(counts[1][["correct_b"]], how="inner")
    pairs = a.pairs().set_index("pair_id")
    flags = pck.difficulty_flags(pairs)
    if flags:
        both = both.join(pairs[flags].astype(int))
    return both


def _per_pair_data(counts: pd.DataFrame, averaging: str) -> tuple[np.ndarray, ...]:
    """What is resampled, one value per pair: each run's PCK of the pair (per image), or the keypoints
    correct in each run and the pair's keypoints (per keypoint)."""
    correct = counts[["correct_a", "correct_b"]].to_numpy(float)
    if averaging == "per_image":
        return tuple(100.0 * correct.T / counts["keypoints"].to_numpy(float))
    return (*correct.T, counts["keypoints"].to_numpy(float))


def _statistic(*data: np.ndarray, axis: int = -1) -> np.ndarray:
    """PCK (%) of a, of b, and b - a, from _per_pair_data (vectorised over resamples)."""
    if len(data) == 2:  # per image: the mean of the pairs' PCK
        a, b = data[0].mean(axis), data[1].mean(axis)
    else:  # per keypoint: pooled
        total = data[2].sum(axis)
        a, b = 100.0 * data[0].sum(axis) / total, 100.0 * data[1].sum(axis) / total
    return np.stack([a, b, b - a])


def compare_pairs(counts: pd.DataFrame, averaging: str = "per_image") -> dict[str, float]:
    """PCK of a and b and the difference b - a over these pairs, each with its paired bootstrap interval
    (NaN with fewer than 2 pairs), the number of pairs, and whether the difference is more than noise."""
    data = _per_pair_data(counts, averaging)
    point = _statistic(*data)
    low = high = np.full(3, np.nan)
    if len(counts) >= 2:
        interval = stats.bootstrap(
            data,
            _statistic,
            paired=True,
            vectorized=True,
            n_resamples=BOOTSTRAP_RESAMPLES,
            batch=max(1, BOOTSTRAP_VALUES // len(counts)),
            method="percentile",
            confidence_level=CONFIDENCE,
            rng=np.random.default_rng(SEED),
        ).confidence_interval
        low, high = interval.low, interval.high
    row: dict[str, float] = {}
    for i, name in enumerate(("A", "B", "B - A")):
        row |= {name: float(point[i]), f"{name} low": float(low[i]), f"{name} high": float(high[i])}
    return row | {"pairs": len(counts), "more than noise": bool(low[2] > 0 or high[2] < 0)}


def compare_runs(
    a: Run,
    b: Run,
    labels: tuple[str, str] = ("A", "B"),
    alpha: float = 0.1,
    averaging: str = "per_image",
    common: str = "",
) -> paper.Table:
    """Rows: all pairs, each category, each difficulty level (SPair-71k); columns: PCK@alpha of A and B and
    B - A with their confidence intervals, pairs, more than noise (those differences in bold); `common`: what
    both runs share, for the caption."""
    check_comparable(a, b)
    counts = paired_counts(a, b, alpha)
    rows = {("all", "all pairs"): compare_pairs(counts, averaging)}
    for category, group in counts.groupby("category"):
        rows[("category", category)] = compare_pairs(group, averaging)
    flags = [flag for flag in pck.DIFFICULTY_LEVELS if flag in counts]  # SPair-71k pairs only
    for flag in flags:
        for level, group in counts.groupby(flag):
            rows[(flag.replace("_", " "), pck.level_name(flag, level))] = compare_pairs(group, averaging)
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = frame.index.set_names(["group", "subset"])
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    bold["B - A"] = frame["more than noise"]
    caption = (
        f"A: {labels[0]}; B: {labels[1]}. PCK@{alpha:g} of each run and the difference B - A, each with its "
        f"{CONFIDENCE:.0%} confidence interval (low, high) from a paired bootstrap over pairs ({BOOTSTRAP_RESAMPLES:,} "
        f"resamples, percentile, seed {SEED}). More than noise (bold): the interval of the difference excludes 0; "
        f"per category and level, not corrected for multiple comparisons. {paper.caption_protocol([a], averaging, common)}"
    )
    return paper.Table("comparison", frame, caption, bold)


def keypoint_id_comparison(table_a: pd.DataFrame, table_b: pd.DataFrame, alpha: float = 0.1) -> pd.DataFrame:
    """PCK@alpha (%) of each keypoint id per category in two runs' per-keypoint tables (pooled), and the
    occurrences."""
    ids_a, ids_b = (paper.keypoint_id_pck(table, alpha) for table in (table_a, table_b))
    return pd.DataFrame({"A": ids_a["pck"], "B": ids_b["pck"], "keypoints": ids_a["keypoints"]})


def example_rows(
    table_a: pd.DataFrame, table_b: pd.DataFrame, alpha: float = 0.1, n: int = 2, min_keypoints: int = 3
) -> pd.DataFrame:
    """Examples of the easiest and the hardest keypoint id of two runs' per-keypoint tables (run A's pooled
    PCK@alpha, among ids seen at least `min_keypoints` times, or the most seen): occurrences that show what
    the row says (easy: ones run A got right; hard: ones it got wrong; any when there are none), the n nearest
    their median error, so that neither run's best or worst case is picked. Columns: kind, both runs'
    predictions, errors / L, correctness."""
    ids = keypoint_id_comparison(table_a, table_b, alpha)
    frequent = ids[ids["keypoints"] >= min(min_keypoints, ids["keypoints"].max())]
    correct = pck.correct_column(alpha)
    scored_b = pck.mark_correct(table_b, [alpha])[["pair_id", "kp_id", "pred_x", "pred_y", "distance", correct]]
    table = pck.mark_correct(table_a, [alpha]).merge(
        scored_b, on=["pair_id", "kp_id"], suffixes=("", "_b"), validate="one_to_one"
    )
    table["error"], table["error_b"] = table["distance"] / table["norm_L"], table["distance_b"] / table["norm_L"]
    table["correct"], table["correct_b"] = table[correct], table.pop(f"{correct}_b")
    examples = []
    for kind, key, right in (("easy", frequent["A"].idxmax(), True), ("hard", frequent["A"].idxmin(), False)):
        rows = table[(table["category"] == key[0]) & (table["kp_id"] == key[1])]
        typical = rows[rows["correct"] == right]
        rows = typical if len(typical) else rows
        closeness = (rows["error"] - rows["error"].median()).abs()
        picked = rows.assign(closeness=closeness).sort_values(["closeness", "pair_id"]).head(n)
        examples.append(picked.assign(kind=kind, id_pck_a=ids.loc[key, "A"], id_pck_b=ids.loc[key, "B"]))
    return pd.concat(examples, ignore_index=True)


def write_figures(a: Run, b: Run, labels: tuple[str, str], folder: str | Path, alpha: float = 0.1) -> list[Path]:
    """keypoint_ids.png (PCK per keypoint id of both runs) and, when run A's dataset is on disk, keypoint_examples.png."""
    from semcorr.data.images import load_image
    from semcorr.viz import charts, figures, viz2d

    folder = Path(folder)
    table_a, table_b = a.keypoints(), b.keypoints()
    ids = keypoint_id_comparison(table_a, table_b, alpha)
    written = [viz2d.save_plot(charts.keypoint_id_bars(ids, labels, alpha), folder / "keypoint_ids.png")]
    try:
        pairs = pairs_of_run(a)
        examples = example_rows(table_a, table_b, alpha)
        images = {pid: (load_image(pairs[pid].src), load_image(pairs[pid].trg)) for pid in examples["pair_id"]}
    except (OSError, ValueError, KeyError) as err:
        warnings.warn(f"no keypoint examples: cannot reload the pairs of {a.path} ({err})", stacklevel=2)
        return written
    figure = figures.draw_keypoint_examples(examples, images, labels, alpha)
    written.append(viz2d.save_plot(figure, folder / "keypoint_examples.png"))
    return written
