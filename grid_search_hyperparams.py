"""Grid search of the window soft-argmax's window K and temperature T, on features extracted once.

    python grid_search_hyperparams.py --model dinov2 --dataset spair            # val split, 5 x 5 grid
    python grid_search_hyperparams.py --checkpoint best.pt --windows 5 7 9 --temperatures 0.1 0.2
    python evaluate.py --checkpoint best.pt --params results/<grid run>/best_parameters.json --params-alpha 0.1

Every cell reuses the same features and the same similarity maps, so the grid costs matching
time, not backbone time. The results folder (results/<time>_<model>_<dataset>_<split>_grid) holds:
  grid_search_results.csv   one row per (K, T), plus argmax for reference: PCK at each alpha with
                            both averagings, and the seconds of the cell's matcher and scoring
  best_parameters.json      the best (K, T) at each alpha, chosen by --select-by (ties: the first
                            cell in grid order); evaluate.py / training_free_evaluation.py
                            --params read it
  grid_search_heatmap.png   PCK over the grid, one panel per alpha, the best cell outlined
  config.json               the settings, the resolved backbone and the environment
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import pck
from cli import (
    HelpFormatter,
    add_backbone_args,
    add_data_args,
    add_descriptor_arg,
    add_output_args,
    eval_config,
    odd_window,
    positive_float,
    run_main,
)
from evaluation import (
    EvalConfig,
    MatchConfig,
    Member,
    build_member,
    evaluation_set,
    feature_timings,
    load_model,
    predict_variants,
    seed_everything,
)
from models import Backbone
from pairs import PairRecord, PairSet, load_pairs
from results import environment, new_run_dir, write_csv, write_json
from viz2d import save_plot

DEFAULT_WINDOWS = [3, 5, 7, 9, 11]
DEFAULT_TEMPERATURES = [0.05, 0.1, 0.2, 0.5, 1.0]
AVERAGINGS = tuple(pck.AVERAGING)  # per_image, per_keypoint


def pck_column(alpha: float, averaging: str) -> str:
    return f"pck@{alpha:g}_{averaging}"


def score_variants(
    pairs: list[PairRecord],
    members: list[Member],
    cfgs: list[MatchConfig],
    thresholds: list[float],
    norm: str,
    member_weights: list[list[float]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per variant (see evaluation.predict_variants): PCK at each alpha and averaging, and
    time_s, the seconds of the variant's own matching and scoring (shared similarity maps excluded)."""
    preds, seconds = predict_variants(pairs, members, cfgs, member_weights, progress)
    rows = []
    for pred, match_s in zip(preds, seconds, strict=True):
        t0 = time.perf_counter()
        # the overall figures of pck.summarize, without its per-category and per-keypoint-id
        # breakdown, which would cost more than the matching
        overall = pck.overall(pck.keypoint_table(pairs, pred, thresholds, norm), thresholds)
        row = {pck_column(a, avg): overall[f"pck@{a:g}"][avg] for a in thresholds for avg in AVERAGINGS}
        rows.append({**row, "time_s": match_s + time.perf_counter() - t0})
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
    windows: list[int],
    temperatures: list[float],
    thresholds: list[float],
    norm: str,
    descriptor: str = "nearest",
    progress: bool = True,
) -> pd.DataFrame:
    """The scores of argmax and of every (window, temperature) cell, in grid order (window-major)."""
    cfgs = [MatchConfig("argmax", descriptor=descriptor)]
    cfgs += [MatchConfig("wsoftargmax", k, t, descriptor) for k in windows for t in temperatures]
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
    scores = score_variants(pairs, [member], cfgs, thresholds, norm, progress=progress)
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


def plot_grid(
    table: pd.DataFrame, thresholds: list[float], averaging: str, title: str, best: dict[str, dict]
) -> Figure:
    """PCK over windows (rows) x temperatures (columns), one panel per alpha, the cell `best` chose outlined."""
    soft = table[table["matcher"] == "wsoftargmax"]
    argmax = table[table["matcher"] == "argmax"].iloc[0]
    windows = sorted(soft["window"].unique())
    temperatures = sorted(soft["temperature"].unique())
    fig = Figure(figsize=(4.2 * len(thresholds), 0.5 * len(windows) + 2.2), dpi=100)
    axes = fig.subplots(1, len(thresholds), squeeze=False)[0]
    for ax, alpha in zip(axes, thresholds, strict=True):
        grid = soft.pivot_table(index="window", columns="temperature", values=pck_column(alpha, averaging))
        grid = grid.reindex(index=windows, columns=temperatures)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        for i in range(len(windows)):
            for j in range(len(temperatures)):
                ax.text(j, i, f"{grid.iat[i, j]:.1f}", ha="center", va="center", fontsize=8, color="white")
        chosen = best[f"{alpha:g}"]
        i, j = windows.index(chosen["window"]), temperatures.index(chosen["temperature"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        ax.set_xticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
        ax.set_yticks(range(len(windows)), [str(k) for k in windows])
        ax.set_xlabel("temperature T")
        ax.set_ylabel("window K")
        ax.set_title(f"PCK@{alpha:g} ({averaging}); argmax {argmax[pck_column(alpha, averaging)]:.1f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def grid_search(
    cfg: EvalConfig,
    pairset: PairSet,
    backbone: Backbone,
    windows: list[int] = DEFAULT_WINDOWS,
    temperatures: list[float] = DEFAULT_TEMPERATURES,
    select_by: str = "per_image",
    started: float | None = None,
) -> Path:
    """Extract features once, score every (window, temperature) cell, write the results folder."""
    started = started or time.time()
    if select_by not in AVERAGINGS:
        raise ValueError(f"select_by must be one of {AVERAGINGS}, got {select_by!r}")
    eval_set, skipped, norm = evaluation_set(pairset, cfg.pck_norm)
    if not eval_set.pairs:
        raise ValueError(f"{pairset.dataset} {pairset.split} has no pairs with ground-truth keypoints to search on")
    member, resolved = build_member(
        backbone, eval_set, cfg.image_size, cfg.resize, cfg.cache_dir, cfg.batch_size, cfg.num_workers, cfg.progress
    )
    t0 = time.perf_counter()
    table = grid_table(
        eval_set.pairs, member, windows, temperatures, cfg.thresholds, norm, cfg.match.descriptor, cfg.progress
    )
    grid_s = time.perf_counter() - t0
    best, argmax = best_parameters(table, cfg.thresholds, select_by)
    run_dir = new_run_dir(cfg.output_dir, [backbone.name, pairset.dataset, pairset.split, "grid"], started)
    args = {k: v for k, v in asdict(cfg).items() if k not in ("match", "match_params", "save_vis")}
    write_json(
        run_dir / "config.json",
        {
            "args": {
                **args,
                "descriptor": cfg.match.descriptor,
                "windows": list(windows),
                "temperatures": list(temperatures),
                "select_by": select_by,
            },
            "resolved": {**resolved, "pck_norm": norm, "data_root": pairset.root},
            "environment": environment(backbone.device),
        },
    )
    write_csv(run_dir / "grid_search_results.csv", table)
    write_json(
        run_dir / "best_parameters.json",
        {
            "selected_by": select_by,
            "best": best,
            "argmax": argmax,
            "model": backbone.name,
            "weights": resolved["weights"],
            "dataset": pairset.dataset,
            "split": pairset.split,
            "pck_norm": norm,
            "descriptor": cfg.match.descriptor,
            "image_size": resolved["image_size"],
            "pairs": len(eval_set.pairs),
            "keypoints": sum(p.num_keypoints for p in eval_set.pairs),
            "pairs_skipped": skipped,
            "timings": {**feature_timings([member.features.stats]), "grid_s": grid_s, "total_s": time.time() - started},
        },
    )
    title = f"{backbone.name} on {pairset.dataset} {pairset.split} ({len(eval_set.pairs)} pairs, {norm} threshold)"
    fig = plot_grid(table, cfg.thresholds, select_by, title, best)
    save_plot(fig, run_dir / "grid_search_heatmap.png")
    print(table.drop(columns="time_s").round(2).to_string(index=False))
    for alpha, entry in best.items():
        print(
            f"best at PCK@{alpha} ({select_by}): K={entry['window']} T={entry['temperature']:g} -> "
            f"{entry[f'pck_{select_by}']:.2f} (argmax {argmax[alpha][f'pck_{select_by}']:.2f})"
        )
    print(f"results: {run_dir}")
    return run_dir


def run_grid_search(cfg: EvalConfig, windows: list[int], temperatures: list[float], select_by: str) -> Path:
    """Load the pairs and the backbone a config names, then grid_search."""
    started = time.time()
    seed_everything(cfg.seed)
    pairset = load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.split, layout=cfg.layout, limit=cfg.limit)
    return grid_search(cfg, pairset, load_model(cfg), windows, temperatures, select_by, started)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_backbone_args(p, "optional")
    add_data_args(p, split="val")
    g = p.add_argument_group("grid")
    g.add_argument("--windows", type=odd_window, nargs="+", default=DEFAULT_WINDOWS, help="window sizes K (odd)")
    g.add_argument(
        "--temperatures", type=positive_float, nargs="+", default=DEFAULT_TEMPERATURES, help="temperatures T"
    )
    g.add_argument("--select-by", choices=AVERAGINGS, default="per_image", help="averaging that picks the best cell")
    add_descriptor_arg(g)
    add_output_args(p, save_vis=False)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    cfg = eval_config(args, match=MatchConfig("wsoftargmax", descriptor=args.descriptor))
    run_grid_search(cfg, args.windows, args.temperatures, args.select_by)


if __name__ == "__main__":
    run_main(main)
