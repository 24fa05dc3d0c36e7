"""Vectorised matchers against plain per-keypoint reference implementations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matching_strategies import argmax_match, match, sample_descriptors, window_soft_argmax
from semcorr.config.settings import MatchSettings
from semcorr.data.geometry import nearest_patch


def reference_window_soft_argmax(sim: torch.Tensor, window: int, temperature: float) -> torch.Tensor:
    """One keypoint at a time, loops only: the documented centred window, shrunk at the border."""
    h, w = sim.shape
    flat = int(torch.argmax(sim))
    py, px = divmod(flat, w)
    r = window // 2
    rx, ry = min(r, px, w - 1 - px), min(r, py, h - 1 - py)
    weights, xs, ys = [], [], []
    for y in range(py - ry, py + ry + 1):
        for x in range(px - rx, px + rx + 1):
            weights.append(float(sim[y, x]) / temperature)
            xs.append(x)
            ys.append(y)
    p = np.exp(np.array(weights) - max(weights))
    p /= p.sum()
    return torch.tensor([float(p @ np.array(xs)), float(p @ np.array(ys))])


@pytest.fixture
def sims():
    torch.manual_seed(0)
    sim = torch.randn(64, 9, 13)
    sim[0, 0, 0] = 10  # peaks on corners and edges exercise the border rule
    sim[1, 8, 12] = 10
    sim[2, 4, 0] = 10
    sim[3, 0, 7] = 10
    return sim


def soft(sims: torch.Tensor, window: int, temperature: float, border: str = "shrink") -> torch.Tensor:
    return window_soft_argmax(sims, MatchSettings("wsoftargmax", window, temperature, window_border=border))


def test_argmax_matches_reference(sims):
    pred = argmax_match(sims)
    for k, s in enumerate(sims):
        y, x = divmod(int(torch.argmax(s)), s.shape[1])
        assert pred[k].tolist() == [x, y]


@pytest.mark.parametrize("window,temperature", [(3, 0.5), (5, 0.1), (7, 1.0), (11, 0.2)])
def test_window_soft_argmax_matches_reference(sims, window, temperature):
    pred = soft(sims, window, temperature)
    ref = torch.stack([reference_window_soft_argmax(s, window, temperature) for s in sims])
    torch.testing.assert_close(pred, ref.float(), atol=1e-5, rtol=0)


def test_border_window_stays_centred_on_the_peak():
    sim = torch.zeros(1, 5, 5)
    sim[0, 0, 2] = 1.0  # peak on the top edge, flat elsewhere
    pred = soft(sim, window=5, temperature=1.0)
    assert pred[0, 1] == 0.0  # no pull toward the interior in y
    assert pred[0, 0] == pytest.approx(2.0)


def test_soft_argmax_tends_to_argmax_as_temperature_vanishes(sims):
    torch.testing.assert_close(soft(sims, 7, 1e-6), argmax_match(sims))


def test_soft_argmax_interpolates_between_two_equal_peaks():
    sim = torch.full((1, 7, 7), -5.0)
    sim[0, 3, 3] = 1.0
    sim[0, 3, 4] = 1.0 - 1e-6
    pred = soft(sim, 3, 0.01)
    assert pred[0, 0] == pytest.approx(3.5, abs=1e-3) and pred[0, 1] == pytest.approx(3.0)


def test_bad_matcher_arguments_are_clear(sims):
    with pytest.raises(ValueError, match="odd"):
        soft(sims, 4, 0.1)
    with pytest.raises(ValueError, match="temperature"):
        soft(sims, 5, 0.0)
    with pytest.raises(ValueError, match="matcher"):
        match(sims, MatchSettings("nearest"))


def test_descriptor_sampling():
    torch.manual_seed(1)
    feats = F.normalize(torch.randn(3, 8, 4, 6), dim=1)
    rows = torch.tensor([0, 2, 1])
    pq = torch.tensor([[0.4, 0.6], [5.49, 3.0], [-0.7, 2.2]])
    idx = nearest_patch(pq, (4, 6))
    assert idx.tolist() == [[0, 1], [5, 3], [0, 2]]
    nearest = sample_descriptors(feats, rows, pq, "nearest")
    torch.testing.assert_close(nearest[1], feats[2, :, 3, 5])
    # bilinear at a patch centre is that patch; halfway between two is their normalised mean
    at_centre = sample_descriptors(feats, rows[:1], torch.tensor([[2.0, 1.0]]), "bilinear")
    torch.testing.assert_close(at_centre[0], feats[0, :, 1, 2])
    halfway = sample_descriptors(feats, rows[:1], torch.tensor([[2.5, 1.0]]), "bilinear")
    torch.testing.assert_close(halfway[0], F.normalize(feats[0, :, 1, 2] + feats[0, :, 1, 3], dim=0))
