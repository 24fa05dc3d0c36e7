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
import itertools
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from cli import (
    HelpFormatter,
    add_data_args,
    add_extraction_args,
    add_matcher_args,
    add_output_args,
    eval_config,
    image_size,
    run_main,
)
from evaluation import (
    EvalConfig,
    Member,
    build_member,
    evaluation_set,
    feature_timings,
    predict_keypoints,
    run_metrics,
    save_run,
    score,
    seed_everything,
)
from grid_search_hyperparams import AVERAGINGS, best_per_alpha, pck_column, score_variants
from helper_functions import FeatureSet
from models import Backbone, load_backbone
from pairs import PairSet, load_pairs
from results import environment, new_run_dir, write_csv, write_json
from viz2d import save_plot

COMMON_GRIDS = ("finest", "coarsest", "first")
COMBINE = ("similarity", "features")


@dataclass
class MemberSpec:
    """One ensemble member as written on the command line: MODEL[:WEIGHTS][:WEIGHT][@SIZE]."""

    model: str
    weights: str | None = None
    weight: float | None = None
    image_size: list[int] | None = None

    def __str__(self) -> str:
        text = ":".join(
            [
                self.model,
                *([self.weights] if self.weights else []),
                *([f"{self.weight:g}"] if self.weight is not None else []),
            ]
        )
        return text + ("@" + "x".join(map(str, self.image_size)) if self.image_size else "")


def parse_member(text: str) -> MemberSpec:
    """'dinov3:ckpt.pt:0.65@512' -> MemberSpec('dinov3', 'ckpt.pt', 0.65, [512])."""
    body, size = text, None
    if "@" in text:
        body, size_text = text.rsplit("@", 1)
        try:
            size = image_size(size_text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"member {text!r}: the part after '@' must be an image size N or HxW, got {size_text!r}"
            ) from None
    model, *rest = body.split(":")
    weight = None
    if rest:
        try:
            weight = float(rest[-1])
            rest = rest[:-1]
        except ValueError:
            pass  # the last part is the weights file
    if not model or any(not part for part in rest):
        raise argparse.ArgumentTypeError(
            f"member {text!r}: expected MODEL[:WEIGHTS][:WEIGHT][@SIZE], e.g. dinov3:ckpt.pt:0.65"
        )
    if weight is not None and not (math.isfinite(weight) and weight >= 0):
        raise argparse.ArgumentTypeError(f"member {text!r}: the ensemble weight must be a number >= 0, got {weight}")
    return MemberSpec(model, ":".join(rest) or None, weight, size)


def normalised_weights(specs: list[MemberSpec]) -> list[float]:
    """The members' weights divided by their sum; equal weights when none is given."""
    given = [s.weight for s in specs]
    if all(w is None for w in given):
        return [1.0 / len(specs)] * len(specs)
    if any(w is None for w in given):
        missing = ", ".join(str(s) for s in specs if s.weight is None)
        raise ValueError(f"give an ensemble weight to every member or to none; {missing} has none (e.g. dinov2:0.3)")
    total = sum(given)
    if total <= 0:
        raise ValueError("the ensemble weights sum to 0: give at least one member a positive weight")
    return [w / total for w in given]


def reference_member(members: list[Member], common_grid: str) -> int:
    """Index of the member whose grid the similarity maps are resized to (the first of ties)."""
    areas = [m.features.prep.grid[0] * m.features.prep.grid[1] for m in members]
    if common_grid == "first":
        return 0
    if common_grid == "finest":
        return areas.index(max(areas))
    if common_grid == "coarsest":
        return areas.index(min(areas))
    raise ValueError(f"common grid must be one of {COMMON_GRIDS}, got {common_grid!r}")


def check_alignment(members: list[Member]) -> None:
    """Resizing maps between grids is only right when every grid spans the same part of the image."""
    preps = [m.features.prep for m in members]
    if preps[0].resize == "pad":
        aspects = {round(p.width / p.height, 2) for p in preps}
        if len(aspects) > 1:
            sizes = ", ".join(f"{p.height}x{p.width}" for p in preps)
            raise ValueError(
                f"with --resize pad, members need input sizes of one aspect ratio to share a grid, got "
                f"{sizes}: give them sizes of the same shape, or use --resize squash"
            )


def resampled(fs: FeatureSet, ref: FeatureSet, chunk: int = 32) -> FeatureSet:
    """fs's feature maps resized bilinearly to ref's grid and re-normalised, with ref's geometry."""
    parts = [
        F.normalize(
            F.interpolate(fs.feats[i : i + chunk].float(), size=ref.prep.grid, mode="bilinear", align_corners=False),
            dim=1,
        ).to(fs.feats.dtype)
        for i in range(0, len(fs.feats), chunk)
    ]
    return FeatureSet(torch.cat(parts), fs.index, ref.prep, ref.geometries, fs.stats)


def engine_members(members: list[Member], common_grid: str, combine: str) -> tuple[list[Member], list[int]]:
    """The members in the engine's order (reference first), and that order as indices into `members`."""
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
    check_alignment(members)
    ref = reference_member(members, common_grid)
    order = [ref] + [i for i in range(len(members)) if i != ref]
    ordered = [members[i] for i in order]
    if combine == "features":
        ref_fs = ordered[0].features
        ordered = [ordered[0]] + [Member(resampled(m.features, ref_fs), m.weight) for m in ordered[1:]]
    return ordered, order


def build_members(
    cfg: EvalConfig, eval_set: PairSet, specs: list[MemberSpec], backbones: list[Backbone]
) -> tuple[list[Member], list[dict]]:
    """Each member's features (cached like any evaluation's) with its normalised weight."""
    members, resolved = [], []
    for spec, backbone, weight in zip(specs, backbones, normalised_weights(specs), strict=True):
        member, info = build_member(
            backbone,
            eval_set,
            spec.image_size or cfg.image_size,
            cfg.resize,
            cfg.cache_dir,
            cfg.batch_size,
            cfg.num_workers,
            cfg.progress,
            weight,
        )
        members.append(member)
        resolved.append({"spec": str(spec), "weight": weight, **info})
    return members, resolved


def load_members(specs: list[MemberSpec], device: str) -> list[Backbone]:
    return [load_backbone(spec.model, weights=spec.weights, device=device) for spec in specs]


def ensemble_config(
    cfg: EvalConfig,
    specs: list[MemberSpec],
    resolved: list[dict],
    order: list[int],
    members: list[Member],
    common_grid: str,
    combine: str,
    norm: str,
    data_root: str,
    device: torch.device,
    extra: dict | None = None,
) -> dict:
    """config.json of an ensemble run: the settings, every member's resolved settings, the environment."""
    return {
        "args": {
            **asdict(replace(cfg, model="ensemble", weights=None, checkpoint=None, layer=None)),
            "members": [asdict(s) for s in specs],
            "common_grid": common_grid,
            "combine": combine,
            **(extra or {}),
        },
        "resolved": {
            "members": resolved,
            "reference_member": order[0],
            "grid": list(members[0].features.prep.grid),
            "pck_norm": norm,
            "data_root": data_root,
        },
        "environment": environment(device),
    }


def evaluate_ensemble(
    cfg: EvalConfig,
    pairset: PairSet,
    specs: list[MemberSpec],
    backbones: list[Backbone],
    common_grid: str = "finest",
    combine: str = "similarity",
    started: float | None = None,
) -> Path:
    """Features of every member, combined similarity, matching, PCK and the results folder."""
    started = started or time.time()
    eval_set, skipped, norm = evaluation_set(pairset, cfg.pck_norm)
    members, resolved = build_members(cfg, eval_set, specs, backbones)
    stats = [m.features.stats for m in members]
    ordered, order = engine_members(members, common_grid, combine)
    del members  # with --combine features, the unresized maps are no longer needed
    t0 = time.perf_counter()
    pred = predict_keypoints(eval_set.pairs, ordered, cfg.match, cfg.progress)
    table, summary = score(eval_set.pairs, pred, cfg.thresholds, norm)
    metrics = run_metrics(eval_set, norm, table, summary, skipped, stats, time.perf_counter() - t0, started)
    config = ensemble_config(
        cfg, specs, resolved, order, ordered, common_grid, combine, norm, pairset.root, backbones[0].device
    )
    parts = ["ensemble", pairset.dataset, pairset.split, cfg.match.matcher]
    return save_run(cfg.output_dir, parts, started, config, metrics, table, eval_set.pairs, cfg.save_vis)


def simplex_weights(n: int, step: float) -> list[list[float]]:
    """Every n-vector of non-negative multiples of `step` that sums to 1."""
    if not 0 < step <= 1 or abs(round(1 / step) * step - 1) > 1e-9:
        raise ValueError(f"--weight-step must divide 1 (e.g. 0.5, 0.25, 0.1, 0.05), got {step}")
    parts = round(1 / step)
    combos = []
    for cuts in itertools.combinations(range(parts + n - 1), n - 1):  # stars and bars
        bounds = (-1, *cuts, parts + n - 1)
        combos.append([(b - a - 1) / parts for a, b in itertools.pairwise(bounds)])
    return combos


def plot_weight_search(table: pd.DataFrame, specs: list[MemberSpec], thresholds: list[float], averaging: str) -> Figure:
    """For each member (specs without weights), the best PCK reached with each of its weights (one line per alpha)."""
    fig = Figure(figsize=(4 * len(specs), 3.4), dpi=100)
    axes = fig.subplots(1, len(specs), squeeze=False)[0]
    for i, (ax, spec) in enumerate(zip(axes, specs, strict=True)):
        for alpha in thresholds:
            profile = table.groupby(f"weight_{i}")[pck_column(alpha, averaging)].max()
            ax.plot(profile.index, profile.to_numpy(), marker="o", ms=3, label=f"PCK@{alpha:g}")
        ax.set_xlabel(f"weight of {spec}")  # model, weights file and size: tells apart two sizes of one model
        ax.set_ylabel(f"best PCK ({averaging}) with that weight")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def search_weights(
    cfg: EvalConfig,
    pairset: PairSet,
    specs: list[MemberSpec],
    backbones: list[Backbone],
    step: float = 0.1,
    select_by: str = "per_image",
    common_grid: str = "finest",
    combine: str = "similarity",
    started: float | None = None,
) -> Path:
    """Score every weight combination on the simplex grid (features and similarities computed once)."""
    started = started or time.time()
    combos = simplex_weights(len(specs), step)
    specs = [replace(s, weight=None) for s in specs]  # the search sets the weights
    eval_set, skipped, norm = evaluation_set(pairset, cfg.pck_norm)
    if not eval_set.pairs:
        raise ValueError(f"{pairset.dataset} {pairset.split} has no pairs with ground-truth keypoints to search on")
    members, resolved = build_members(cfg, eval_set, specs, backbones)
    stats = [m.features.stats for m in members]
    ordered, order = engine_members(members, common_grid, combine)
    del members
    t0 = time.perf_counter()
    scores = score_variants(
        eval_set.pairs,
        ordered,
        [cfg.match] * len(combos),
        cfg.thresholds,
        norm,
        [[w[i] for i in order] for w in combos],
        cfg.progress,
    )
    search_s = time.perf_counter() - t0
    weight_columns = [f"weight_{i}" for i in range(len(specs))]
    table = pd.concat([pd.DataFrame(combos, columns=weight_columns), scores], axis=1)
    best = best_per_alpha(table, cfg.thresholds, select_by, weight_columns)
    for entry in best.values():
        weights = [float(entry.pop(c)) for c in weight_columns]
        entry["weights"] = weights
        entry["member_args"] = " ".join(
            f"--member {MemberSpec(s.model, s.weights, w, s.image_size)}" for s, w in zip(specs, weights, strict=True)
        )
    run_dir = new_run_dir(cfg.output_dir, ["ensemble", pairset.dataset, pairset.split, "weights"], started)
    write_json(
        run_dir / "config.json",
        ensemble_config(
            cfg,
            specs,
            resolved,
            order,
            ordered,
            common_grid,
            combine,
            norm,
            pairset.root,
            backbones[0].device,
            {"weight_step": step, "select_by": select_by},
        ),
    )
    write_csv(run_dir / "weight_search_results.csv", table)
    write_json(
        run_dir / "best_weights.json",
        {
            "selected_by": select_by,
            "members": [str(s) for s in specs],
            "best": best,
            "matcher": asdict(cfg.match),
            "dataset": pairset.dataset,
            "split": pairset.split,
            "pck_norm": norm,
            "pairs": len(eval_set.pairs),
            "pairs_skipped": skipped,
            "timings": {**feature_timings(stats), "search_s": search_s, "total_s": time.time() - started},
        },
    )
    fig = plot_weight_search(table, specs, cfg.thresholds, select_by)
    save_plot(fig, run_dir / "weight_search.png")
    for alpha, entry in best.items():
        print(f"best at PCK@{alpha} ({select_by}): {entry[f'pck_{select_by}']:.2f} with {entry['member_args']}")
    print(f"results: {run_dir}")
    return run_dir


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
        default="finest",
        help="whose patch grid similarity maps are resized to (and pixels computed from)",
    )
    g.add_argument(
        "--combine",
        choices=COMBINE,
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
    s.add_argument("--select-by", choices=AVERAGINGS, default="per_image", help="averaging that picks the best")
    add_output_args(p)
    p.set_defaults(model="ensemble", weights=None, layer=None)  # the EvalConfig fields of a single model
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    cfg = eval_config(args)
    started = time.time()
    seed_everything(cfg.seed)
    if args.search_weights:  # bad weights or a bad step fail before any model is loaded
        simplex_weights(len(args.members), args.weight_step)
    else:
        normalised_weights(args.members)
    pairset = load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.split, layout=cfg.layout, limit=cfg.limit)
    backbones = load_members(args.members, cfg.device)
    if args.search_weights:
        search_weights(
            cfg,
            pairset,
            args.members,
            backbones,
            args.weight_step,
            args.select_by,
            args.common_grid,
            args.combine,
            started,
        )
    else:
        evaluate_ensemble(cfg, pairset, args.members, backbones, args.common_grid, args.combine, started)


if __name__ == "__main__":
    run_main(main)
