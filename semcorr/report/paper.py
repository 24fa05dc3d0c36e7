"""Paper-ready tables of evaluation runs, from their results folders alone (per_keypoint.csv and
per_pair.csv; no backbone, no re-evaluation). Each table is written as LaTeX (booktabs, pandas'
Styler.to_latex, the best values in bold), CSV (the numbers at full precision) and markdown.

    overall        runs (rows) x PCK at each alpha
    per_category   categories (rows) x runs, at one alpha
    difficulty     SPair-71k's difficulty levels (rows) x runs, at one alpha
and, for each run, the original project's analysis at one alpha:
    consistency    per category: mean, std, min, max and range of its keypoint ids' PCK; number of ids
    sensitivity    per category: PCK at each alpha, PCK@max - PCK@min, the alpha at which PCK reaches a level
    extremes       categories hardest first: PCK, spread over pairs, hardest and easiest keypoint id

Runs are grouped by dataset, split and PCK threshold: one set of tables per group. Every number
recomputes from the CSV files by pck.py's rule (pck.mark_correct scores any alpha).

    for key, runs in group_runs(runs).items():
        shown = labels.run_labels(runs)
        for table in group_tables(runs, shown.names, common=shown.common):
            write_table(table, Path("paper") / group_name(key), group=group_name(key))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import pck
from semcorr.config.settings import AVERAGINGS, DEFAULT_THRESHOLDS
from semcorr.report.labels import slug
from semcorr.report.summary import PCK
from semcorr.report.tables import markdown_table
from semcorr.runs.folders import Run
from semcorr.storage.files import atomic_write, make_folder, write_csv

LEVEL_ALPHAS = np.round(np.arange(1, 101) / 100, 2)  # where "the alpha at which PCK reaches a level" is looked for
CURVE_ALPHAS = LEVEL_ALPHAS[:30]  # PCK-versus-alpha curves: 0.01 to 0.3
DATASET_NAMES = {"spair": "SPair-71k", "spair-u": "SPair-U", "pf-pascal": "PF-Pascal", "pf-willow": "PF-Willow",
                 "ap10k": "AP-10K", "custom": "custom pairs"}  # fmt: skip
BOLD = "textbf:--rwrap;"
LATEX_SPECIALS = str.maketrans({c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}"})


@dataclass
class Table:
    """A table as numbers (index: the rows' labels, named), its caption (plain text) and which cells are bold."""

    name: str  # the files' name
    frame: pd.DataFrame
    caption: str
    bold: pd.DataFrame
    label: str = ""  # LaTeX label after "tab:" (default: name)


# --- what is computed, from a per-keypoint table -------------------------------------------------------


def category_curves(table: pd.DataFrame, alphas, averaging: str = "per_image") -> pd.DataFrame:
    """PCK (%) per category (rows) at each alpha (columns), averaged as metrics.json's per_category is."""
    alphas = [float(a) for a in alphas]
    scored = pck.mark_correct(table, alphas)
    correct = scored[[pck.correct_column(a) for a in alphas]].set_axis(alphas, axis="columns")
    if averaging == "per_image":
        pairs = correct.groupby(table["pair_id"].to_numpy(), sort=False).mean()
        category = table.groupby("pair_id", sort=False)["category"].first()
        curves = pairs.groupby(category.reindex(pairs.index).to_numpy()).mean()
    else:
        curves = correct.groupby(table["category"].to_numpy()).mean()
    return curves.rename_axis("category") * 100.0


def pair_pck(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Each pair's category and PCK@alpha (%)."""
    scored = pck.mark_correct(table, [alpha])
    return (
        scored.groupby("pair_id", sort=False)
        .agg(category=("category", "first"), pck=(pck.correct_column(alpha), "mean"))
        .assign(pck=lambda f: 100.0 * f["pck"])
    )


def _kp_order(kp_id: str) -> tuple:
    return (0, int(kp_id), "") if str(kp_id).isdigit() else (1, 0, str(kp_id))


def keypoint_id_pck(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """PCK@alpha (%) of each keypoint id of each category, pooled over its occurrences, and their number;
    ids in numeric order."""
    scored = pck.mark_correct(table, [alpha])
    ids = scored.groupby(["category", "kp_id"])[pck.correct_column(alpha)].agg(["mean", "size"])
    ids.columns = ["pck", "keypoints"]
    ids["pck"] *= 100.0
    order = sorted(ids.index, key=lambda key: (key[0], _kp_order(key[1])))
    return ids.reindex(pd.MultiIndex.from_tuples(order, names=ids.index.names))


def first_alpha_reaching(curves: pd.DataFrame, level: float) -> pd.Series:
    """Per row, the first column (alpha) at which the curve is >= level; NaN where it never is."""
    reached = curves.ge(level)
    first = pd.Series(np.asarray(curves.columns, dtype=float)[reached.to_numpy().argmax(axis=1)], index=curves.index)
    return first.where(reached.any(axis=1))


# --- bold cells ------------------------------------------------------------------------------------


def best_in_columns(frame: pd.DataFrame, rules: dict[str, str]) -> pd.DataFrame:
    """True at each column's best value as shown (2 decimals): its 'max' or 'min' by `rules`."""
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    for column, rule in rules.items():
        shown = frame[column].astype(float).round(2)
        bold[column] = shown.eq(shown.max() if rule == "max" else shown.min())
    return bold


def best_in_rows(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """True at each row's highest value (as shown) among `columns`."""
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    shown = frame[columns].astype(float).round(2)
    bold[columns] = shown.eq(shown.max(axis=1), axis=0)
    return bold


# --- captions --------------------------------------------------------------------------------------


def _pairs_text(runs: list[Run]) -> str:
    counts = sorted({run.metrics["counts"]["pairs"] for run in runs})
    if len(counts) == 1:
        return f"{counts[0]:,} pairs"
    return f"{' / '.join(f'{n:,}' for n in counts)} pairs (runs differ)"


def dataset_text(runs: list[Run]) -> str:
    """'SPair-71k test, 12,234 pairs, threshold alpha * max side of the target bounding box'."""
    proto = runs[0].metrics["protocol"]
    name = DATASET_NAMES.get(proto["dataset"], proto["dataset"])
    return f"{name} {proto['split']}, {_pairs_text(runs)}, threshold {pck.NORM_DESCRIPTIONS[proto['pck_norm']]}"


def caption_protocol(runs: list[Run], averaging: str, common: str = "") -> str:
    """Dataset, split, pairs, the averaging and the threshold, for a caption; `common`: what every run shares
    (labels.run_labels)."""
    proto = runs[0].metrics["protocol"]
    name = DATASET_NAMES.get(proto["dataset"], proto["dataset"])
    return (
        f"{name} {proto['split']}, {_pairs_text(runs)}. PCK in %, {averaging.replace('_', ' ')} "
        f"({AVERAGINGS[averaging]}); a keypoint is correct when its distance to the ground truth is <= "
        f"{pck.NORM_DESCRIPTIONS[proto['pck_norm']]}." + (f" Every run: {common}." if common else "")
    )


def latex_text(text: str) -> str:
    """Plain caption text as LaTeX: specials escaped, alpha, <= and * as symbols."""
    text = text.translate(LATEX_SPECIALS)
    return re.sub(r"\balpha\b", r"$\\alpha$", text).replace("<=", r"$\leq$").replace(" * ", r" $\times$ ")


# --- the tables ------------------------------------------------------------------------------------


def overall_table(runs: list[Run], labels: list[str], alphas, averaging: str = "per_image", common: str = "") -> Table:
    """Runs (rows) x PCK at each alpha; the best run per alpha in bold."""
    frame = pd.DataFrame(
        [pck.pck_curve(run.keypoints(), alphas)[averaging].to_numpy() for run in runs],
        index=pd.Index(labels, name="run"),
        columns=[f"PCK@{a:g}" for a in alphas],
    )
    caption = (
        f"PCK of each run at each threshold alpha. {caption_protocol(runs, averaging, common)} Best per column in bold."
    )
    return Table("overall", frame, caption, best_in_columns(frame, dict.fromkeys(frame.columns, "max")))


def per_category_table(
    runs: list[Run], labels: list[str], alpha: float = 0.1, averaging: str = "per_image", common: str = ""
) -> Table:
    """Categories (rows) x runs at one alpha, then the mean of the categories and all pairs; the best run per row
    in bold."""
    tables = [run.keypoints() for run in runs]
    frame = pd.DataFrame(
        {label: category_curves(table, [alpha], averaging)[alpha] for table, label in zip(tables, labels, strict=True)}
    )
    frame.loc[f"mean of {len(frame)} categories"] = frame.mean()
    frame.loc["all pairs"] = [pck.pck_curve(table, [alpha])[averaging].iloc[0] for table in tables]
    frame = frame.rename_axis("category")
    caption = (
        f"PCK@{alpha:g} per category; the last rows: the mean over categories, and PCK over all pairs. "
        f"{caption_protocol(runs, averaging, common)} Best run per row in bold."
    )
    return Table("per_category", frame, caption, best_in_rows(frame, labels))


def difficulty_pck(run: Run, alpha: float) -> dict[str, dict[str, dict]]:
    """pck.difficulty of a run at alpha, from its CSV files."""
    return pck.difficulty(pck.mark_correct(run.keypoints(), [alpha]), run.pairs())


def difficulty_table(
    runs: list[Run], labels: list[str], alpha: float = 0.1, averaging: str = "per_image", common: str = ""
) -> Table:
    """SPair-71k's difficulty levels (rows: flag, level) x runs at one alpha, and the number of pairs at each level
    (of the first run); the best run per row in bold."""
    rows: dict[tuple[str, str], dict] = {}
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        for flag, levels in difficulty_pck(run, alpha).items():
            for level, scores in levels.items():
                row = rows.setdefault((flag.replace("_", " "), level), {})
                row[label] = scores[f"pck@{alpha:g}"][averaging]
                if i == 0:
                    row["pairs"] = scores["pairs"]
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = frame.index.set_names(["flag", "level"])
    frame = frame[[*labels, "pairs"]].astype({"pairs": "Int64"})
    fingerprints = {run.config["resolved"].get("pairs_fingerprint") for run in runs}
    caption = (
        f"PCK@{alpha:g} by SPair-71k difficulty level: viewpoint and scale variation (easy, medium, hard), "
        "truncation and occlusion (none, source, target, both), and the difference of the images' viewpoint bins "
        "(azimuth difference, 0-4 of SPair's 8 bins); pairs: the pairs at that level"
        + (" (of the first run: the runs evaluated different pairs)" if len(fingerprints) > 1 else "")
        + f". {caption_protocol(runs, averaging, common)} Best run per row in bold."
    )
    return Table("difficulty", frame, caption, best_in_rows(frame, labels))


def consistency_table(run: Run, table: pd.DataFrame, label: str, alpha: float = 0.1) -> Table:
    """Per category of the run's per-keypoint table: mean, std (ddof 1), min, max and range of its keypoint ids'
    PCK@alpha and their number, least consistent first."""
    ids = keypoint_id_pck(table, alpha).groupby(level="category")["pck"]
    frame = pd.DataFrame({"mean": ids.mean(), "std": ids.std(), "min": ids.min(), "max": ids.max()})
    frame["range"] = frame["max"] - frame["min"]
    frame["keypoint ids"] = ids.size()
    frame = frame.sort_values("std", ascending=False, kind="stable")
    caption = (
        f"Keypoint consistency of {label}: per category, the mean, standard deviation, min, max and range of its "
        f"keypoint ids' PCK@{alpha:g}, each pooled over the id's occurrences (per keypoint), and the number of ids; "
        f"least consistent first. {caption_protocol([run], 'per_keypoint')} Best per column in bold."
    )
    rules = {"mean": "max", "std": "min", "min": "max", "max": "max", "range": "min"}
    return Table("consistency", frame, caption, best_in_columns(frame, rules), f"consistency:{slug(label)}")


def sensitivity_table(
    run: Run,
    table: pd.DataFrame,
    label: str,
    alphas=DEFAULT_THRESHOLDS,
    level: float = 50.0,
    averaging: str = "per_image",
) -> Table:
    """Per category of the run's per-keypoint table: PCK at each alpha, PCK@max - PCK@min, and the first alpha
    (0.01 steps) at which PCK reaches `level` %; least sensitive first."""
    low, high = min(alphas), max(alphas)
    frame = category_curves(table, alphas, averaging)
    frame.columns = [f"PCK@{a:g}" for a in alphas]
    spread = f"PCK@{high:g} - PCK@{low:g}"
    frame[spread] = frame[f"PCK@{high:g}"] - frame[f"PCK@{low:g}"]
    reach = f"alpha for {level:g}%"
    frame[reach] = first_alpha_reaching(category_curves(table, LEVEL_ALPHAS, averaging), level)
    frame = frame.sort_values(spread, kind="stable")
    caption = (
        f"Threshold sensitivity of {label}: per category, PCK at each alpha, its rise from alpha = {low:g} to "
        f"{high:g}, and the smallest alpha (in steps of 0.01, up to 1) at which PCK reaches {level:g}% (--: never); "
        f"least sensitive first. {caption_protocol([run], averaging)} Best per column in bold."
    )
    rules = {**{f"PCK@{a:g}": "max" for a in alphas}, spread: "min", reach: "min"}
    return Table("sensitivity", frame, caption, best_in_columns(frame, rules), f"sensitivity:{slug(label)}")


def extremes_table(
    run: Run, table: pd.DataFrame, label: str, alpha: float = 0.1, averaging: str = "per_image"
) -> Table:
    """Categories of the run's per-keypoint table, hardest first: PCK@alpha, std of the pairs' PCK, pairs, and the
    hardest and easiest keypoint id (pooled PCK@alpha; ties: the lowest id) with the gap between them."""
    pairs = pair_pck(table, alpha).groupby("category")["pck"]
    frame = pd.DataFrame({"PCK": category_curves(table, [alpha], averaging)[alpha], "std over pairs": pairs.std()})
    frame["pairs"] = pairs.size()
    ids = keypoint_id_pck(table, alpha)["pck"]
    for which, pick in (("hardest", "idxmin"), ("easiest", "idxmax")):
        keys = getattr(ids.groupby(level="category"), pick)()  # category -> (category, kp_id), the first in id order
        frame[f"{which} id"] = keys.map(lambda key: key[1])
        frame[f"{which} PCK"] = pd.Series(ids.loc[list(keys)].to_numpy(), index=keys.index)
    frame["gap"] = frame["easiest PCK"] - frame["hardest PCK"]
    frame = frame.sort_values("PCK", kind="stable").rename_axis("category")
    caption = (
        f"Hardest and easiest categories and keypoints of {label}: categories by PCK@{alpha:g}, hardest first, with "
        f"the standard deviation of their pairs' PCK (per image), and their hardest and easiest keypoint id by PCK "
        f"pooled over the id's occurrences (per keypoint). {caption_protocol([run], averaging)} Best per column in bold."
    )
    rules = {"PCK": "max", "hardest PCK": "max", "easiest PCK": "max", "gap": "min"}
    return Table("extremes", frame, caption, best_in_columns(frame, rules), f"extremes:{slug(label)}")


def group_runs(runs: list[Run]) -> dict[tuple[str, str, str], list[Run]]:
    """Evaluation runs by (dataset, split, PCK threshold): only runs of one group share a table."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        proto = run.metrics["protocol"]
        groups.setdefault((proto["dataset"], proto["split"], proto["pck_norm"]), []).append(run)
    return groups


def group_name(key: tuple[str, str, str]) -> str:
    return "-".join(key)


def group_tables(
    runs: list[Run],
    labels: list[str],
    alphas=DEFAULT_THRESHOLDS,
    alpha: float = 0.1,
    averaging: str = "per_image",
    common: str = "",
) -> list[Table]:
    """The tables of runs of one group: overall, per category and (SPair-71k) per difficulty level; `common`
    (what every run shares) goes into each caption."""
    tables = [
        overall_table(runs, labels, alphas, averaging, common),
        per_category_table(runs, labels, alpha, averaging, common),
    ]
    if all(pck.has_difficulty_flags(run.pairs()) for run in runs):
        tables.append(difficulty_table(runs, labels, alpha, averaging, common))
    return tables


def run_tables(
    run: Run,
    label: str,
    alphas=DEFAULT_THRESHOLDS,
    alpha: float = 0.1,
    averaging: str = "per_image",
    level: float = 50.0,
) -> list[Table]:
    """The original project's analysis of one run: keypoint consistency, threshold sensitivity, extremes."""
    table = run.keypoints()
    return [
        consistency_table(run, table, label, alpha),
        sensitivity_table(run, table, label, alphas, level, averaging),
        extremes_table(run, table, label, alpha, averaging),
    ]


# --- writing ---------------------------------------------------------------------------------------


def cell_text(value: object) -> str:
    """How a cell is shown: numbers with 2 decimals (like every PCK), counts as integers, NaN as '--'."""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    if isinstance(value, float | np.floating):
        return "--" if np.isnan(value) else PCK.format(value)
    return "--" if value is pd.NA else str(value)


def _shown(table: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame and its bold cells with the index as leading columns (a repeated outer label left blank)."""
    frame = table.frame.reset_index()
    bold = pd.concat(
        [pd.DataFrame(False, index=frame.index, columns=frame.columns[: table.frame.index.nlevels]),
         table.bold.reset_index(drop=True)], axis=1,
    )  # fmt: skip
    if table.frame.index.nlevels > 1:
        outer = frame.columns[0]
        frame[outer] = frame[outer].where(frame[outer].ne(frame[outer].shift()), "")
    return frame, bold


def to_latex(table: Table, group: str = "") -> str:
    """A booktabs table (pandas' Styler.to_latex): bold headers, 2 decimals, the bold cells of `table`; its
    \\label is tab:<group>:<label>, one per group of runs (a dataset, split and threshold)."""
    frame, bold = _shown(table)
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame]
    styler = (
        frame.style.format(cell_text, escape="latex", na_rep="--")
        .apply(lambda _: bold.map(lambda b: BOLD if b else ""), axis=None)
        .format_index(escape="latex", axis="columns")
        .map_index(lambda _: BOLD, axis="columns")
        .hide(axis="index")
    )
    latex = styler.to_latex(
        hrules=True,
        caption=latex_text(table.caption),
        label="tab:" + re.sub(r"[^A-Za-z0-9:-]+", "-", ":".join(filter(None, (group, table.label or table.name)))),
        position="t",
        position_float="centering",
        column_format="".join("r" if n else "l" for n in numeric),
    )
    return "% needs \\usepackage{booktabs}\n" + latex


def to_markdown(table: Table) -> str:
    """The caption, then a markdown table with the same cells as the LaTeX one (bold as **)."""
    frame, bold = _shown(table)
    text = frame.map(cell_text).astype(object).where(~bold, "**" + frame.map(cell_text) + "**")
    return f"{table.caption}\n\n" + markdown_table(text)


def write_table(table: Table, folder: str | Path, stem: str | None = None, group: str = "") -> list[Path]:
    """<stem>.tex, <stem>.csv (numbers at full precision) and <stem>.md in `folder`; `group` makes the LaTeX
    label unique among the groups' tables (group_name)."""
    folder = Path(folder)
    make_folder(folder)
    stem = stem or table.name
    paths = [folder / f"{stem}.tex", folder / f"{stem}.csv", folder / f"{stem}.md"]
    atomic_write(paths[0], lambda tmp: tmp.write_text(to_latex(table, group)))
    write_csv(paths[1], table.frame.reset_index())
    atomic_write(paths[2], lambda tmp: tmp.write_text(to_markdown(table)))
    return paths
