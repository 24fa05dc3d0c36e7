"""Grid search of a windowed matcher's window K and temperature T, on features extracted once.

Every cell reuses the same features and the same similarity maps (matching.predict_variants), so the grid
costs matching time, not backbone time. `score_variants` and `best_per_alpha` also serve the ensemble
weight search.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

import pck
from models import Backbone
from semcorr.config.settings import AVERAGINGS, DataSettings, EvalSettings, GridSettings, MatchSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.pairs import PairRecord, PairSet
from semcorr.engine.evaluation import build_members, evaluation_set, load_backbones, pairs_fingerprint
from semcorr.engine.matching import predict_variants
from semcorr.engine.members import Member
from semcorr.report import labels, summary
from semcorr.runs import folders, metrics
from semcorr.runs.folders import pck_column
from semcorr.runs.record import RunContext, run_record, start_run
from semcorr.viz import charts
from semcorr.viz.viz2d import save_plot


def score_variants(
    pairs: list[PairRecord],
    members: list[Member],
    variants: list[MatchSettings],
    data: DataSettings,
    *,
    member_weights: list[list[float]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per variant (see matching.predict_variants): PCK at each of `data`'s alphas and each averaging, and
    time_s, the seconds of the variant's own matching and scoring (shared similarity maps excluded)."""
    rows = []
    for prediction in predict_variants(pairs, members, variants, member_weights, progress):
        t0 = time.perf_counter()
        # the overall figures of pck.summarize, without its per-category and per-keypoint-id
        # breakdown, which would cost more than the matching
        table = pck.keypoint_table(pairs, prediction.pixels, data.thresholds, data.pck_norm, strict=data.strict)
        overall = pck.overall(table, data.thresholds)
        row = {pck_column(a, avg): overall[f"pck@{a:g}"][avg] for a in data.thresholds for avg in AVERAGINGS}
        rows.append({**row, "time_s": prediction.seconds + time.perf_counter() - t0})
    return pd.DataFrame(rows)


def best_per_alpha(
    table: pd.DataFrame, thresholds: tuple[float, ...], select_by: str, keys: list[str]
) -> dict[str, dict]:
    """For each alpha, the `keys` of the row with the highest PCK (`select_by` averaging), its PCK, and how many rows
    reach that PCK ("tied"; of those, the first row is named)."""
    best = {}
    for alpha in thresholds:
        scores = table[pck_column(alpha, select_by)]
        row = table.loc[scores.idxmax()]
        best[f"{alpha:g}"] = {
            **{k: row[k] for k in keys},
            **{f"pck_{avg}": float(row[pck_column(alpha, avg)]) for avg in AVERAGINGS},
            "tied": int(np.isclose(scores, scores.max(), rtol=0, atol=1e-9).sum()),
        }
    return best


def grid_table(
    pairs: list[PairRecord],
    member: Member,
    grid: GridSettings,
    match: MatchSettings,
    data: DataSettings,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """The scores of argmax and of every (window, temperature) cell of `match`'s matcher, in grid order
    (window-major); `match` gives the descriptor sampling and the window border of every cell."""
    variants = [replace(match, matcher="argmax")]
    variants += [replace(match, window=k, temperature=t) for k in grid.windows for t in grid.temperatures]
    cells = pd.DataFrame(
        [
            {
                "matcher": v.matcher,
                "window": v.window if v.matcher != "argmax" else None,
                "temperature": v.temperature if v.matcher != "argmax" else None,
            }
            for v in variants
        ]
    )
    scores = score_variants(pairs, [member], variants, data, progress=progress)
    return pd.concat([cells, scores], axis=1).astype({"window": "Int64"})


def best_parameters(table: pd.DataFrame, thresholds: tuple[float, ...], select_by: str) -> tuple[dict, dict]:
    """The best (window, temperature) per alpha, and argmax's PCK per alpha for reference."""
    soft = table[table["matcher"] != "argmax"].reset_index(drop=True)
    best = best_per_alpha(soft, thresholds, select_by, ["window", "temperature"])
    for entry in best.values():
        entry["window"], entry["temperature"] = int(entry["window"]), float(entry["temperature"])
    argmax = table[table["matcher"] == "argmax"].iloc[0]
    reference = {f"{a:g}": {f"pck_{avg}": float(argmax[pck_column(a, avg)]) for avg in AVERAGINGS} for a in thresholds}
    return best, reference


def run_grid_search(settings: EvalSettings, grid: GridSettings) -> Path:
    """Load the pairs and the backbone the settings name, then grid_search."""
    context = start_run(settings.output)
    return grid_search(settings, grid, load_pairs(settings.data), load_backbones(settings)[0], context)


def grid_search(
    settings: EvalSettings, grid: GridSettings, pairset: PairSet, backbone: Backbone, context: RunContext | None = None
) -> Path:
    """Extract features once, score every (window, temperature) cell, write the results folder."""
    context = context or RunContext()
    data = settings.data
    eval_set, skipped = evaluation_set(pairset)
    members, resolved = build_members(settings, eval_set, [backbone])
    t0 = time.perf_counter()
    table = grid_table(eval_set.pairs, members[0], grid, settings.match, data, progress=settings.output.progress)
    grid_s = time.perf_counter() - t0
    best, argmax = best_parameters(table, data.thresholds, grid.select_by)
    device = members[0].features.feats.device
    run_resolved = {
        "members": resolved,
        "data_root": eval_set.root,
        "pairs_fingerprint": pairs_fingerprint(eval_set.pairs),
    }
    config = run_record("grid", settings, resolved=run_resolved, context=context, device=device, grid=grid)
    timings = {**metrics.feature_timings([members[0].features.stats]), "grid_s": grid_s}
    best_file = {
        "selected_by": grid.select_by,
        "matcher": settings.match.matcher,
        "best": best,
        "argmax": argmax,
        **{key: resolved[0][key] for key in ("model", "weights", "image_size", "grid")},
        **{"dataset": pairset.dataset, "split": pairset.split, "pck_norm": data.pck_norm},
        "descriptor": settings.match.descriptor,
        "protocol": settings.protocol.name,
        "pairs": len(eval_set.pairs),
        "keypoints": sum(p.num_keypoints for p in eval_set.pairs),
        "pairs_skipped": skipped,
        "timings": {**timings, "startup_s": context.startup_s, "total_s": time.time() - context.started},
    }
    title = (
        f"{backbone.name} on {pairset.dataset} {pairset.split} ({len(eval_set.pairs)} pairs, {data.pck_norm} threshold)"
    )
    figure = charts.grid_heatmap(table, data.thresholds, grid.select_by, title, best)

    def write(run_dir: Path) -> None:
        folders.write_run(run_dir, "grid", config, grid=table, best_parameters=best_file)
        save_plot(figure, run_dir / folders.PICTURES["grid"])

    run_dir = folders.write_new_run(settings.output.output_dir, labels.folder_parts(config), context.started, write)
    context_lines = summary.search_context(config, best_file)
    print(summary.grid_summary(table, best, argmax, grid.select_by, members[0].features.prep.grid, context_lines))
    print(f"results: {run_dir}")
    return run_dir
