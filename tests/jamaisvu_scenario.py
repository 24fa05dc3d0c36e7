"""The scenario of the Jamais Vu goldens (benchmarks/make_jamaisvu_goldens.py writes them with the reference's own
code, tests/test_jamaisvu.py compares): a miniature SPair-U in its real layout, the 840 canvas, and the similarity
maps the goldens give each source keypoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dataset_factory import make_spair, make_spair_u, synthetic_spair_u

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "jamaisvu" / "goldens.json.gz"
JAMAISVU_COMMIT = "d236e73249bf708d95a68c73e0ad9a1aaefa37e1"  # github.com/VICO-UoE/JamaisVu, "initial release"
CANVAS, PATCHES = 840, 60  # its ANNO_SIZE and NUM_PATCHES: 60 x 60 patches of 14 px
ALPHAS = (0.1, 0.05, 0.01)  # its alphas, in its order (the rows of every figure it returns)


def build_spair_u(root: Path) -> Path:
    """SPair-71k's folder at `root` with SPair-U's annotations in it (dataset_factory.synthetic_spair_u)."""
    pairs = synthetic_spair_u()
    return make_spair_u(make_spair(root, pairs), pairs)


def similarity_map(levels: list[list[int]], peak: tuple[int, int]) -> np.ndarray:
    """A (60, 60) float32 similarity map: a 15 x 15 grid of levels 0..50 (each over 4 x 4 patches: many equal
    scores) plus a peak of 100 falling by 20 a patch (city-block) around patch `peak` (x, y), divided by 150;
    integers until that one division, so every machine makes the same bits."""
    grid = np.kron(np.asarray(levels, np.int64), np.ones((4, 4), np.int64))
    rows, cols = np.mgrid[0:PATCHES, 0:PATCHES]
    bump = np.maximum(0, 100 - 20 * (np.abs(cols - peak[0]) + np.abs(rows - peak[1])))
    return ((grid + bump) / 150.0).astype(np.float32)
