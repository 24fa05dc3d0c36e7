"""The evaluation flow every experiment reuses.

pairs -> unique images -> features once per image (cached) -> similarity of source keypoints
against target patches, grouped by target image -> matcher -> original pixels -> PCK -> results.

A `Member` is one backbone's features; a single-model evaluation has one member of weight 1, an
ensemble several (their similarity maps are resized to the first member's grid and summed).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import pck
from feature_cache import FeatureCache
from helper_functions import (
    FeatureSet,
    Preprocess,
    extract_features,
    input_to_patch,
    input_to_pixels,
    patch_to_input,
    pixels_to_input,
)
from matching_strategies import match, sample_descriptors
from models import Backbone, load_backbone, load_finetuned
from pairs import PairRecord, PairSet, load_pairs
from results import environment, file_sha256, new_run_dir, write_csv, write_json


@dataclass
class MatchConfig:
    """How similarity maps become predictions."""

    matcher: str = "argmax"
    window: int = 5
    temperature: float = 0.1
    descriptor: str = "nearest"


@dataclass
class EvalConfig:
    """Every setting of an evaluation run (recorded verbatim in config.json)."""

    model: str = "dinov2"
    weights: str | None = None  # None: the official file under models/<family>/weights/
    checkpoint: str | None = None  # a fine-tuned checkpoint of this project (overrides model/weights)
    layer: int | None = None
    dataset: str = "spair"
    data_root: str | None = None
    split: str = "test"
    layout: str = "large"
    limit: int | None = None
    image_size: list[int] | None = None  # [side] or [H, W]; None: the backbone's default
    resize: str = "squash"
    match: MatchConfig = field(default_factory=MatchConfig)
    thresholds: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    pck_norm: str | None = None  # None: the dataset's standard normalisation
    batch_size: int = 16
    num_workers: int = 2
    device: str = "auto"
    cache_dir: str | None = "cache/features"  # None: no disk cache
    output_dir: str = "results"
    seed: int = 0
    progress: bool = True


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
    """The backbone a config asks for: a fine-tuned checkpoint, or a named model with weights."""
    if cfg.checkpoint:
        return load_finetuned(cfg.checkpoint, device=cfg.device)
    return load_backbone(cfg.model, weights=cfg.weights, device=cfg.device, layer=cfg.layer)


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
        "preprocess": prep.describe(),
        "autocast": str(backbone.autocast_dtype),
    }


def build_member(
    backbone: Backbone,
    pairset: PairSet,
    image_size: list[int] | None,
    resize: str,
    cache_dir: str | None,
    batch_size: int,
    num_workers: int = 2,
    progress: bool = True,
    weight: float = 1.0,
) -> tuple[Member, dict[str, object]]:
    """Extract (or read from cache) one backbone's features for every image of the pairs."""
    size = image_size or [backbone.default_image_size]
    prep = Preprocess.create(size[0] if len(size) == 1 else (size[0], size[1]), backbone.patch_size, resize)
    sha = weights_digest(backbone)
    cache = FeatureCache(cache_dir, feature_setting(backbone, prep, sha)) if cache_dir and sha else None
    feats = extract_features(
        backbone, pairset.unique_images(), prep, cache, batch_size, num_workers, progress=progress
    )
    resolved = {
        "model": backbone.name,
        "weights": str(backbone.weights_path),
        "weights_sha256": sha,
        "layer": backbone.layer,
        "patch_size": backbone.patch_size,
        "image_size": [prep.height, prep.width],
        "grid": list(prep.grid),
        "resize": resize,
        "feature_cache": str(cache.dir) if cache else None,
    }
    return Member(feats, weight), resolved


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


def target_similarity(members: list[Member], descs: list[torch.Tensor], ks: torch.Tensor, key: str) -> torch.Tensor:
    """Weighted sum over members of the (k, h, w) cosine similarity of descriptors ks to target `key`."""
    grid = members[0].features.prep.grid
    total = None
    for member, desc in zip(members, descs, strict=True):
        fs = member.features
        target = fs.feats[fs.index[key]]
        sim = (desc[ks].float() @ target.flatten(1).float()).view(len(ks), *target.shape[1:])
        if sim.shape[1:] != grid:
            sim = F.interpolate(sim[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
        total = member.weight * sim if total is None else total + member.weight * sim
    return total


def predict_keypoints(
    pairs: list[PairRecord], members: list[Member], cfg: MatchConfig, progress: bool = True
) -> np.ndarray:
    """Predicted target positions (K, 2), original pixels, for all keypoints of `pairs` in order.

    Keypoints are grouped by target image, so each target's features are read once and all of
    its queries (from every pair that targets it) are matched in one matrix product.
    """
    if not pairs:
        return np.zeros((0, 2))
    descs = [source_descriptors(m.features, pairs, cfg.descriptor) for m in members]
    ref = members[0].features
    counts = torch.tensor([p.num_keypoints for p in pairs])
    trg_keys = [p.trg.key for p in pairs]
    groups = {key: g for g, key in enumerate(dict.fromkeys(trg_keys))}
    kp_group = torch.repeat_interleave(torch.tensor([groups[k] for k in trg_keys]), counts)
    order = torch.argsort(kp_group, stable=True)
    bounds = torch.cumsum(torch.bincount(kp_group, minlength=len(groups)), 0).tolist()
    scale, offset = _stacked_geometry(ref, list(groups))
    device = ref.feats.device
    pred = torch.empty(int(counts.sum()), 2, dtype=torch.float64)
    start = 0
    for g, key in enumerate(tqdm(groups, desc="matching", unit="img", disable=not progress)):
        ks = order[start : bounds[g]]
        start = bounds[g]
        pq = match(target_similarity(members, descs, ks.to(device), key), cfg.matcher, cfg.window, cfg.temperature)
        uv = patch_to_input(pq.cpu().double(), ref.prep.patch_size)
        pred[ks] = input_to_pixels(uv, scale[g], offset[g])
    return pred.numpy()


def score(pairs: list[PairRecord], pred: np.ndarray, thresholds: list[float], norm: str) -> tuple[pd.DataFrame, dict]:
    """The per-keypoint table and its summary."""
    table = pck.keypoint_table(pairs, pred, thresholds, norm)
    return table, pck.summarize(table)


def evaluable(pairset: PairSet) -> tuple[list[PairRecord], dict[str, int]]:
    """Pairs with ground-truth keypoints, and the skip counts (the loader's plus those without)."""
    keep = [p for p in pairset.pairs if p.num_keypoints > 0]
    skipped = dict(pairset.skipped)
    if len(keep) < len(pairset.pairs):
        skipped["no ground-truth keypoints"] = skipped.get("no ground-truth keypoints", 0) + len(pairset.pairs) - len(keep)
    return keep, skipped


def write_run(
    run_dir: Path, config: dict, metrics: dict, table: pd.DataFrame, pairs: list[PairRecord]
) -> None:
    """config.json, metrics.json, per_pair.csv, per_keypoint.csv, each written atomically."""
    write_json(run_dir / "config.json", config)
    write_csv(run_dir / "per_keypoint.csv", table)
    write_csv(run_dir / "per_pair.csv", pck.pair_table(table, pairs))
    write_json(run_dir / "metrics.json", metrics)


def protocol(dataset: str, split: str, norm: str) -> dict[str, object]:
    return {
        "dataset": dataset,
        "split": split,
        "pck_norm": norm,
        "threshold": pck.NORM_DESCRIPTIONS[norm],
        "averaging": pck.AVERAGING,
        "unit": "%",
    }


def summary_table(metrics: dict) -> str:
    """A short printable table: PCK at each alpha, both averagings, and the protocol."""
    rows = {k: v for k, v in metrics.items() if k.startswith("pck@")}
    frame = pd.DataFrame(rows).T[["per_image", "per_keypoint"]].round(2)
    proto = metrics["protocol"]
    head = (
        f"{proto['dataset']} {proto['split']}: {metrics['pairs']} pairs, {metrics['keypoints']} keypoints; "
        f"threshold = {proto['threshold']}"
    )
    return head + "\n" + frame.to_string()


def run_evaluation(cfg: EvalConfig) -> Path:
    """Evaluate one backbone on one dataset split; returns the new results folder."""
    started = time.time()
    seed_everything(cfg.seed)
    pairset = load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.split, layout=cfg.layout, limit=cfg.limit)
    return evaluate(cfg, pairset, load_model(cfg), started)


def evaluate(cfg: EvalConfig, pairset: PairSet, backbone: Backbone, started: float | None = None) -> Path:
    """Features, matching, PCK and the results folder for pairs already loaded."""
    started = started or time.time()
    pairs, skipped = evaluable(pairset)
    norm = cfg.pck_norm or pck.DEFAULT_NORM.get(pairset.dataset, "image")
    eval_set = PairSet(pairset.dataset, pairset.split, pairset.root, pairs)
    member, resolved = build_member(
        backbone, eval_set, cfg.image_size, cfg.resize, cfg.cache_dir, cfg.batch_size, cfg.num_workers, cfg.progress
    )
    t0 = time.perf_counter()
    pred = predict_keypoints(pairs, [member], cfg.match, cfg.progress)
    table, summary = score(pairs, pred, cfg.thresholds, norm)
    t_match = time.perf_counter() - t0
    stats = member.features.stats
    metrics = {
        "protocol": protocol(pairset.dataset, pairset.split, norm),
        **summary,
        "counts": {
            "pairs": len(pairs),
            "keypoints": len(table),
            "images": stats["images"],
            "pairs_skipped": skipped,
            "notes": pairset.notes,
        },
        "timings": {
            "extraction_s": stats["extraction_s"],
            "cache_read_s": stats["cache_read_s"],
            "images_extracted": stats["images_extracted"],
            "images_from_cache": stats["images_from_cache"],
            "images_per_s": stats["images_extracted"] / stats["extraction_s"] if stats["extraction_s"] > 0 else None,
            "matching_s": t_match,
            "total_s": time.time() - started,
        },
    }
    parts = [backbone.name, pairset.dataset, pairset.split, cfg.match.matcher]
    run_dir = new_run_dir(cfg.output_dir, parts, started)
    config = {
        "args": asdict(cfg),
        "resolved": {**resolved, "pck_norm": norm, "data_root": pairset.root},
        "environment": environment(backbone.device),
    }
    write_run(run_dir, config, metrics, table, pairs)
    print(summary_table(metrics))
    print(f"results: {run_dir}")
    return run_dir
