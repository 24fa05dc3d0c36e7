"""Gather results folders into one table, model x dataset x matcher x PCK, beside published numbers.

    python report.py results/                                   # every evaluation run under results/
    python report.py results/ --markdown report.md --csv report.csv --alphas 0.05 0.1 0.2

Each row is one evaluation run (a folder with config.json and metrics.json: single models and
ensembles; grid and weight searches are skipped). PCK is written "per image (per keypoint)".
The 'published' columns hold the original project's numbers (ViT-B backbones, square resize,
nearest patch) when a run has the same backbone, setting, matcher, dataset, split and PCK
threshold; they are copied in published.py, so this script needs nothing but the runs. The tables
are built by analysis.py, which the notebooks use too.
"""

from __future__ import annotations

import argparse

from cli import run_main
from settings import DEFAULT_THRESHOLDS


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("paths", nargs="+", help="results folders, or folders holding them")
    p.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS), help="PCK thresholds shown")
    p.add_argument("--markdown", help="also write the markdown table here")
    p.add_argument("--csv", help="also write the full table (numbers, paths) here")
    args = p.parse_args(argv)
    from analysis import report_table, to_markdown
    from fileio import atomic_write, write_csv

    table = report_table(args.paths, tuple(args.alphas))
    if table.empty:
        raise FileNotFoundError(f"no evaluation results (metrics.json) under {', '.join(args.paths)}")
    text = to_markdown(table, tuple(args.alphas))
    print(text)
    if args.markdown:
        atomic_write(args.markdown, lambda tmp: tmp.write_text(text))
    if args.csv:
        write_csv(args.csv, table)
    return table


if __name__ == "__main__":
    run_main(main)
