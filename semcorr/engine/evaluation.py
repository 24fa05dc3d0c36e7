"""The evaluation flow every experiment reuses:

pairs -> unique images -> each member's features, once per image (cached) -> similarity of source keypoints
against target patches, grouped by target image, summed over the members -> matcher -> original pixels ->
PCK (and PCK-dagger; with --kap, KAP from the similarity maps: semcorr/engine/kap.py) -> results folder (written by
semcorr/runs/, summarised by semcorr/report/summary.py).

A single-model evaluation has one member of weight 1; an ensemble several (semcorr/engine/members.py).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import pck
from models import Backbone, create_backbone
from semcorr.config.settings import Benchmarks, EvalSettings, MatchSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.images import ImageRef
from semcorr.data.pairs import NO_KEYPOINTS, DatasetError, PairRecord, PairSet
from semcorr.engine import flip, kap
from semcorr.engine.matching import predict_variants
from semcorr.engine.members import Member, build_member, engine_members
from semcorr.report import baselines, labels, summary
from semcorr.runs import folders, metrics
from semcorr.runs.record import RunContext, run_record, start_run


def run_evaluation(settings: EvalSettings | Benchmarks) -> Path:
    """Evaluate the run's members on its dataset split (or on each of several benchmarks: engine/benchmarks.py);
    returns the new results folder."""
    if isinstance(settings, Benchmarks):
        from semcorr.engine.benchmarks import run_benchmarks

        return run_benchmarks(settings)
    context = start_run(settings.output)
    return evaluate(settings, load_pairs(settings.data), load_backbones(settings), context)


def load_backbones(settings: EvalSettings) -> list[Backbone]:
    """Each member's backbone, as its settings say."""
    return [create_backbone(member.backbone) for member in settings.members]


def evaluate(
    settings: EvalSettings, pairset: PairSet, backbones: Backbone | list[Backbone], context: RunContext | None = None
) -> Path:
    """Features, matching, PCK and the results folder for pairs already loaded and backbones already built."""
    backbones = backbones if isinstance(backbones, list) else [backbones]
    context = context or RunContext()
    eval_set, skipped = evaluation_set(pairset)
    extra = []
    if settings.flip_align != "off":
        flip.check_flip_pairs(eval_set.pairs, eval_set.dataset)
        extra = flip.mirrored_sources(eval_set.pairs)
    members, resolved = build_members(settings, eval_set, backbones, extra)
    stats = [m.features.stats for m in members]
    alone = members_alone(settings, eval_set, members, resolved) if len(members) > 1 else None
    ordered, order = engine_members(members, settings.ensemble)
    del members  # with combine="features", the unresized maps are no longer needed
    config = run_record(
        "evaluation",
        settings,
        resolved=run_resolved(resolved, order, ordered, eval_set, settings.match),
        context=context,
        device=ordered[0].features.feats.device,
    )
    for warning in matcher_warnings(settings, resolved, ordered[0].features.prep.grid):
        warnings.warn(warning, stacklevel=2)
    t0 = time.perf_counter()
    progress = settings.output.progress
    (prediction,) = predict_variants(eval_set.pairs, ordered, [settings.match], progress=progress, with_similarity=True)
    flipped = None
    if settings.flip_align != "off":
        prediction, flipped = flip.align_by_flip(
            eval_set.pairs, ordered, settings.match, prediction, settings.flip_align, settings.flip_masks, progress
        )
    data = settings.data
    table = pck.keypoint_table(
        eval_set.pairs, prediction.pixels, data.thresholds, data.pck_norm, prediction.similarity, strict=data.strict
    )
    if flipped is not None:
        table["flipped"] = flipped.taken
    scores, matching_s = pck.summarize(table), time.perf_counter() - t0
    samples, kap_summary, kap_s = run_kap(settings, eval_set.pairs, ordered)
    run_metrics = metrics.evaluation_metrics(
        eval_set,
        norm=data.pck_norm,
        coordinates=settings.extract.coordinates,
        strict=data.strict,
        table=table,
        summary=scores,
        skipped=skipped,
        feature_stats=stats,
        matching_s=matching_s,
        started=context.started,
        startup_s=context.startup_s,
        flip=flipped.summary(settings.flip_align) if flipped else None,
        kap=kap_summary,
        kap_s=kap_s,
    )
    if alone is not None:
        run_metrics["members"] = alone
    baseline = baselines.baseline_record(config, run_metrics, settings.output)
    if baseline is not None:
        run_metrics["baseline"] = baseline
    pair_columns = flipped.pair_columns() if flipped else {}
    tables = {"per_keypoint": table, **({"per_keypoint_kap": samples} if samples is not None else {})}
    return save_evaluation(settings, config, run_metrics, tables, eval_set.pairs, context, pair_columns)


def run_kap(
    settings: EvalSettings, pairs: list[PairRecord], members: list[Member]
) -> tuple[pd.DataFrame | None, dict | None, float | None]:
    """With --kap: every source-visible keypoint's KAP scores (semcorr/engine/kap.py), the figures they give
    (pck.kap) and the seconds both took; else nothing."""
    if not settings.data.kap:
        return None, None, None
    t0, data = time.perf_counter(), settings.data
    samples = kap.kap_samples(
        pairs, members, descriptor=settings.match.descriptor, alphas=data.thresholds, norm=data.pck_norm,
        progress=settings.output.progress,
    )  # fmt: skip
    return samples, pck.kap(samples), time.perf_counter() - t0


def build_members(
    settings: EvalSettings, eval_set: PairSet, backbones: list[Backbone], extra: list[ImageRef] = ()
) -> tuple[list[Member], list[dict]]:
    """Each member's features of the pairs' images and the `extra` ones (cached like any evaluation's), and what
    they resolved to."""
    images = [*eval_set.unique_images(), *extra]
    built = [
        build_member(member, settings.extract, backbone, images, progress=settings.output.progress)
        for member, backbone in zip(settings.members, backbones, strict=True)
    ]
    return [member for member, _ in built], [resolved for _, resolved in built]


def members_alone(settings: EvalSettings, eval_set: PairSet, members: list[Member], resolved: list[dict]) -> list[dict]:
    """Each ensemble member's PCK on its own (its features on its own grid, the run's matcher and pairs): what a
    single-model evaluation of it gives, to stand beside the ensemble's."""
    data = settings.data
    scores = []
    for member, what in zip(members, resolved, strict=True):
        (prediction,) = predict_variants(eval_set.pairs, [Member(member.features)], [settings.match], progress=False)
        table = pck.keypoint_table(
            eval_set.pairs, prediction.pixels, data.thresholds, data.pck_norm, strict=data.strict
        )
        scores.append({"model": what["model"], "weights": what["weights"], "weights_origin": what["weights_origin"],
                       "weight": member.weight, **pck.overall(table, list(data.thresholds))})  # fmt: skip
    return scores


def run_resolved(
    resolved: list[dict], order: list[int], ordered: list[Member], eval_set: PairSet, match: MatchSettings
) -> dict:
    """config.json's "resolved" of an evaluation: each member's, whose grid they meet on, the settings its matcher
    uses, the pairs."""
    import matching_strategies

    return {
        "members": resolved,
        "matcher_uses": list(matching_strategies.MATCHERS[match.matcher].uses),
        "reference_member": order[0],
        "grid": list(ordered[0].features.prep.grid),
        "data_root": eval_set.root,
        "pairs_fingerprint": pairs_fingerprint(eval_set.pairs),
    }


def evaluable(pairset: PairSet) -> tuple[list[PairRecord], dict[str, int]]:
    """Pairs with ground-truth keypoints, and the skip counts (the loader's plus those without)."""
    keep = [p for p in pairset.pairs if p.num_keypoints > 0]
    skipped = dict(pairset.skipped)
    if len(keep) < len(pairset.pairs):
        skipped[NO_KEYPOINTS] = skipped.get(NO_KEYPOINTS, 0) + len(pairset.pairs) - len(keep)
    return keep, skipped


def evaluation_set(pairset: PairSet) -> tuple[PairSet, dict[str, int]]:
    """The pairs with ground truth (with the loader's notes), and the skip counts; none is an error."""
    pairs, skipped = evaluable(pairset)
    if not pairs:
        why = "; skipped " + ", ".join(f"{n} ({reason})" for reason, n in skipped.items()) if skipped else ""
        draw = (
            f". Pairs without keypoints give no PCK; to match and draw them: python match_pair.py --pairs {pairset.root}"
            if pairset.dataset == "custom" and skipped.get(NO_KEYPOINTS)
            else ""
        )
        raise DatasetError(f"no pairs to evaluate in {pairset.root} ({pairset.dataset} {pairset.split}){why}{draw}")
    return PairSet(pairset.dataset, pairset.split, pairset.root, pairs, notes=pairset.notes), skipped


def pairs_fingerprint(pairs: list[PairRecord]) -> str:
    """A short hash of the pair list (ids, images and keypoints, in order): two runs of the same
    fingerprint evaluated the same pairs."""
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(f"{p.pair_id}|{p.src.key}|{p.trg.key}|".encode())
        digest.update(np.ascontiguousarray(p.src_kps, np.float32).tobytes())
        digest.update(np.ascontiguousarray(p.trg_kps, np.float32).tobytes())
    return digest.hexdigest()[:16]


def save_evaluation(
    settings: EvalSettings,
    config: dict,
    run_metrics: dict,
    tables: dict[str, pd.DataFrame],
    pairs: list[PairRecord],
    context: RunContext,
    pair_columns: dict[str, np.ndarray] | None = None,
) -> Path:
    """A new results folder with the run's files (and pictures of its N best and worst pairs); prints the summary.
    `tables`: per_keypoint (and per_keypoint_kap); `pair_columns`: more per-pair values for per_pair.csv, in pair
    order. A folder that cannot be completed (a full disk) is not left behind; the features are in the cache."""
    table = tables["per_keypoint"]
    per_pair = pck.pair_table(table, pairs).assign(**(pair_columns or {}))

    def write(run_dir: Path) -> None:
        folders.write_run(run_dir, "evaluation", config, per_pair=per_pair, metrics=run_metrics, **tables)
        if settings.output.save_vis:
            from semcorr.viz import figures  # matplotlib loads only when pictures are asked for

            figures.save_best_worst(run_dir / "vis", pairs, table, settings.output.save_vis)

    run_dir = folders.write_new_run(settings.output.output_dir, labels.folder_parts(config), context.started, write)
    print(summary.evaluation_summary(config, run_metrics))
    print(f"results: {run_dir}")
    return run_dir


def matcher_warnings(settings: EvalSettings, resolved: list[dict], grid: tuple[int, int]) -> list[str]:
    """What does not fit in a windowed matcher's setting: a window not smaller than the patch grid, or K and T
    that a grid search chose for another model, image size or patch grid (--params)."""
    import matching_strategies

    match = settings.match
    if "window" not in matching_strategies.MATCHERS[match.matcher].uses:
        return []
    out = []
    if match.window >= min(grid):
        out.append(
            f"--window {match.window} is not smaller than the {grid[0]}x{grid[1]} patch grid: the window spans "
            f"the whole map, so soft-argmax averages over all of it; choose K < {min(grid)}"
        )
    if settings.params is None or len(resolved) != 1:
        return out
    here = {"model": resolved[0]["model"], "image_size": resolved[0]["image_size"], "grid": list(grid)}
    searched = settings.params.searched
    differ = [k for k in here if k in searched and searched[k] != here[k]]
    if differ:

        def text(setting: dict) -> str:
            return ", ".join(
                f"{k.replace('_', ' ')} {'x'.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in setting.items()
                if k in differ
            )

        out.append(
            f"--params {settings.params.path} (best at PCK@{settings.params.alpha:g}): K and T were searched with "
            f"{text(searched)}, but this run has {text(here)}; they may not be the best here (run "
            "grid_search_hyperparams.py for this setting)"
        )
    return out
