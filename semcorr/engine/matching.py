"""The matching engine: similarity of source keypoints to target patches, grouped by target image, combined
over members, then the matcher (matching_strategies.MATCHERS), then original pixels.

Keypoints are grouped by target image, so each target's features are read once and all of its queries
(from every pair that targets it) are matched in one matrix product; the maps of several targets are
then matched together, CHUNK_KEYPOINTS at a time. Several matchers (a grid search's cells, a weight
search's weights) share one similarity computation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from helper_functions import FeatureSet
from matching_strategies import match, sample_descriptors
from semcorr.config.settings import MatchSettings
from semcorr.data.geometry import input_to_patch, input_to_pixels, mirror_input, patch_to_input, pixels_to_input
from semcorr.data.pairs import PairRecord, mirror_partners
from semcorr.engine.members import Member

CHUNK_KEYPOINTS = 8192  # similarity maps matched in one call (bounds memory, amortises kernel launches)


@dataclass
class Prediction:
    """One matcher's predictions for all keypoints of a list of pairs, in pair order."""

    pixels: np.ndarray  # (K, 2) target positions in original pixels
    similarity: np.ndarray | None  # (K,) the best target patch's similarity (with_similarity), else None
    seconds: float = 0.0  # its own combination, matcher and back-projection (shared similarity maps excluded)


def stacked_geometry(fs: FeatureSet, keys: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The content sizes, image sizes and offsets of images `keys`, as (N, 2) float64 tensors."""
    geoms = [fs.geometries[k] for k in keys]
    return tuple(
        torch.tensor([getattr(g, f) for g in geoms], dtype=torch.float64) for f in ("content", "size", "offset")
    )


def source_descriptors(
    fs: FeatureSet, pairs: list[PairRecord], descriptor: str, mirrored: bool = False
) -> torch.Tensor:
    """(K, C) descriptors of every source keypoint of `pairs`, in pair order.

    mirrored: sampled on each source's mirror image, keypoint i at the mirrored position of its left-right
    partner (pairs.mirror_partners), so that a left eye asks for what the mirror image has as a left eye.
    """
    counts = torch.tensor([p.num_keypoints for p in pairs])
    keys = [p.src.mirror().key if mirrored else p.src.key for p in pairs]
    kp_pair = torch.repeat_interleave(torch.arange(len(pairs)), counts)
    content, size, offset = (t[kp_pair] for t in stacked_geometry(fs, keys))
    kps = [p.src_kps[mirror_partners(p)[0]] if mirrored else p.src_kps for p in pairs]
    xy = torch.from_numpy(np.concatenate(kps).astype(np.float64))
    convention = fs.prep.coordinates
    uv = pixels_to_input(xy, content, size, offset, convention)
    if mirrored:
        u = mirror_input(uv[:, 0], content[:, 0], offset[:, 0], fs.prep.width, convention)
        uv = torch.stack([u, uv[:, 1]], dim=1)
    pq = input_to_patch(uv, fs.prep.patch_size, convention).float().to(fs.feats.device)
    rows = fs.rows(keys)[kp_pair]
    out = torch.empty(len(rows), fs.feats.shape[1], dtype=fs.feats.dtype, device=fs.feats.device)
    for row, ks in row_groups(rows):  # each source image's features read once
        one = torch.zeros(len(ks), dtype=torch.long, device=out.device)
        out[ks] = sample_descriptors(fs.feats[row][None], one, pq[ks], descriptor)
    return out


def row_groups(rows: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Each distinct value of `rows` (ascending) with the positions holding it."""
    order = torch.argsort(rows, stable=True)
    values, counts = torch.unique_consecutive(rows[order], return_counts=True)
    return list(zip(values.tolist(), torch.split(order, counts.tolist()), strict=True))


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
    pairs: list[PairRecord], members: list[Member], settings: MatchSettings, progress: bool = True
) -> np.ndarray:
    """Predicted target positions (K, 2), original pixels, for all keypoints of `pairs` in order."""
    return predict_variants(pairs, members, [settings], progress=progress)[0].pixels


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
    variants: list[MatchSettings],
    member_weights: list[list[float]] | None = None,
    progress: bool = True,
    with_similarity: bool = False,
    mirrored: bool = False,
) -> list[Prediction]:
    """Predictions of several matcher settings at the cost of one similarity computation.

    Variant v matches with variants[v] the similarity maps weighted by member_weights[v] (default: the
    members' own weights). All variants share one descriptor sampling. `with_similarity`: also each
    keypoint's peak similarity (for per_keypoint.csv; searches over many variants leave it out). `mirrored`: the
    queries come from the mirrored sources (source_descriptors).
    """
    weights = member_weights or [[m.weight for m in members]] * len(variants)
    if len(weights) != len(variants) or any(len(w) != len(members) for w in weights):
        raise ValueError(f"need one weight per member for each of the {len(variants)} variants")
    if any(v.descriptor != variants[0].descriptor for v in variants):
        raise ValueError("all variants must sample source descriptors the same way")
    total = sum(p.num_keypoints for p in pairs)
    out = [Prediction(np.empty((total, 2)), np.empty(total) if with_similarity else None) for _ in variants]
    if not pairs:
        return out
    descs = [source_descriptors(m.features, pairs, variants[0].descriptor, mirrored) for m in members]
    ref = members[0].features
    keys, kp_group, order, starts, bounds = target_groups(pairs)
    content, size, offset = stacked_geometry(ref, keys)
    convention, device = ref.prep.coordinates, ref.feats.device
    bar = tqdm(total=len(keys), desc="matching", unit="img", disable=not progress)
    for chunk in target_chunks([b - a for a, b in zip(starts, bounds, strict=True)], CHUNK_KEYPOINTS):
        per_target = [
            target_similarities(members, descs, order[starts[g] : bounds[g]].to(device), keys[g]) for g in chunk
        ]
        sims = [torch.cat(maps) for maps in zip(*per_target, strict=True)]  # per member, (k, h, w)
        ks = order[starts[chunk[0]] : bounds[chunk[-1]]]
        g = kp_group[ks]
        for v, variant in enumerate(variants):
            t0 = time.perf_counter()
            combined = weighted_sum(sims, weights[v])
            pq = match(combined, variant)
            uv = patch_to_input(pq.cpu().double(), ref.prep.patch_size)
            out[v].pixels[ks.numpy()] = input_to_pixels(uv, content[g], size[g], offset[g], convention).numpy()
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
