"""Match your own two images: predicted correspondences drawn to a PNG and written as JSON.

    python match_pair.py --src a.jpg --trg b.jpg --points "120,80;200,150" --model dinov2
    python match_pair.py --src a.jpg --trg b.jpg --model dinov3 --grid 6           # 6 x 6 points on the source
    python match_pair.py --src a.jpg --trg b.jpg --mutual 40 --heatmap 0 1         # 40 mutual nearest neighbours
    python match_pair.py --src a.jpg --trg b.jpg --checkpoint best.pt --params best_parameters.json

Points are pixels (x, y) of the source as image viewers show it (EXIF orientation applied), 0-based
with integer values at pixel centres. Without --points, a grid of points over the source is matched
(--grid, 5 x 5 by default: few enough to read every line), or with --mutual N its mutual nearest neighbours: source patches whose
most similar target patch has them as its most similar source patch, the N most similar of them.
The folder results/<time>_match_<model>_<src>_<trg>/ receives
  config.json       the settings (kind "match"), the resolved backbone and the environment
  matches.json      each match: source point, predicted target point and peak cosine similarity
  matches.png       the matches, coloured by their peak similarity (colour bar), numbered by --heatmap id
  heatmap_<i>.png   for each --heatmap i: point i's similarity over the target image
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli import (
    HelpFormatter,
    add_backbone_args,
    add_matcher_args,
    add_output_args,
    add_protocol_args,
    attach_values,
    eval_config,
    parse_points,
    path,
    run_main,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    g = p.add_argument_group("images")
    g.add_argument("--src", type=path, required=True, help="source image")
    g.add_argument("--trg", type=path, required=True, help="target image")
    g.add_argument("--points", help="source points 'x,y;x,y;...' in pixels (default: a grid)")
    g.add_argument("--grid", type=int, default=5, help="without --points: an N x N grid of source points")
    g.add_argument(
        "--mutual",
        type=int,
        metavar="N",
        help="without --points: the N most similar mutual nearest neighbours instead of a grid",
    )
    g.add_argument(
        "--heatmap",
        type=int,
        nargs="*",
        default=[],
        metavar="I",
        help="also draw the similarity map of these points (indices into the points)",
    )
    add_backbone_args(p, "optional")
    add_matcher_args(p)
    add_protocol_args(p)
    add_output_args(p, save_vis=False, seed=False)
    p.set_defaults(dataset="custom", data_root=None, split="pair", layout="large", limit=None, seed=0)
    p.set_defaults(thresholds=[], pck_norm=None)  # the EvalConfig fields of a dataset
    return p


def main(argv: list[str] | None = None) -> Path:
    args = parser().parse_args(attach_values(sys.argv[1:] if argv is None else argv, ("--points",)))
    points = parse_points(args.points) if args.points else None
    if args.points is None and args.grid < 1:
        raise ValueError(f"--grid must be >= 1, got {args.grid}")
    if args.mutual is not None and args.mutual < 1:
        raise ValueError(f"--mutual must be >= 1, got {args.mutual}")
    cfg = eval_config(args)
    from pair_matching import run_match  # torch loads after the arguments are parsed

    return run_match(
        cfg, src=args.src, trg=args.trg, points=points, grid=args.grid, mutual=args.mutual, heatmaps=args.heatmap
    )


if __name__ == "__main__":
    run_main(main)
