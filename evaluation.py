"""The evaluation flow every experiment reuses: the matching engine and the run that drives it.

pairs -> unique images -> features once per image (cached) -> similarity of source keypoints
against target patches, grouped by target image -> matcher -> original pixels -> PCK -> results.

A `Member` is one backbone's features; a single-model evaluation has one member of weight 1, an
ensemble several (their similarity maps are resized to the first member's grid and summed).
The results folder is written by results.py and summarised by summary.py.
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings
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
from geometry import ORIGINS, Preprocess, input_to_patch, input_to_pixels, patch_to_input, pixels_to_input
from helper_functions import FeatureSet, backbone_preprocess, extract_features
from matching_strategies import match, sample_descriptors
from models import Backbone, create_backbone, weights_origin
from pairs import NO_KEYPOINTS, DatasetError, PairRecord, PairSet, load_pairs
from settings import EVAL_CONVENTIONS, EvalConfig, MatchConfig, get_protocol, resolve_protocol

FEATURE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


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
    """The backbone a (resolved) config asks for: its fine-tuned checkpoint, or its model with its weights
    file; built and run in the precision of its protocol (or --precision)."""
    return create_backbone(
        cfg.model,
        weights=cfg.weights,
        checkpoint=cfg.checkpoint,
        layer=cfg.layer,
        device=cfg.device,
        precision=cfg.precision or get_protocol(cfg.protocol).conventions.precision,
        build=cfg.build,
    )


def weights_digest(backbone: Backbone) -> str | None:
    """sha256 of the weights file, or None for random weights."""
    path = str(backbone.weights_path)
    return None if path == "random" else file_sha256(path)


def feature_setting(
    backbone: Backbone, prep: Preprocess, weights_sha256: str | None, feature_dtype: str = "fp16"
) -> dict[str, object]:
    """Everything that changes a backbone's features: the key of its feature cache (the settings that
    were added later appear only when they differ from the old fixed value, so old caches stay valid)."""
    setting = {
        "backbone": backbone.name,
        "weights_sha256": weights_sha256,
        "layer": backbone.layer,
        "timm_overrides": getattr(backbone, "timm_overrides", {}),
        "preprocess": prep.key,
        "autocast": str(backbone.autocast_dtype),
    }
    build = getattr(backbone, "build", "meta")
    return (
        setting
        | ({"build": build} if build != "meta" else {})
        | ({"feature_dtype": feature_dtype} if feature_dtype != "fp16" else {})
    )


def build_member(
    cfg: EvalConfig, backbone: Backbone, pairset: PairSet, *, image_size: list[int] | None = None, weight: float = 1.0
) -> tuple[Member, dict[str, object]]:
    """Extract (or read from cache) one backbone's features for every image of the pairs, with the
    extraction settings of `cfg` (`image_size` overrides its image size); and what they resolved to."""
    cfg, _ = resolve(cfg)
    prep = backbone_preprocess(
        backbone, image_size or cfg.image_size, cfg.resize, resample=cfg.resample, coordinates=cfg.coordinates
    )
    sha = weights_digest(backbone)
    setting = feature_setting(backbone, prep, sha, cfg.feature_dtype)
    cache = FeatureCache(cfg.cache_dir, setting) if cfg.cache_dir and sha else None
    cache_off = (
        None if cache else "--no-cache" if not cfg.cache_dir else "random weights (no weights file to key it by)"
    )
    feats = extract_features(
        backbone,
        pairset.unique_images(),
        prep,
        cache=cache,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        store_dtype=FEATURE_DTYPES[cfg.feature_dtype],
        progress=cfg.progress,
    )
    resolved = {
        "model": backbone.name,
        "weights": str(backbone.weights_path),
        "weights_sha256": sha,
        "weights_origin": weights_origin(backbone),
        "layer": backbone.layer,
        "build": getattr(backbone, "build", "meta"),
        "precision": str(backbone.autocast_dtype or "fp32").removeprefix("torch."),
        "patch_size": backbone.patch_size,
        "image_size": [prep.height, prep.width],
        "grid": list(prep.grid),
        "resize": prep.resize,
        "resample": prep.resample,
        "coordinates": prep.coordinates,
        "feature_cache": str(cache.dir) if cache else None,
        "feature_cache_off": cache_off,
    }
    return Member(feats, weight), resolved


def _stacked_geometry(fs: FeatureSet, keys: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The content sizes, image sizes and offsets of images `keys`, as (N, 2) float64 tensors."""
    geoms = [fs.geometries[k] for k in keys]
    return tuple(
        torch.tensor([getattr(g, f) for g in geoms], dtype=torch.float64) for f in ("content", "size", "offset")
    )


def source_descriptors(fs: FeatureSet, pairs: list[PairRecord], descriptor: str) -> torch.Tensor:
    """(K, C) descriptors of every source keypoint of `pairs`, in pair order."""
    counts = torch.tensor([p.num_keypoints for p in pairs])
    keys = [p.src.key for p in pairs]
    kp_pair = torch.repeat_interleave(torch.arange(len(pairs)), counts)
    content, size, offset = _stacked_geometry(fs, keys)
    xy = torch.from_numpy(np.concatenate([p.src_kps for p in pairs]).astype(np.float64))
    origin = ORIGINS[fs.prep.coordinates]
    uv = pixels_to_input(xy, content[kp_pair], size[kp_pair], offset[kp_pair], origin)
    pq = input_to_patch(uv, fs.prep.patch_size)
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


@dataclass
class Prediction:
    """One matcher's predictions for all keypoints of a list of pairs, in pair order."""

    pixels: np.ndarray  # (K, 2) target positions in original pixels
    similarity: np.ndarray | None  # (K,) the best target patch's similarity (with_similarity), else None
    seconds: float = 0.0  # its own combination, matcher and back-projection (shared similarity maps excluded)


def predict_keypoints(
    pairs: list[PairRecord], members: list[Member], cfg: MatchConfig, progress: bool = True
) -> np.ndarray:
    """Predicted target positions (K, 2), original pixels, for all keypoints of `pairs` in order.

    Keypoints are grouped by target image, so each target's features are read once and all of
    its queries (from every pair that targets it) are matched in one matrix product; the maps of
    several targets are then matched together, CHUNK_KEYPOINTS at a time.
    """
    return predict_variants(pairs, members, [cfg], progress=progress)[0].pixels


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
    with_similarity: bool = False,
) -> list[Prediction]:
    """predict_keypoints for several variants at the cost of one similarity computation.

    Variant v matches with cfgs[v] the similarity maps weighted by member_weights[v] (default: the
    members' own weights). All variants share one descriptor sampling. `with_similarity`: also each
    keypoint's peak similarity (for per_keypoint.csv; searches over many variants leave it out).
    """
    weights = member_weights or [[m.weight for m in members]] * len(cfgs)
    if len(weights) != len(cfgs) or any(len(w) != len(members) for w in weights):
        raise ValueError(f"need one weight per member for each of the {len(cfgs)} variants")
    if any(cfg.descriptor != cfgs[0].descriptor for cfg in cfgs):
        raise ValueError("all variants must sample source descriptors the same way")
    total = sum(p.num_keypoints for p in pairs)
    out = [Prediction(np.empty((total, 2)), np.empty(total) if with_similarity else None) for _ in cfgs]
    if not pairs:
        return out
    descs = [source_descriptors(m.features, pairs, cfgs[0].descriptor) for m in members]
    ref = members[0].features
    keys, kp_group, order, starts, bounds = target_groups(pairs)
    content, size, offset = _stacked_geometry(ref, keys)
    origin, device = ORIGINS[ref.prep.coordinates], ref.feats.device
    bar = tqdm(total=len(keys), desc="matching", unit="img", disable=not progress)
    for chunk in target_chunks([b - a for a, b in zip(starts, bounds, strict=True)], CHUNK_KEYPOINTS):
        per_target = [
            target_similarities(members, descs, order[starts[g] : bounds[g]].to(device), keys[g]) for g in chunk
        ]
        sims = [torch.cat(maps) for maps in zip(*per_target, strict=True)]  # per member, (k, h, w)
        ks = order[starts[chunk[0]] : bounds[chunk[-1]]]
        g = kp_group[ks]
        for v, cfg in enumerate(cfgs):
            t0 = time.perf_counter()
            combined = weighted_sum(sims, weights[v])
            pq = match(combined, cfg.matcher, cfg.window, cfg.temperature, cfg.window_border or "shrink")
            uv = patch_to_input(pq.cpu().double(), ref.prep.patch_size)
            out[v].pixels[ks.numpy()] = input_to_pixels(uv, content[g], size[g], offset[g], origin).numpy()
            if with_similarity:
                out[v].similarity[ks.numpy()] = combined.flatten(1).amax(dim=1).float().cpu().numpy()
            out[v].seconds += time.perf_counter() - t0
        bar.update(len(chunk))
    bar.close()
    return out


def target_groups(pairs: list[PairRecord]) -> tuple[list[str], torch.Tensor, torch.Tensor, list[int], list[int]]:
    """The pairs' keypoints grouped by target image: the target keys, each keypoint's group, the
    keypoints sorted by group (stable), and where each group starts and ends in that order."""
    counts = torch.tensor([p.num_keypoints for p in pairs])
    trg_keys = [p.trg.key for p in pairs]
    groups = {key: g for g, key in enumerate(dict.fromkeys(trg_keys))}
    kp_group = torch.repeat_interleave(torch.tensor([groups[k] for k in trg_keys]), counts)
    bounds = torch.cumsum(torch.bincount(kp_group, minlength=len(groups)), 0).tolist()
    return list(groups), kp_group, torch.argsort(kp_group, stable=True), [0, *bounds[:-1]], bounds


def score(
    pairs: list[PairRecord], pred: np.ndarray, thresholds: list[float], norm: str, similarity: np.ndarray | None = None
) -> tuple[pd.DataFrame, dict]:
    """The per-keypoint table and its summary."""
    table = pck.keypoint_table(pairs, pred, thresholds, norm, similarity)
    return table, pck.summarize(table)


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
        raise DatasetError(f"no pairs to evaluate in {pairset.root} ({pairset.dataset} {pairset.split}){why}")
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


def resolve(cfg: EvalConfig) -> tuple[EvalConfig, dict]:
    """The config with its protocol's conventions filled in, and the protocol record for config.json."""
    return resolve_protocol(cfg, EVAL_CONVENTIONS)


def load_dataset(cfg: EvalConfig) -> PairSet:
    """The pairs a (resolved) config names, read with its protocol's keypoint conventions."""
    return load_pairs(
        cfg.dataset,
        root=cfg.data_root,
        split=cfg.split,
        layout=cfg.layout,
        limit=cfg.limit,
        shift_one_based=cfg.pf_shift,
        clamp=cfg.clamp_keypoints,
        rescale_annotations=cfg.rescale_annotations,
    )


def run_config(cfg: EvalConfig, protocol: dict, *, resolved: dict, device: torch.device, started: float) -> dict:
    """config.json of a run: its arguments, its protocol, what they resolved to, and the environment."""
    environment = results.environment(device, started)
    return {"args": asdict(cfg), "protocol": protocol, "resolved": resolved, "environment": environment}


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
    print(summary.evaluation_summary(config, metrics))
    print(f"results: {run_dir}")
    return run_dir


def run_evaluation(cfg: EvalConfig) -> Path:
    """Evaluate one backbone on one dataset split; returns the new results folder."""
    started = time.time()
    results.check_output_dir(cfg.output_dir)
    cfg, _ = resolve(cfg)
    seed_everything(cfg.seed)
    return evaluate(cfg, load_dataset(cfg), load_model(cfg), started)


def evaluate(cfg: EvalConfig, pairset: PairSet, backbone: Backbone, started: float | None = None) -> Path:
    """Features, matching, PCK and the results folder for pairs already loaded."""
    started = started or time.time()
    cfg, protocol = resolve(cfg)
    eval_set, skipped = evaluation_set(pairset)
    member, resolved = build_member(cfg, backbone, eval_set)
    resolved = {**resolved, "pck_norm": cfg.pck_norm, "data_root": pairset.root}
    resolved["pairs_fingerprint"] = pairs_fingerprint(eval_set.pairs)
    return evaluate_members(
        cfg,
        eval_set,
        [member],
        skipped=skipped,
        feature_stats=[member.features.stats],
        config=run_config(cfg, protocol, resolved=resolved, device=backbone.device, started=started),
        parts=[backbone.name, pairset.dataset, pairset.split, cfg.match.matcher],
        started=started,
    )


def matcher_warnings(cfg: EvalConfig, resolved: dict, grid: tuple[int, int]) -> list[str]:
    """What does not fit in a soft-argmax setting: a window not smaller than the patch grid, or K and T
    that a grid search chose for another model, image size or patch grid (--params)."""
    if cfg.match.matcher != "wsoftargmax":
        return []
    out = []
    if cfg.match.window >= min(grid):
        out.append(
            f"--window {cfg.match.window} is not smaller than the {grid[0]}x{grid[1]} patch grid: the window spans "
            f"the whole map, so soft-argmax averages over all of it; choose K < {min(grid)}"
        )
    here = {"model": resolved.get("model"), "image_size": resolved.get("image_size"), "grid": list(grid)}
    searched = cfg.params_setting or {}
    differ = [k for k in here if k in searched and here[k] is not None and searched[k] != here[k]]
    if differ:

        def text(setting: dict) -> str:
            return ", ".join(
                f"{k.replace('_', ' ')} {'x'.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in setting.items()
                if k in differ
            )

        out.append(
            f"--params {cfg.match_params}: K and T were searched with {text(searched)}, but this run has "
            f"{text(here)}; they may not be the best here (run grid_search_hyperparams.py for this setting)"
        )
    return out


def evaluate_members(
    cfg: EvalConfig,
    eval_set: PairSet,
    members: list[Member],
    *,
    skipped: dict[str, int],
    feature_stats: list[dict],
    config: dict,
    parts: list[str],
    started: float,
) -> Path:
    """Match the members' features, score the predictions and write the results folder."""
    for warning in matcher_warnings(cfg, config["resolved"], members[0].features.prep.grid):
        warnings.warn(warning, stacklevel=2)
    t0 = time.perf_counter()
    (prediction,) = predict_variants(eval_set.pairs, members, [cfg.match], progress=cfg.progress, with_similarity=True)
    table, pck_summary = score(eval_set.pairs, prediction.pixels, cfg.thresholds, cfg.pck_norm, prediction.similarity)
    metrics = results.evaluation_metrics(
        eval_set,
        norm=cfg.pck_norm,
        coordinates=cfg.coordinates,
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
