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

from cli import (
    HelpFormatter,
    add_backbone_args,
    add_data_args,
    add_descriptor_arg,
    add_output_args,
    add_protocol_args,
    eval_config,
    odd_window,
    positive_float,
    run_main,
)
from settings import AVERAGINGS, GRID_TEMPERATURES, GRID_WINDOWS, WINDOW_BORDERS, MatchConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_backbone_args(p, "optional")
    add_data_args(p, split="val")
    g = p.add_argument_group("grid")
    g.add_argument("--windows", type=odd_window, nargs="+", default=list(GRID_WINDOWS), help="window sizes K (odd)")
    g.add_argument(
        "--temperatures", type=positive_float, nargs="+", default=list(GRID_TEMPERATURES), help="temperatures T"
    )
    g.add_argument(
        "--select-by", choices=tuple(AVERAGINGS), default="per_image", help="averaging that picks the best cell"
    )
    add_descriptor_arg(g)
    g.add_argument("--window-border", choices=WINDOW_BORDERS, help="soft-argmax window at the border (see --protocol)")
    add_protocol_args(p)
    add_output_args(p, save_vis=False)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    match = MatchConfig("wsoftargmax", descriptor=args.descriptor, window_border=args.window_border)
    cfg = eval_config(args, match=match)
    from grid_search import run_grid_search  # torch loads after the arguments are parsed

    run_grid_search(cfg, windows=args.windows, temperatures=args.temperatures, select_by=args.select_by)


if __name__ == "__main__":
    run_main(main)
