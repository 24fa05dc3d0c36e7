"""The correspondence loss: cross-entropy of scale x cosine similarity over the target patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from matching_strategies import sample_descriptors
from semcorr.data.geometry import nearest_patch


def target_patches(trg_pq: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, K) flat index of the patch holding each target keypoint."""
    xy = nearest_patch(trg_pq.reshape(-1, 2), grid)
    return (xy[:, 1] * grid[1] + xy[:, 0]).view(trg_pq.shape[:2])


def soft_targets(trg_pq: Tensor, grid: tuple[int, int], sigma: float) -> Tensor:
    """(B, K, h*w) Gaussian of std `sigma` patches around each target keypoint, normalised over the grid."""
    h, w = grid
    ys = torch.arange(h, device=trg_pq.device, dtype=torch.float32)
    xs = torch.arange(w, device=trg_pq.device, dtype=torch.float32)
    dx2 = (xs - trg_pq[..., 0:1]) ** 2  # (B, K, w)
    dy2 = (ys - trg_pq[..., 1:2]) ** 2  # (B, K, h)
    d2 = dy2[..., :, None] + dx2[..., None, :]
    return (-d2 / (2 * sigma**2)).flatten(2).softmax(dim=-1)


def correspondence_loss(
    src_feats: Tensor,
    trg_feats: Tensor,
    src_pq: Tensor,
    trg_pq: Tensor,
    mask: Tensor,
    *,
    scale: float,
    soft_sigma: float = 0.0,
) -> Tensor:
    """Cross-entropy of scale x cosine similarity over target patches, per keypoint.

    feats (B, C, h, w); src_pq / trg_pq (B, K, 2) patch positions; mask (B, K) the real keypoints.
    Averaged over each pair's keypoints, then over pairs: with equal batches per process the mean
    of the processes' losses is the loss of the global batch.
    """
    b, c, h, w = trg_feats.shape
    k = src_pq.shape[1]
    src = F.normalize(src_feats.float(), dim=1)
    trg = F.normalize(trg_feats.float(), dim=1).flatten(2)  # (B, C, h*w)
    rows = torch.arange(b, device=src.device).repeat_interleave(k)
    desc = sample_descriptors(src, rows, src_pq.reshape(-1, 2), "nearest").view(b, k, c)
    logits = scale * torch.bmm(desc, trg)  # (B, K, h*w)
    if soft_sigma > 0:
        per_kp = -(soft_targets(trg_pq, (h, w), soft_sigma) * logits.log_softmax(dim=-1)).sum(dim=-1)
    else:
        per_kp = F.cross_entropy(logits.flatten(0, 1), target_patches(trg_pq, (h, w)).flatten(), reduction="none")
        per_kp = per_kp.view(b, k)
    weights = mask.float()
    per_pair = (per_kp * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return per_pair.mean()
