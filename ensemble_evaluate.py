"""Ensemble evaluation: several backbones' similarity maps, weighted and summed, then one matcher.

    python ensemble_evaluate.py --member dinov2:0.25 --member dinov3:ckpt.pt:0.65 --member sam:0.10 --dataset spair
    python ensemble_evaluate.py --member dinov2@518 --member dinov3@512 --matcher wsoftargmax --window 5 --temperature 0.2
    python ensemble_evaluate.py --member dinov2 --member dinov3:ckpt.pt --split val --search-weights --weight-step 0.1

Member syntax: MODEL[:WEIGHTS][:WEIGHT][@SIZE]
  MODEL    dinov2 | dinov2_reg | dinov3 | sam, or a sized name like dinov2_vitl14
  WEIGHTS  a weights file or a fine-tuned checkpoint of this model (default: the official file;
           'random' for smoke tests)
  WEIGHT   the member's ensemble weight, a number >= 0; give it for every member or for none
           (none: equal weights). Weights are divided by their sum, so that the soft-argmax
           temperature means what it means for one model.
  SIZE     input size N or HxW (default: --image-size, else the model's default)
  e.g. dinov2:0.25   dinov3:results/finetune/run/best.pt:0.65   sam:0.1@1024   dinov2@448

Common grid (--common-grid): every member's similarity map is resized bilinearly
(align_corners=False) to the patch grid of one reference member, the finest one by default, and
predictions are converted to pixels from that member's grid. --combine features instead resizes
the members' feature maps to that grid and re-normalises them before the similarity: the cosine
similarity of the sqrt(weight)-scaled concatenation of the members' L2-normalised features.

The results folder is that of a single-model evaluation (config.json with every member's settings,
metrics.json, per_pair.csv, per_keypoint.csv). --search-weights instead scores every weight
combination on a simplex grid (steps of --weight-step) and writes weight_search_results.csv,
best_weights.json (best weights per alpha, with the --member arguments to use them) and
weight_search.png, like the grid search.
"""

from __future__ import annotations

import argparse

from semcorr.cli.errors import run_main
from semcorr.cli.flags import (
    add_data_args,
    add_extraction_args,
    add_flip_args,
    add_matcher_args,
    add_output_args,
    add_protocol_args,
    default_text,
    given,
    parse_member,
    parser,
    positive_float,
)
from semcorr.cli.resolve import resolve
from semcorr.config.settings import AVERAGINGS, COMBINE_MODES, COMMON_GRIDS, WeightSearchSettings


class Formatter(argparse.RawDescriptionHelpFormatter):
    """The description kept as written."""


def arguments() -> argparse.ArgumentParser:
    p = parser(__doc__, Formatter)
    g = p.add_argument_group("members")
    g.add_argument(
        "--member",
        dest="members",
        type=parse_member,
        action="append",
        required=True,
        metavar="MODEL[:WEIGHTS][:WEIGHT][@SIZE]",
        help="an ensemble member (repeat for each); see above",
    )
    g.add_argument(
        "--common-grid",
        choices=COMMON_GRIDS,
        help="whose patch grid similarity maps are resized to, and pixels computed from (default: per protocol: "
        "default finest; original coarsest, SAM's 32 x 32)",
    )
    g.add_argument(
        "--combine",
        choices=COMBINE_MODES,
        help="similarity: weighted sum of the members' similarity maps; features: cosine similarity "
        "of the members' concatenated features (resized to the common grid)" + default_text("ensemble.combine"),
    )
    add_extraction_args(g)
    add_data_args(p, several=True)
    add_matcher_args(p)
    add_flip_args(p)
    s = p.add_argument_group("weight search")
    s.add_argument(
        "--search-weights",
        action="store_true",
        help="score every weight combination (member weights ignored) instead of evaluating",
    )
    s.add_argument(
        "--weight-step",
        type=positive_float,
        help="spacing of the simplex grid of weights" + default_text("step", WeightSearchSettings),
    )
    s.add_argument(
        "--select-by",
        choices=tuple(AVERAGINGS),
        help="averaging that picks the best weights" + default_text("select_by", WeightSearchSettings),
    )
    add_protocol_args(p)
    add_output_args(p, baseline=True)
    return p


def main(argv: list[str] | None = None) -> None:
    flags = given(arguments().parse_args(argv))
    if flags.pop("search_weights", False):
        from semcorr.engine.ensemble import run_weight_search  # torch loads after the arguments are parsed

        run_weight_search(*resolve("weight_search", flags))
    else:
        from semcorr.engine.evaluation import run_evaluation

        run_evaluation(resolve("ensemble", flags))


if __name__ == "__main__":
    run_main(main)
