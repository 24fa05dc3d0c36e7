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

from semcorr.cli.errors import run_main
from semcorr.cli.flags import (
    add_backbone_args,
    add_matcher_args,
    add_output_args,
    add_protocol_args,
    attach_values,
    count,
    default_text,
    given,
    parser,
    path,
    points,
    positive_int,
)
from semcorr.cli.resolve import resolve
from semcorr.config.settings import PairSettings


def arguments() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    g = p.add_argument_group("images")
    g.add_argument("--src", type=path, required=True, help="source image")
    g.add_argument("--trg", type=path, required=True, help="target image")
    g.add_argument("--points", type=points, help="source points 'x,y;x,y;...' in pixels (default: a grid)")
    g.add_argument(
        "--grid",
        type=positive_int,
        help="without --points: an N x N grid of source points" + default_text("grid", PairSettings),
    )
    g.add_argument(
        "--mutual",
        type=positive_int,
        metavar="N",
        help="without --points: the N most similar mutual nearest neighbours instead of a grid",
    )
    g.add_argument(
        "--heatmap",
        type=count,
        nargs="*",
        metavar="I",
        help="also draw the similarity map of these points (indices into the points)",
    )
    add_backbone_args(p, "optional")
    add_matcher_args(p)
    add_protocol_args(p)
    add_output_args(p, save_vis=False, seed=False)
    return p


def main(argv: list[str] | None = None) -> Path:
    flags = given(arguments().parse_args(attach_values(sys.argv[1:] if argv is None else argv, ("--points",))))
    from semcorr.engine.pair import run_match  # torch loads after the arguments are parsed

    return run_match(*resolve("match", flags))


if __name__ == "__main__":
    run_main(main)
