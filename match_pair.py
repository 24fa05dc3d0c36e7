"""Match your own images: predicted correspondences printed, drawn and written as JSON and CSV.

    python match_pair.py --src a.jpg --trg b.jpg --points "120,80;200,150" --model dinov2
    python match_pair.py --src a.jpg --trg b.jpg --model dinov3 --grid 6           # 6 x 6 points on the source
    python match_pair.py --src a.jpg --trg b.jpg --mutual 40 --heatmap 0 1         # 40 mutual nearest neighbours
    python match_pair.py --src a.jpg --trg b.jpg --checkpoint best.pt --params best_parameters.json
    python match_pair.py --pairs my_pairs.json --model dinov2                     # every pair of a pairs file

Points are pixels (x, y) of the source as image viewers show it (EXIF orientation applied), 0-based
with integer values at pixel centres. Without --points, a grid of points over the source is matched
(--grid, 5 x 5 by default: few enough to read every line), or with --mutual N its mutual nearest neighbours: source
patches whose most similar target patch has them as its most similar source patch, the N most similar of them.
--pairs takes a custom pairs file (semcorr/data/custom_pairs.py; keypoints optional): a pair with keypoints
has its source keypoints matched and its target keypoints drawn as the ground truth; one without is matched
at --points, a grid or mutual neighbours like two images.
The folder results/<time>_match_<weights>_<model>_<size>_<src>_<trg>/ (or _<pairs file>/) receives
  config.json       the settings (kind "match"), the resolved backbone and the environment
  matches.json      per pair, each match: source point, predicted target point, peak cosine similarity (truth)
  matches.csv       the same, one row per match
  matches.png       the matches, coloured by their peak similarity (colour bar), numbered by --heatmap index
                    (matches_<pair id>.png for each pair of a pairs file)
  heatmap_<i>.png   for each --heatmap i: point i's similarity over the target image (heatmap_<pair id>_<i>.png)
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
    g.add_argument("--src", type=path, help="source image")
    g.add_argument("--trg", type=path, help="target image")
    g.add_argument(
        "--pairs", type=path, metavar="FILE", help="instead: a custom pairs file (.json or .csv); every pair is matched"
    )
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
    add_protocol_args(p, dataset=False)
    add_output_args(p, save_vis=False, seed=False)
    return p


def main(argv: list[str] | None = None) -> Path:
    parser = arguments()
    flags = given(parser.parse_args(attach_values(sys.argv[1:] if argv is None else argv, ("--points",))))
    images = flags.keys() & {"src", "trg"}
    if ("pairs" in flags) == bool(images) or 0 < len(images) < 2:
        parser.error("give --src and --trg (two images), or --pairs (a pairs file)")
    from semcorr.engine.pair import run_match  # torch loads after the arguments are parsed

    return run_match(*resolve("match", flags))


if __name__ == "__main__":
    run_main(main)
