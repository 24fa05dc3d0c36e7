"""Descriptor sampling and the matchers (MATCHERS) on similarity maps, vectorised over all keypoints at once.

All positions here are continuous patch coordinates (x, y) with patch centres at integers
(see semcorr/data/geometry.py). A similarity map has shape (K, h, w): one map per query keypoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from semcorr.config.settings import WINDOW_BORDERS, MatchSettings
from semcorr.data.geometry import nearest_patch

DescriptorSampling = Literal["nearest", "bilinear"]


def sample_descriptors(
    feats: torch.Tensor, rows: torch.Tensor, pq: torch.Tensor, mode: DescriptorSampling = "nearest"
) -> torch.Tensor:
    """Descriptors (K, C) of feature maps feats[rows] (K maps of (C, h, w)) at patch positions pq (K, 2).

    nearest: the patch holding the keypoint (the original project). bilinear: interpolated between
    the four surrounding patch centres (clamped at the border), then re-normalised.
    """
    h, w = feats.shape[-2:]
    if mode == "nearest":
        idx = nearest_patch(pq, (h, w))
        return feats[rows, :, idx[:, 1], idx[:, 0]]
    if mode != "bilinear":
        raise ValueError(f"descriptor sampling must be 'nearest' or 'bilinear', got {mode!r}")
    x = pq[:, 0].clamp(0, w - 1)
    y = pq[:, 1].clamp(0, h - 1)
    x0 = x.floor().long().clamp(0, max(w - 2, 0))
    y0 = y.floor().long().clamp(0, max(h - 2, 0))
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    fx, fy = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)
    top = feats[rows, :, y0, x0].float() * (1 - fx) + feats[rows, :, y0, x1].float() * fx
    bottom = feats[rows, :, y1, x0].float() * (1 - fx) + feats[rows, :, y1, x1].float() * fx
    return F.normalize(top * (1 - fy) + bottom * fy, dim=1).to(feats.dtype)


def argmax_match(sim: torch.Tensor, match: MatchSettings | None = None) -> torch.Tensor:
    """(K, h, w) similarity -> (K, 2) float (x, y) of the most similar patch."""
    w = sim.shape[-1]
    idx = sim.flatten(1).argmax(dim=1)
    return torch.stack([idx % w, idx // w], dim=1).to(torch.float32)


def window_soft_argmax(sim: torch.Tensor, match: MatchSettings) -> torch.Tensor:
    """Soft-argmax in a window x window neighbourhood centred on the argmax.

    softmax(sim / temperature) over the window, then the expected position. At the border the
    window shrinks symmetrically in that axis (radius = distance to the edge) so that it stays
    centred on the argmax ("shrink"): a clipped window ("clip", the original project) keeps its
    inner side and so pulls estimates toward the interior.
    """
    window, temperature, border = match.window, match.temperature, match.window_border
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if border not in WINDOW_BORDERS:
        raise ValueError(f"border must be one of {', '.join(WINDOW_BORDERS)}, got {border!r}")
    k, h, w = sim.shape
    peak = argmax_match(sim).long()
    px, py = peak[:, 0], peak[:, 1]
    r = window // 2
    offsets = torch.arange(-r, r + 1, device=sim.device)
    xs = (px[:, None] + offsets).clamp(0, w - 1)  # (K, W)
    ys = (py[:, None] + offsets).clamp(0, h - 1)
    vals = sim[torch.arange(k, device=sim.device)[:, None, None], ys[:, :, None], xs[:, None, :]].float()
    if border == "shrink":
        rx = torch.minimum(px, w - 1 - px).clamp(max=r)
        ry = torch.minimum(py, h - 1 - py).clamp(max=r)
        inside_x, inside_y = offsets.abs()[None, :] <= rx[:, None], offsets.abs()[None, :] <= ry[:, None]
    else:  # the part of the window inside the grid
        inside_x = (px[:, None] + offsets >= 0) & (px[:, None] + offsets < w)
        inside_y = (py[:, None] + offsets >= 0) & (py[:, None] + offsets < h)
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    logits = (vals / temperature).masked_fill(~inside, float("-inf"))
    prob = logits.flatten(1).softmax(dim=1).view_as(logits)
    dx = (prob.sum(dim=1) * offsets).sum(dim=1)
    dy = (prob.sum(dim=2) * offsets).sum(dim=1)
    return peak.float() + torch.stack([dx, dy], dim=1)


def geoaware_soft_argmax(sim: torch.Tensor, match: MatchSettings) -> torch.Tensor:
    """GeoAware-SC's window soft-argmax (utils_correspondence.get_flow with a positive window): the similarities
    outside a window x window square around the argmax (clamped at the grid's edge) are set to 0 - not removed -
    then a softmax with temperature T over the whole grid, and the expected position, clamped to the grid. The
    zeros weigh exp(-peak / T) each, which pulls a weak peak (below about 0.3 at T = 0.02) toward the centre."""
    return _soft_argmax(_peak_window(sim, match.window) * sim.float(), match.temperature)


def geoaware_gaussian(sim: torch.Tensor, match: MatchSettings) -> torch.Tensor:
    """GeoAware-SC's Gaussian variant (get_flow with a negative window, apply_gaussian_kernel): the similarities
    times exp(-d^2 / 2 sigma^2), d the distance to the argmax in patches, then its soft-argmax."""
    _, h, w = sim.shape
    peak = argmax_match(sim)
    xs = torch.arange(w, device=sim.device, dtype=torch.float32)
    ys = torch.arange(h, device=sim.device, dtype=torch.float32)
    d2 = (ys[None, :, None] - peak[:, 1, None, None]) ** 2 + (xs[None, None, :] - peak[:, 0, None, None]) ** 2
    return _soft_argmax(sim.float() * torch.exp(-d2 / (2 * match.sigma**2)), match.temperature)


def _peak_window(sim: torch.Tensor, window: int) -> torch.Tensor:
    """(K, h, w) 1.0 on the window x window square around each map's argmax (clamped at the edge), 0.0 elsewhere."""
    _, h, w = sim.shape
    peak = argmax_match(sim).long()
    r = window // 2
    rows = torch.arange(h, device=sim.device)[None, :] - peak[:, 1:2]
    cols = torch.arange(w, device=sim.device)[None, :] - peak[:, 0:1]
    return ((rows.abs() <= r)[:, :, None] & (cols.abs() <= r)[:, None, :]).float()


def _soft_argmax(sim: torch.Tensor, temperature: float) -> torch.Tensor:
    """The expected (x, y) of softmax(sim / temperature) over each (h, w) map, clamped to the grid."""
    k, h, w = sim.shape
    prob = (sim.flatten(1) / temperature).softmax(dim=1).view(k, h, w)
    x = (prob.sum(dim=1) * torch.arange(w, device=sim.device)).sum(dim=1)
    y = (prob.sum(dim=2) * torch.arange(h, device=sim.device)).sum(dim=1)
    return torch.stack([x.clamp(0, w - 1), y.clamp(0, h - 1)], dim=1)


@dataclass(frozen=True)
class Matcher:
    """A matcher: (K, h, w) similarity maps and the run's MatchSettings -> (K, 2) patch coordinates (x, y)."""

    function: Callable[[torch.Tensor, MatchSettings], torch.Tensor]
    uses: tuple[str, ...]  # the MatchSettings fields it reads (a grid search varies window and temperature)
    description: str


# Every matcher, by the name --matcher takes: evaluations, grid searches, ensembles and the explorer read this
# table, so a new matcher is its function and one line here.
MATCHERS: dict[str, Matcher] = {
    "argmax": Matcher(argmax_match, (), "the most similar target patch"),
    "wsoftargmax": Matcher(
        window_soft_argmax, ("window", "temperature", "window_border"), "soft-argmax in a window around the argmax"
    ),
    "geoaware-softargmax": Matcher(
        geoaware_soft_argmax, ("window", "temperature"), "GeoAware-SC's: the window's outside zeroed, softmax over all"
    ),
    "geoaware-gaussian": Matcher(
        geoaware_gaussian, ("sigma", "temperature"), "GeoAware-SC's Gaussian-weighted soft-argmax around the argmax"
    ),
}


def match(sim: torch.Tensor, settings: MatchSettings) -> torch.Tensor:
    """Apply the matcher `settings` names to (K, h, w) similarity maps -> (K, 2) patch coordinates."""
    if settings.matcher not in MATCHERS:
        raise ValueError(f"matcher must be one of {', '.join(MATCHERS)}, got {settings.matcher!r}")
    return MATCHERS[settings.matcher].function(sim, settings)
