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

from cli import (
    HelpFormatter,
    add_data_args,
    add_extraction_args,
    add_matcher_args,
    add_output_args,
    add_protocol_args,
    eval_config,
    parse_member,
    run_main,
)
from settings import AVERAGINGS, COMBINE_MODES, COMMON_GRIDS, EnsembleConfig


class Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, the description kept as written."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
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
        help="whose patch grid similarity maps are resized to, and pixels computed from (default protocol: "
        "finest; original: coarsest, SAM's 32 x 32)",
    )
    g.add_argument(
        "--combine",
        choices=COMBINE_MODES,
        default="similarity",
        help="similarity: weighted sum of the members' similarity maps; features: cosine similarity "
        "of the members' concatenated features (resized to the common grid)",
    )
    add_extraction_args(g)
    add_data_args(p)
    add_matcher_args(p)
    s = p.add_argument_group("weight search")
    s.add_argument(
        "--search-weights",
        action="store_true",
        help="score every weight combination (member weights ignored) instead of evaluating",
    )
    s.add_argument("--weight-step", type=float, default=0.1, help="spacing of the simplex grid of weights")
    s.add_argument("--select-by", choices=tuple(AVERAGINGS), default="per_image", help="averaging that picks the best")
    add_protocol_args(p)
    add_output_args(p)
    p.set_defaults(model="ensemble", weights=None, layer=None)  # the EvalConfig fields of a single model
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    ens = EnsembleConfig(args.members, args.common_grid, args.combine, args.weight_step, args.select_by)
    from ensemble import run_ensemble  # torch loads after the arguments are parsed

    run_ensemble(eval_config(args), ens, search=args.search_weights)


if __name__ == "__main__":
    run_main(main)
