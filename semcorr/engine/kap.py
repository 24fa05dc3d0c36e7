"""KAP's inputs, taken from the similarity maps while they exist: for every keypoint visible in a pair's source
image, the scores that per_keypoint_kap.csv holds and pck.kap turns into every KAP figure.

As Jamais Vu's compute_kap and extract_kap_vals define them (github.com/VICO-UoE/JamaisVu, pck_train.py,
utils/utils_correspondence.py), per pair:
- the similarity maps of all its source-visible keypoints (those visible in the target too, and those visible in
  the source only, PairRecord.src_only_*) are min-max normalised together: one minimum and one maximum per pair;
- a patch stands at its top-left corner (the reference compares its integer patch index with the keypoint's
  continuous position), mapped to the target's original pixels;
- positive@alpha, for a keypoint visible in the target: the map's maximum over the patches within alpha * L of its
  target keypoint (distance <= alpha * L; 0 when no patch is);
- negative@alpha: the map's maximum over the other patches; for a keypoint not visible in the target, over the
  whole map.
The reference computes those two and then returns the raw within / beyond maxima instead (extract_kap_vals' last
line), which scores each keypoint not visible in the target as a positive at the image's top-left corner, where its
zeroed ground truth lies: corrected here. A pair whose maps all hold one value (the reference divides by zero) scores
0 throughout.

The maps are the evaluation's (the members' weighted sum, on the first member's grid, from the unmirrored sources),
computed again here, target by target, for the source-visible keypoints.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from semcorr.data.geometry import Preprocess, input_to_pixels, patch_to_input
from semcorr.data.pairs import PairRecord, threshold_lengths
from semcorr.engine.matching import (
    source_descriptors,
    stacked_geometry,
    target_chunks,
    target_groups,
    target_similarity,
)
from semcorr.engine.members import Member

CHUNK_KEYPOINTS = 2048  # maps scored at once (a (k, h, w) float64 distance array among them)


def kap_samples(
    pairs: list[PairRecord], members: list[Member], *, descriptor: str, alphas: tuple[float, ...], norm: str,
    progress: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """One row per source-visible keypoint of `pairs` (each pair's own keypoints, then its source-only ones):
    pair_id, category, kp_id, trg_visible, positive@alpha (NaN where not visible in the target), negative@alpha."""
    queries = [with_source_only(p) for p in pairs]
    counts = [p.num_keypoints for p in queries]
    descs = [source_descriptors(m.features, queries, descriptor) for m in members]
    ref = members[0].features
    keys, kp_group, order, starts, bounds = target_groups(queries)
    xs, ys = patch_corners(ref.prep, *stacked_geometry(ref, keys))
    gt = torch.from_numpy(np.concatenate([p.trg_kps for p in queries]).astype(np.float64))
    norm_l = torch.tensor(np.repeat(threshold_lengths(pairs, norm), counts))
    kp_pair = torch.repeat_interleave(torch.arange(len(queries)), torch.tensor(counts))
    positive, negative = np.empty((len(gt), len(alphas))), np.empty((len(gt), len(alphas)))
    device = ref.feats.device
    bar = tqdm(total=len(keys), desc="KAP", unit="img", disable=not progress)
    for chunk in target_chunks([b - a for a, b in zip(starts, bounds, strict=True)], CHUNK_KEYPOINTS):
        sim = torch.cat(
            [target_similarity(members, descs, order[starts[g] : bounds[g]].to(device), keys[g]) for g in chunk]
        )
        ks = order[starts[chunk[0]] : bounds[chunk[-1]]]
        g = kp_group[ks]
        scores = kap_scores(sim, kp_pair[ks], xs[g], ys[g], gt[ks], norm_l[ks], alphas)
        positive[ks.numpy()], negative[ks.numpy()] = (s.cpu().numpy() for s in scores)
        bar.update(len(chunk))
    bar.close()
    rows = pd.DataFrame(
        {
            "pair_id": np.repeat([p.pair_id for p in queries], counts),
            "category": np.repeat([p.category for p in queries], counts),
            "kp_id": [kp for p in queries for kp in p.kp_ids],
            "trg_visible": ~np.isnan(gt[:, 0].numpy()),
        }
    )
    return rows.assign(
        **{f"positive@{a:g}": positive[:, i] for i, a in enumerate(alphas)},
        **{f"negative@{a:g}": negative[:, i] for i, a in enumerate(alphas)},
    )


def with_source_only(pair: PairRecord) -> PairRecord:
    """The pair with its source-only keypoints after its own, their target positions NaN (not visible there)."""
    if not pair.src_only_ids:
        return pair
    hidden = np.full((len(pair.src_only_ids), 2), np.nan, np.float32)
    return dataclasses.replace(
        pair,
        src_kps=np.concatenate([pair.src_kps, pair.src_only_kps]),
        trg_kps=np.concatenate([pair.trg_kps, hidden]),
        kp_ids=[*pair.kp_ids, *pair.src_only_ids],
        kp_mirror=None,
        kp_flags={},
    )


def patch_corners(
    prep: Preprocess, content: torch.Tensor, size: torch.Tensor, offset: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-left corner of every patch column (n, w) and row (n, h), in the original pixels of n images of the
    given (n, 2) content sizes, sizes and offsets."""
    h, w = prep.grid
    index = torch.arange(max(h, w), dtype=torch.float64)
    uv = patch_to_input(index - 0.5, prep.patch_size)[None, :, None].expand(
        1, -1, 2
    )  # patch j spans [j - 0.5, j + 0.5)
    corners = input_to_pixels(uv, content[:, None], size[:, None], offset[:, None], prep.coordinates)
    return corners[:, :w, 0], corners[:, :h, 1]


def kap_scores(
    sim: torch.Tensor,
    pair: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    gt: torch.Tensor,
    norm_l: torch.Tensor,
    alphas: tuple[float, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, A) positive and negative scores of k similarity maps (k, h, w) of source-visible keypoints; `pair` (k,)
    groups each pair's maps (all of them here: they are normalised together), xs (k, w) and ys (k, h) are the
    corners of each map's patches and gt (k, 2) its target keypoint (NaN: not visible in the target), in the same
    pixels as its threshold length L, norm_l (k,)."""
    _, group = torch.unique(pair, return_inverse=True)
    group = group.to(sim.device)
    peak = sim.flatten(1)
    n = int(group.max()) + 1
    low = torch.full((n,), torch.inf, device=sim.device).scatter_reduce(0, group, peak.amin(1), "amin")
    high = torch.full((n,), -torch.inf, device=sim.device).scatter_reduce(0, group, peak.amax(1), "amax")
    low, high = low[group, None, None], high[group, None, None]
    maps = torch.where(high > low, (sim - low) / (high - low), torch.zeros_like(sim))
    gt, xs, ys, norm_l = (t.to(sim.device) for t in (gt, xs, ys, norm_l))
    d2 = (ys - gt[:, 1:]).square()[:, :, None] + (xs - gt[:, :1]).square()[:, None, :]  # (k, h, w)
    visible = ~gt[:, 0].isnan()
    whole = maps.amax(dim=(1, 2))
    positive, negative = [], []
    for alpha in alphas:
        within = d2 <= (alpha * norm_l).square()[:, None, None]
        positive.append(torch.where(visible, (maps * within).amax(dim=(1, 2)), torch.nan))
        negative.append(torch.where(visible, (maps * ~within).amax(dim=(1, 2)), whole))
    return torch.stack(positive, 1), torch.stack(negative, 1)
