"""Grid search of the window soft-argmax's window K and temperature T, on features extracted once.

    python grid_search_hyperparams.py --model dinov2 --dataset spair            # val split, 5 x 5 grid
    python grid_search_hyperparams.py --checkpoint best.pt --windows 5 7 9 --temperatures 0.1 0.2
    python evaluate.py --checkpoint best.pt --params results/<grid run>/best_parameters.json --params-alpha 0.1

Every cell reuses the same features and the same similarity maps, so the grid costs matching
time, not backbone time. The results folder (results/<time>_<model>_<dataset>_<split>_grid) holds:
  grid_search_results.csv   one row per (K, T), plus argmax for reference: PCK at each alpha with
                            both averagings, and the seconds of the cell's matcher and scoring
  best_parameters.json      the matcher and the best (K, T) at each alpha, chosen by --select-by
                            (ties: the first cell in grid order); evaluate.py /
                            training_free_evaluation.py --params read it
  grid_search_heatmap.png   PCK over the grid, one panel per alpha, the best cell outlined
  config.json               the settings, the resolved backbone and the environment
"""

from __future__ import annotations

import argparse

from semcorr.cli.errors import run_main
from semcorr.cli.flags import (
    add_backbone_args,
    add_data_args,
    add_matcher_args,
    add_output_args,
    add_protocol_args,
    default_text,
    given,
    odd_window,
    parser,
    temperature,
)
from semcorr.cli.resolve import default, resolve
from semcorr.config.settings import AVERAGINGS, GridSettings


def arguments() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    add_backbone_args(p, "optional")
    add_data_args(p, split="val", kap=False)
    g = p.add_argument_group("grid")
    g.add_argument(
        "--windows", type=odd_window, nargs="+", help=f"window sizes K (odd) (default: {default_list('windows')})"
    )
    g.add_argument(
        "--temperatures",
        type=temperature,
        nargs="+",
        help=f"temperatures T, each >= 1e-4 (default: {default_list('temperatures')})",
    )
    g.add_argument(
        "--select-by",
        choices=tuple(AVERAGINGS),
        help="averaging that picks the best cell" + default_text("select_by", GridSettings),
    )
    add_matcher_args(p, grid=True)
    add_protocol_args(p)
    add_output_args(p, save_vis=False)
    return p


def default_list(name: str) -> str:
    return " ".join(f"{v:g}" for v in default(GridSettings, name))


def main(argv: list[str] | None = None) -> None:
    flags = {"split": "val", **given(arguments().parse_args(argv))}
    from semcorr.engine.grid_search import run_grid_search  # torch loads after the arguments are parsed

    run_grid_search(*resolve("grid", flags))


if __name__ == "__main__":
    run_main(main)
