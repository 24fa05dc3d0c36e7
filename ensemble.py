"""Ensembles: several backbones' similarity maps, weighted and summed, then one matcher; and the
search for the best weights on a simplex grid (features and similarity maps computed once).

Common grid: every member's similarity map is resized bilinearly (align_corners=False) to the patch
grid of one reference member (EnsembleConfig.common_grid), and predictions are converted to pixels
from that member's grid. combine="features" instead resizes the members' feature maps to that grid
and re-normalises them before the similarity: the cosine similarity of the sqrt(weight)-scaled
concatenation of the members' L2-normalised features.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

import plots
import results
import summary
from evaluation import (
    Member,
    build_member,
    evaluate_members,
    evaluation_set,
    load_dataset,
    pairs_fingerprint,
    resolve,
    seed_everything,
)
from grid_search import best_per_alpha, score_variants
from helper_functions import FeatureSet
from models import Backbone, create_backbone, is_finetuned
from pairs import PairSet
from settings import COMBINE_MODES, COMMON_GRIDS, EnsembleConfig, EvalConfig, MemberSpec, get_protocol
from viz2d import save_plot


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
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
    check_alignment(members)
    ref = reference_member(members, common_grid)
    order = [ref] + [i for i in range(len(members)) if i != ref]
    ordered = [members[i] for i in order]
    if combine == "features":
        ref_fs = ordered[0].features
        ordered = [ordered[0]] + [Member(resampled(m.features, ref_fs), m.weight) for m in ordered[1:]]
    return ordered, order


def load_members(cfg: EvalConfig, specs: list[MemberSpec]) -> list[Backbone]:
    """Each member's backbone: its model with a weights file, or a fine-tuned checkpoint of it, built
    and run as the (resolved) config's protocol says."""
    precision = cfg.precision or get_protocol(cfg.protocol).conventions.precision
    backbones = []
    for spec in specs:
        finetuned = spec.weights is not None and is_finetuned(spec.weights)
        files = {"checkpoint": spec.weights} if finetuned else {"weights": spec.weights}
        backbones.append(create_backbone(spec.model, **files, device=cfg.device, precision=precision, build=cfg.build))
    return backbones


def resolve_ensemble(cfg: EvalConfig, ens: EnsembleConfig) -> tuple[EvalConfig, EnsembleConfig, dict]:
    """The config and the ensemble settings with the protocol's conventions filled in (the common grid
    too), and the protocol record."""
    cfg, protocol = resolve(cfg)
    preset = get_protocol(cfg.protocol).conventions.common_grid
    if ens.common_grid is not None and ens.common_grid != preset:
        protocol["overrides"]["common_grid"] = ens.common_grid
        if cfg.protocol == "original":
            warnings.warn(
                f"common_grid={ens.common_grid!r} leaves the original protocol (it used {preset!r})", stacklevel=2
            )
    ens = replace(ens, common_grid=ens.common_grid or preset)
    protocol["settings"]["common_grid"] = ens.common_grid
    return cfg, ens, protocol


def build_members(
    cfg: EvalConfig, eval_set: PairSet, specs: list[MemberSpec], backbones: list[Backbone]
) -> tuple[list[Member], list[dict]]:
    """Each member's features (cached like any evaluation's) with its normalised weight."""
    members, resolved = [], []
    for spec, backbone, weight in zip(specs, backbones, normalised_weights(specs), strict=True):
        member, info = build_member(cfg, backbone, eval_set, image_size=spec.image_size, weight=weight)
        members.append(member)
        resolved.append({"spec": str(spec), "weight": weight, **info})
    return members, resolved


def ensemble_config(
    cfg: EvalConfig,
    ens: EnsembleConfig,
    *,
    resolved: list[dict],
    order: list[int],
    ordered: list[Member],
    eval_set: PairSet,
    protocol: dict,
    started: float,
) -> dict:
    """config.json of an ensemble run: the settings, every member's resolved settings (`ordered`: the
    members as the engine combines them, reference first), the environment."""
    return {
        "args": {**asdict(replace(cfg, model="ensemble", weights=None, checkpoint=None, layer=None)), **asdict(ens)},
        "protocol": protocol,
        "resolved": {
            "members": resolved,
            "reference_member": order[0],
            "grid": list(ordered[0].features.prep.grid),
            "pck_norm": cfg.pck_norm,
            "data_root": eval_set.root,
            "pairs_fingerprint": pairs_fingerprint(eval_set.pairs),
        },
        "environment": results.environment(ordered[0].features.feats.device, started),
    }


def evaluate_ensemble(
    cfg: EvalConfig, ens: EnsembleConfig, pairset: PairSet, backbones: list[Backbone], started: float | None = None
) -> Path:
    """Features of every member, combined similarity, matching, PCK and the results folder."""
    started = started or time.time()
    cfg, ens, protocol = resolve_ensemble(cfg, ens)
    eval_set, skipped = evaluation_set(pairset)
    members, resolved = build_members(cfg, eval_set, ens.members, backbones)
    stats = [m.features.stats for m in members]
    ordered, order = engine_members(members, ens.common_grid, ens.combine)
    del members  # with combine="features", the unresized maps are no longer needed
    config = ensemble_config(
        cfg, ens, resolved=resolved, order=order, ordered=ordered, eval_set=eval_set, protocol=protocol, started=started
    )
    parts = ["ensemble", pairset.dataset, pairset.split, cfg.match.matcher]
    return evaluate_members(
        cfg,
        eval_set,
        ordered,
        skipped=skipped,
        feature_stats=stats,
        config=config,
        parts=parts,
        started=started,
    )


def best_weights(
    table: pd.DataFrame, thresholds: list[float], select_by: str, specs: list[MemberSpec]
) -> dict[str, dict]:
    """For each alpha, the best weights of a weight-search table, and the --member arguments that use them."""
    weight_columns = [f"weight_{i}" for i in range(len(specs))]
    best = best_per_alpha(table, thresholds, select_by, weight_columns)
    for entry in best.values():
        weights = [float(entry.pop(c)) for c in weight_columns]
        entry["weights"] = weights
        entry["member_args"] = " ".join(f"--member {replace(s, weight=w)}" for s, w in zip(specs, weights, strict=True))
    return best


def search_weights(
    cfg: EvalConfig, ens: EnsembleConfig, pairset: PairSet, backbones: list[Backbone], started: float | None = None
) -> Path:
    """Score every weight combination on the simplex grid (features and similarities computed once)."""
    started = started or time.time()
    cfg, ens, protocol = resolve_ensemble(cfg, ens)
    norm = cfg.pck_norm
    combos = simplex_weights(len(ens.members), ens.weight_step)
    specs = [replace(s, weight=None) for s in ens.members]  # the search sets the weights
    eval_set, skipped = evaluation_set(pairset)
    members, resolved = build_members(cfg, eval_set, specs, backbones)
    stats = [m.features.stats for m in members]
    ordered, order = engine_members(members, ens.common_grid, ens.combine)
    del members
    t0 = time.perf_counter()
    scores = score_variants(
        eval_set.pairs,
        ordered,
        [cfg.match] * len(combos),
        thresholds=cfg.thresholds,
        norm=norm,
        member_weights=[[w[i] for i in order] for w in combos],
        progress=cfg.progress,
    )
    search_s = time.perf_counter() - t0
    weight_columns = [f"weight_{i}" for i in range(len(specs))]
    table = pd.concat([pd.DataFrame(combos, columns=weight_columns), scores], axis=1)
    best = best_weights(table, cfg.thresholds, ens.select_by, specs)
    run_dir = results.new_run_dir(cfg.output_dir, ["ensemble", pairset.dataset, pairset.split, "weights"], started)
    searched = replace(ens, members=specs)
    config = ensemble_config(
        cfg,
        searched,
        resolved=resolved,
        order=order,
        ordered=ordered,
        eval_set=eval_set,
        protocol=protocol,
        started=started,
    )
    best_file = {
        "selected_by": ens.select_by,
        "members": [str(s) for s in specs],
        "best": best,
        "matcher": asdict(cfg.match),
        "protocol": protocol["name"],
        "dataset": pairset.dataset,
        "split": pairset.split,
        "pck_norm": norm,
        "pairs": len(eval_set.pairs),
        "pairs_skipped": skipped,
        "timings": {**results.feature_timings(stats), "search_s": search_s, "total_s": time.time() - started},
    }
    results.write_run(run_dir, "weight_search", config, weights=table, best_weights=best_file)
    figure = plots.weight_profiles(table, [s.label for s in specs], cfg.thresholds, ens.select_by)
    save_plot(figure, run_dir / results.PICTURES["weight_search"])
    print(summary.weight_search_summary(best, ens.select_by))
    print(f"results: {run_dir}")
    return run_dir


def run_ensemble(cfg: EvalConfig, ens: EnsembleConfig, search: bool = False) -> Path:
    """Load the pairs and every member, then evaluate the ensemble (or search its weights)."""
    started = time.time()
    results.check_output_dir(cfg.output_dir)
    seed_everything(cfg.seed)
    if search:  # bad weights or a bad step fail before any model is loaded
        simplex_weights(len(ens.members), ens.weight_step)
    else:
        normalised_weights(ens.members)
    cfg, _ = resolve(cfg)
    pairset = load_dataset(cfg)
    backbones = load_members(cfg, ens.members)
    run = search_weights if search else evaluate_ensemble
    return run(cfg, ens, pairset, backbones, started)
