"""The evaluation flow every experiment reuses: the matching engine and the run that drives it.

pairs -> unique images -> features once per image (cached) -> similarity of source keypoints
against target patches, grouped by target image -> matcher -> original pixels -> PCK -> results.

A `Member` is one backbone's features; a single-model evaluation has one member of weight 1, an
ensemble several (their similarity maps are resized to the first member's grid and summed).
The results folder is written by results.py and summarised by summary.py.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import pck
import results
import summary
from feature_cache import FeatureCache
from fileio import file_sha256
from geometry import Preprocess, input_to_patch, input_to_pixels, patch_to_input, pixels_to_input
from helper_functions import FeatureSet, backbone_preprocess, extract_features
from matching_strategies import match, sample_descriptors
from models import Backbone, create_backbone
from pairs import NO_KEYPOINTS, PairRecord, PairSet, load_pairs
from settings import EvalConfig, MatchConfig


@dataclass
class Member:
    """One backbone's features over the images of a run, with its ensemble weight."""

    features: FeatureSet
    weight: float = 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds code that uses the global generator)
    torch.manual_seed(seed)


def load_model(cfg: EvalConfig) -> Backbone:
    """The backbone a config asks for: its fine-tuned checkpoint, or its model with its weights file."""
    return create_backbone(
        cfg.model, weights=cfg.weights, checkpoint=cfg.checkpoint, layer=cfg.layer, device=cfg.device
    )


def weights_digest(backbone: Backbone) -> str | None:
    """sha256 of the weights file, or None for random weights."""
    path = str(backbone.weights_path)
    return None if path == "random" else file_sha256(path)


def feature_setting(backbone: Backbone, prep: Preprocess, weights_sha256: str | None) -> dict[str, object]:
    """Everything that changes a backbone's features: the key of its feature cache."""
    return {
        "backbone": backbone.name,
        "weights_sha256": weights_sha256,
        "layer": backbone.layer,
        "timm_overrides": getattr(backbone, "timm_overrides", {}),
        "preprocess": prep.key,
        "autocast": str(backbone.autocast_dtype),
    }


def build_member(
    backbone: Backbone,
    pairset: PairSet,
    *,
    image_size: list[int] | None = None,
    resize: str | None = None,
    cache_dir: str | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    progress: bool = True,
    weight: float = 1.0,
) -> tuple[Member, dict[str, object]]:
    """Extract (or read from cache) one backbone's features for every image of the pairs."""
    prep = backbone_preprocess(backbone, image_size, resize)
    sha = weights_digest(backbone)
    cache = FeatureCache(cache_dir, feature_setting(backbone, prep, sha)) if cache_dir and sha else None
    feats = extract_features(
        backbone,
        pairset.unique_images(),
        prep,
        cache=cache,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    resolved = {
        "model": backbone.name,
        "weights": str(backbone.weights_path),
        "weights_sha256": sha,
        "layer": backbone.layer,
        "patch_size": backbone.patch_size,
        "image_size": [prep.height, prep.width],
        "grid": list(prep.grid),
        "resize": prep.resize,
        "feature_cache": str(cache.dir) if cache else None,
    }
    return Member(feats, weight), resolved


def config_member(
    cfg: EvalConfig, backbone: Backbone, pairset: PairSet, *, image_size: list[int] | None = None, weight: float = 1.0
) -> tuple[Member, dict[str, object]]:
    """build_member with the extraction settings of a run's config (`image_size` overrides the config's)."""
    return build_member(
        backbone,
        pairset,
        image_size=image_size or cfg.image_size,
        resize=cfg.resize,
        cache_dir=cfg.cache_dir,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        progress=cfg.progress,
        weight=weight,
    )


def _stacked_geometry(fs: FeatureSet, keys: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    geoms = [fs.geometries[k] for k in keys]
    scale = torch.tensor([g.scale for g in geoms], dtype=torch.float64)
    offset = torch.tensor([g.offset for g in geoms], dtype=torch.float64)
    return scale, offset


def source_descriptors(fs: FeatureSet, pairs: list[PairRecord], descriptor: str) -> torch.Tensor:
    """(K, C) descriptors of every source keypoint of `pairs`, in pair order."""
    counts = torch.tensor([p.num_keypoints for p in pairs])
    keys = [p.src.key for p in pairs]
    kp_pair = torch.repeat_interleave(torch.arange(len(pairs)), counts)
    scale, offset = _stacked_geometry(fs, keys)
    xy = torch.from_numpy(np.concatenate([p.src_kps for p in pairs]).astype(np.float64))
    pq = input_to_patch(pixels_to_input(xy, scale[kp_pair], offset[kp_pair]), fs.prep.patch_size)
    device = fs.feats.device
    rows = fs.rows(keys)[kp_pair].to(device)
    return sample_descriptors(fs.feats, rows, pq.float().to(device), descriptor)


def target_similarities(
    members: list[Member], descs: list[torch.Tensor], ks: torch.Tensor, key: str
) -> list[torch.Tensor]:
    """Each member's (k, h, w) cosine similarity of descriptors ks to target `key`, on the first member's grid.

    Maps on another grid are resized bilinearly (align_corners=False: cell centres line up when
    both grids span the same image).
    """
    grid = members[0].features.prep.grid
    sims = []
    for member, desc in zip(members, descs, strict=True):
        fs = member.features
        target = fs.feats[fs.index[key]]
        sim = (desc[ks].float() @ target.flatten(1).float()).view(len(ks), *target.shape[1:])
        if sim.shape[1:] != grid:
            sim = F.interpolate(sim[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
        sims.append(sim)
    return sims


def weighted_sum(sims: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    total = None
    for weight, sim in zip(weights, sims, strict=True):
        total = weight * sim if total is None else total + weight * sim
    return total


def target_similarity(members: list[Member], descs: list[torch.Tensor], ks: torch.Tensor, key: str) -> torch.Tensor:
    """Weighted sum over members of the (k, h, w) cosine similarity of descriptors ks to target `key`."""
    return weighted_sum(target_similarities(members, descs, ks, key), [m.weight for m in members])


def predict_keypoints(
    pairs: list[PairRecord], members: list[Member], cfg: MatchConfig, progress: bool = True
) -> np.ndarray:
    """Predicted target positions (K, 2), original pixels, for all keypoints of `pairs` in order.

    Keypoints are grouped by target image, so each target's features are read once and all of
    its queries (from every pair that targets it) are matched in one matrix product; the maps of
    several targets are then matched together, CHUNK_KEYPOINTS at a time.
    """
    return predict_variants(pairs, members, [cfg], progress=progress)[0][0]


CHUNK_KEYPOINTS = 8192  # similarity maps matched in one call (bounds memory, amortises kernel launches)


def target_chunks(counts: list[int], limit: int = CHUNK_KEYPOINTS) -> list[list[int]]:
    """Consecutive groups, given their keypoint counts, packed into chunks of at most `limit`
    keypoints (a larger group is a chunk on its own)."""
    chunks: list[list[int]] = []
    total = 0
    for g, n in enumerate(counts):
        if not chunks or total + n > limit:
            chunks.append([])
            total = 0
        chunks[-1].append(g)
        total += n
    return chunks


def predict_variants(
    pairs: list[PairRecord],
    members: list[Member],
    cfgs: list[MatchConfig],
    member_weights: list[list[float]] | None = None,
    progress: bool = True,
) -> tuple[list[np.ndarray], list[float]]:
    """predict_keypoints for several variants at the cost of one similarity computation.

    Variant v matches with cfgs[v] the similarity maps weighted by member_weights[v] (default: the
    members' own weights). All variants share one descriptor sampling. Returns each variant's
    predictions and the seconds spent on its own combination, matcher and back-projection.
    """
    weights = member_weights or [[m.weight for m in members]] * len(cfgs)
    if len(weights) != len(cfgs) or any(len(w) != len(members) for w in weights):
        raise ValueError(f"need one weight per member for each of the {len(cfgs)} variants")
    descriptor = cfgs[0].descriptor
    if any(cfg.descriptor != descriptor for cfg in cfgs):
        raise ValueError("all variants must sample source descriptors the same way")
    preds = [torch.empty(sum(p.num_keypoints for p in pairs), 2, dtype=torch.float64) for _ in cfgs]
    seconds = [0.0] * len(cfgs)
    if not pairs:
        return [p.numpy() for p in preds], seconds
    descs = [source_descriptors(m.features, pairs, descriptor) for m in members]
    ref = members[0].features
    counts = torch.tensor([p.num_keypoints for p in pairs])
    trg_keys = [p.trg.key for p in pairs]
    groups = {key: g for g, key in enumerate(dict.fromkeys(trg_keys))}
    keys = list(groups)
    kp_group = torch.repeat_interleave(torch.tensor([groups[k] for k in trg_keys]), counts)
    order = torch.argsort(kp_group, stable=True)
    group_sizes = torch.bincount(kp_group, minlength=len(groups))
    bounds = torch.cumsum(group_sizes, 0).tolist()
    starts = [0, *bounds[:-1]]
    scale, offset = _stacked_geometry(ref, keys)
    device = ref.feats.device
    bar = tqdm(total=len(groups), desc="matching", unit="img", disable=not progress)
    for chunk in target_chunks(group_sizes.tolist(), CHUNK_KEYPOINTS):
        per_target = [
            target_similarities(members, descs, order[starts[g] : bounds[g]].to(device), keys[g]) for g in chunk
        ]
        sims = [torch.cat(maps) for maps in zip(*per_target, strict=True)]  # per member, (k, h, w)
        ks = order[starts[chunk[0]] : bounds[chunk[-1]]]
        g = kp_group[ks]
        for v, cfg in enumerate(cfgs):
            t0 = time.perf_counter()
            pq = match(weighted_sum(sims, weights[v]), cfg.matcher, cfg.window, cfg.temperature)
            uv = patch_to_input(pq.cpu().double(), ref.prep.patch_size)
            preds[v][ks] = input_to_pixels(uv, scale[g], offset[g])
            seconds[v] += time.perf_counter() - t0
        bar.update(len(chunk))
    bar.close()
    return [p.numpy() for p in preds], seconds


def score(pairs: list[PairRecord], pred: np.ndarray, thresholds: list[float], norm: str) -> tuple[pd.DataFrame, dict]:
    """The per-keypoint table and its summary."""
    table = pck.keypoint_table(pairs, pred, thresholds, norm)
    return table, pck.summarize(table)


def evaluable(pairset: PairSet) -> tuple[list[PairRecord], dict[str, int]]:
    """Pairs with ground-truth keypoints, and the skip counts (the loader's plus those without)."""
    keep = [p for p in pairset.pairs if p.num_keypoints > 0]
    skipped = dict(pairset.skipped)
    if len(keep) < len(pairset.pairs):
        skipped[NO_KEYPOINTS] = skipped.get(NO_KEYPOINTS, 0) + len(pairset.pairs) - len(keep)
    return keep, skipped


def evaluation_set(pairset: PairSet, pck_norm: str | None) -> tuple[PairSet, dict[str, int], str]:
    """The pairs with ground truth (with the loader's notes), the skip counts, and the PCK normalisation."""
    pairs, skipped = evaluable(pairset)
    norm = pck.default_norm(pairset.dataset, pck_norm)
    return PairSet(pairset.dataset, pairset.split, pairset.root, pairs, notes=pairset.notes), skipped, norm


def save_evaluation(
    cfg: EvalConfig,
    *,
    parts: list[str],
    started: float,
    config: dict,
    metrics: dict,
    table: pd.DataFrame,
    pairs: list[PairRecord],
) -> Path:
    """A new results folder with the run's files (and pictures of its N best and worst pairs); prints the summary."""
    run_dir = results.new_run_dir(cfg.output_dir, parts, started)
    results.write_run(
        run_dir, "evaluation", config, per_keypoint=table, per_pair=pck.pair_table(table, pairs), metrics=metrics
    )
    if cfg.save_vis:
        import viz2d  # matplotlib loads only when pictures are asked for

        viz2d.save_best_worst(run_dir / "vis", pairs, table, cfg.save_vis)
    print(summary.evaluation_summary(metrics))
    print(f"results: {run_dir}")
    return run_dir


def run_evaluation(cfg: EvalConfig) -> Path:
    """Evaluate one backbone on one dataset split; returns the new results folder."""
    started = time.time()
    seed_everything(cfg.seed)
    pairset = load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.split, layout=cfg.layout, limit=cfg.limit)
    return evaluate(cfg, pairset, load_model(cfg), started)


def evaluate(cfg: EvalConfig, pairset: PairSet, backbone: Backbone, started: float | None = None) -> Path:
    """Features, matching, PCK and the results folder for pairs already loaded."""
    started = started or time.time()
    eval_set, skipped, norm = evaluation_set(pairset, cfg.pck_norm)
    member, resolved = config_member(cfg, backbone, eval_set)
    config = {
        "args": asdict(cfg),
        "resolved": {**resolved, "pck_norm": norm, "data_root": pairset.root},
        "environment": results.environment(backbone.device),
    }
    return evaluate_members(
        cfg,
        eval_set,
        [member],
        skipped=skipped,
        norm=norm,
        feature_stats=[member.features.stats],
        config=config,
        parts=[backbone.name, pairset.dataset, pairset.split, cfg.match.matcher],
        started=started,
    )


def evaluate_members(
    cfg: EvalConfig,
    eval_set: PairSet,
    members: list[Member],
    *,
    skipped: dict[str, int],
    norm: str,
    feature_stats: list[dict],
    config: dict,
    parts: list[str],
    started: float,
) -> Path:
    """Match the members' features, score the predictions and write the results folder."""
    t0 = time.perf_counter()
    pred = predict_keypoints(eval_set.pairs, members, cfg.match, cfg.progress)
    table, pck_summary = score(eval_set.pairs, pred, cfg.thresholds, norm)
    metrics = results.evaluation_metrics(
        eval_set,
        norm=norm,
        table=table,
        summary=pck_summary,
        skipped=skipped,
        feature_stats=feature_stats,
        matching_s=time.perf_counter() - t0,
        started=started,
    )
    return save_evaluation(
        cfg, parts=parts, started=started, config=config, metrics=metrics, table=table, pairs=eval_set.pairs
    )
