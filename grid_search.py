"""Grid search of the window soft-argmax's window K and temperature T, on features extracted once.

Every cell reuses the same features and the same similarity maps (evaluation.predict_variants), so
the grid costs matching time, not backbone time. `score_variants` and `best_per_alpha` also serve
the ensemble weight search.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

import pck
import plots
import results
import summary
from evaluation import (
    Member,
    build_member,
    evaluation_set,
    load_dataset,
    load_model,
    pairs_fingerprint,
    predict_variants,
    resolve,
    seed_everything,
)
from models import Backbone
from pairs import PairRecord, PairSet
from results import pck_column
from settings import AVERAGINGS, GRID_TEMPERATURES, GRID_WINDOWS, EvalConfig, MatchConfig
from viz2d import save_plot


def score_variants(
    pairs: list[PairRecord],
    members: list[Member],
    cfgs: list[MatchConfig],
    *,
    thresholds: list[float],
    norm: str,
    member_weights: list[list[float]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per variant (see evaluation.predict_variants): PCK at each alpha and averaging, and
    time_s, the seconds of the variant's own matching and scoring (shared similarity maps excluded)."""
    rows = []
    for prediction in predict_variants(pairs, members, cfgs, member_weights, progress):
        t0 = time.perf_counter()
        # the overall figures of pck.summarize, without its per-category and per-keypoint-id
        # breakdown, which would cost more than the matching
        overall = pck.overall(pck.keypoint_table(pairs, prediction.pixels, thresholds, norm), thresholds)
        row = {pck_column(a, avg): overall[f"pck@{a:g}"][avg] for a in thresholds for avg in AVERAGINGS}
        rows.append({**row, "time_s": prediction.seconds + time.perf_counter() - t0})
    return pd.DataFrame(rows)


def best_per_alpha(table: pd.DataFrame, thresholds: list[float], select_by: str, keys: list[str]) -> dict[str, dict]:
    """For each alpha, the `keys` of the row with the highest PCK (`select_by` averaging; ties: first row)."""
    best = {}
    for alpha in thresholds:
        row = table.loc[table[pck_column(alpha, select_by)].idxmax()]
        best[f"{alpha:g}"] = {
            **{k: row[k] for k in keys},
            **{f"pck_{avg}": float(row[pck_column(alpha, avg)]) for avg in AVERAGINGS},
        }
    return best


def grid_table(
    pairs: list[PairRecord],
    member: Member,
    *,
    windows: list[int],
    temperatures: list[float],
    thresholds: list[float],
    norm: str,
    match: MatchConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The scores of argmax and of every (window, temperature) cell, in grid order (window-major);
    `match` gives the descriptor sampling and window border of every cell."""
    match = match or MatchConfig()
    cfgs = [replace(match, matcher="argmax")]
    cfgs += [replace(match, matcher="wsoftargmax", window=k, temperature=t) for k in windows for t in temperatures]
    settings = pd.DataFrame(
        [
            {
                "matcher": c.matcher,
                "window": c.window if c.matcher != "argmax" else None,
                "temperature": c.temperature if c.matcher != "argmax" else None,
            }
            for c in cfgs
        ]
    )
    scores = score_variants(pairs, [member], cfgs, thresholds=thresholds, norm=norm, progress=progress)
    table = pd.concat([settings, scores], axis=1)
    return table.astype({"window": "Int64"})


def best_parameters(table: pd.DataFrame, thresholds: list[float], select_by: str) -> tuple[dict, dict]:
    """The best (window, temperature) per alpha, and argmax's PCK per alpha for reference."""
    soft = table[table["matcher"] == "wsoftargmax"].reset_index(drop=True)
    best = best_per_alpha(soft, thresholds, select_by, ["window", "temperature"])
    for entry in best.values():
        entry["window"], entry["temperature"] = int(entry["window"]), float(entry["temperature"])
    argmax = table[table["matcher"] == "argmax"].iloc[0]
    reference = {f"{a:g}": {f"pck_{avg}": float(argmax[pck_column(a, avg)]) for avg in AVERAGINGS} for a in thresholds}
    return best, reference


def grid_config(
    cfg: EvalConfig, grid: dict, protocol: dict, resolved: dict, eval_set: PairSet, device: torch.device, started: float
) -> dict:
    """config.json of a grid search: the settings (the grid's among them), the protocol, what they
    resolved to, the environment."""
    args = {k: v for k, v in asdict(cfg).items() if k not in ("match", "match_params", "save_vis")}
    return {
        "args": {**args, "descriptor": cfg.match.descriptor, "window_border": cfg.match.window_border, **grid},
        "protocol": protocol,
        "resolved": {
            **resolved,
            "pck_norm": cfg.pck_norm,
            "data_root": eval_set.root,
            "pairs_fingerprint": pairs_fingerprint(eval_set.pairs),
        },
        "environment": results.environment(device, started),
    }


def grid_search(
    cfg: EvalConfig,
    pairset: PairSet,
    backbone: Backbone,
    *,
    windows: list[int] = GRID_WINDOWS,
    temperatures: list[float] = GRID_TEMPERATURES,
    select_by: str = "per_image",
    started: float | None = None,
) -> Path:
    """Extract features once, score every (window, temperature) cell, write the results folder."""
    started = started or time.time()
    if select_by not in AVERAGINGS:
        raise ValueError(f"select_by must be one of {tuple(AVERAGINGS)}, got {select_by!r}")
    cfg, protocol = resolve(cfg)
    norm = cfg.pck_norm
    eval_set, skipped = evaluation_set(pairset)
    member, resolved = build_member(cfg, backbone, eval_set)
    t0 = time.perf_counter()
    table = grid_table(
        eval_set.pairs,
        member,
        windows=windows,
        temperatures=temperatures,
        thresholds=cfg.thresholds,
        norm=norm,
        match=cfg.match,
        progress=cfg.progress,
    )
    grid_s = time.perf_counter() - t0
    best, argmax = best_parameters(table, cfg.thresholds, select_by)
    run_dir = results.new_run_dir(cfg.output_dir, [backbone.name, pairset.dataset, pairset.split, "grid"], started)
    grid = {"windows": list(windows), "temperatures": list(temperatures), "select_by": select_by}
    config = grid_config(cfg, grid, protocol, resolved, eval_set, backbone.device, started)
    timings = {**results.feature_timings([member.features.stats]), "grid_s": grid_s, "total_s": time.time() - started}
    best_file = {
        "selected_by": select_by,
        "best": best,
        "argmax": argmax,
        **{key: resolved[key] for key in ("model", "weights", "image_size", "grid")},
        **{"dataset": pairset.dataset, "split": pairset.split, "pck_norm": norm, "descriptor": cfg.match.descriptor},
        "protocol": protocol["name"],
        "pairs": len(eval_set.pairs),
        "keypoints": sum(p.num_keypoints for p in eval_set.pairs),
        "pairs_skipped": skipped,
        "timings": timings,
    }
    results.write_run(run_dir, "grid", config, grid=table, best_parameters=best_file)
    title = f"{backbone.name} on {pairset.dataset} {pairset.split} ({len(eval_set.pairs)} pairs, {norm} threshold)"
    figure = plots.grid_heatmap(table, cfg.thresholds, select_by, title, best)
    save_plot(figure, run_dir / results.PICTURES["grid"])
    print(summary.grid_summary(table, best, argmax, select_by, grid=member.features.prep.grid))
    print(f"results: {run_dir}")
    return run_dir


def run_grid_search(cfg: EvalConfig, *, windows: list[int], temperatures: list[float], select_by: str) -> Path:
    """Load the pairs and the backbone a config names, then grid_search."""
    started = time.time()
    results.check_output_dir(cfg.output_dir)
    cfg, _ = resolve(cfg)
    seed_everything(cfg.seed)
    pairset = load_dataset(cfg)
    return grid_search(
        cfg,
        pairset,
        load_model(cfg),
        windows=windows,
        temperatures=temperatures,
        select_by=select_by,
        started=started,
    )
