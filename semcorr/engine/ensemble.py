"""The search for an ensemble's best member weights on a simplex grid: the members' features and similarity
maps are computed once, and every weight combination only re-sums and re-matches them. (Evaluating an
ensemble is the evaluation flow with several members: semcorr/engine/evaluation.py.)"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pandas as pd

from models import Backbone
from semcorr.config.settings import EvalSettings, MemberSettings, WeightSearchSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.pairs import PairSet
from semcorr.engine.evaluation import build_members, evaluation_set, load_backbones, run_resolved
from semcorr.engine.grid_search import best_per_alpha, score_variants
from semcorr.engine.members import engine_members
from semcorr.report import labels, summary
from semcorr.runs import folders, metrics
from semcorr.runs.record import RunContext, run_record, start_run
from semcorr.viz import charts
from semcorr.viz.viz2d import save_plot


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


def member_arg(member: MemberSettings, weight: float | None = None) -> str:
    """The --member argument of a member: MODEL[:WEIGHTS][:WEIGHT][@SIZE]."""
    files = member.backbone.checkpoint or member.backbone.weights
    parts = [member.backbone.model, *([files] if files else []), *([f"{weight:g}"] if weight is not None else [])]
    return ":".join(parts) + "@" + "x".join(map(str, member.image_size))


def member_label(member: MemberSettings) -> str:
    """Short, for figures: 'dinov3_vitb16 (best.pt) @512x512'."""
    files = member.backbone.checkpoint or member.backbone.weights
    name = f" ({Path(files).name})" if files else ""
    return f"{member.backbone.model}{name} @{'x'.join(map(str, member.image_size))}"


def best_weights(
    table: pd.DataFrame, thresholds: tuple[float, ...], select_by: str, members: tuple[MemberSettings, ...]
) -> dict[str, dict]:
    """For each alpha, the best weights of a weight-search table, and the --member arguments that use them."""
    weight_columns = [f"weight_{i}" for i in range(len(members))]
    best = best_per_alpha(table, thresholds, select_by, weight_columns)
    for entry in best.values():
        weights = [float(entry.pop(c)) for c in weight_columns]
        entry["weights"] = weights
        entry["member_args"] = " ".join(f"--member {member_arg(m, w)}" for m, w in zip(members, weights, strict=True))
    return best


def run_weight_search(settings: EvalSettings, search: WeightSearchSettings) -> Path:
    """Load the pairs and every member, then search the weights."""
    simplex_weights(len(settings.members), search.step)  # a bad step fails before any model is loaded
    context = start_run(settings.output)
    return search_weights(settings, search, load_pairs(settings.data), load_backbones(settings), context)


def search_weights(
    settings: EvalSettings,
    search: WeightSearchSettings,
    pairset: PairSet,
    backbones: list[Backbone],
    context: RunContext | None = None,
) -> Path:
    """Score every weight combination on the simplex grid (features and similarities computed once)."""
    context = context or RunContext()
    data = settings.data
    combos = simplex_weights(len(settings.members), search.step)
    eval_set, skipped = evaluation_set(pairset)
    members, resolved = build_members(settings, eval_set, backbones)
    stats = [m.features.stats for m in members]
    ordered, order = engine_members(members, settings.ensemble)
    del members
    t0 = time.perf_counter()
    scores = score_variants(
        eval_set.pairs,
        ordered,
        [settings.match] * len(combos),
        data,
        member_weights=[[w[i] for i in order] for w in combos],
        progress=settings.output.progress,
    )
    search_s = time.perf_counter() - t0
    weight_columns = [f"weight_{i}" for i in range(len(settings.members))]
    table = pd.concat([pd.DataFrame(combos, columns=weight_columns), scores], axis=1)
    best = best_weights(table, data.thresholds, search.select_by, settings.members)
    config = run_record(
        "weight_search",
        settings,
        resolved=run_resolved(resolved, order, ordered, eval_set, settings.match),
        context=context,
        device=ordered[0].features.feats.device,
        search=search,
    )
    best_file = {
        "selected_by": search.select_by,
        "members": [member_arg(m) for m in settings.members],
        "best": best,
        "matcher": settings.match.matcher,
        "protocol": settings.protocol.name,
        "dataset": pairset.dataset,
        "split": pairset.split,
        "pck_norm": data.pck_norm,
        "pairs": len(eval_set.pairs),
        "keypoints": sum(p.num_keypoints for p in eval_set.pairs),
        "pairs_skipped": skipped,
        "timings": {
            **metrics.feature_timings(stats),
            "search_s": search_s,
            "startup_s": context.startup_s,
            "total_s": time.time() - context.started,
        },
    }
    names = [member_label(m) for m in settings.members]
    figure = charts.weight_profiles(table, names, data.thresholds, search.select_by)

    def write(run_dir: Path) -> None:
        folders.write_run(run_dir, "weight_search", config, weights=table, best_weights=best_file)
        save_plot(figure, run_dir / folders.PICTURES["weight_search"])

    run_dir = folders.write_new_run(settings.output.output_dir, labels.folder_parts(config), context.started, write)
    context_lines = summary.search_context(config, best_file)
    print(summary.weight_search_summary(best, search.select_by, len(combos), context_lines))
    print(f"results: {run_dir}")
    return run_dir
