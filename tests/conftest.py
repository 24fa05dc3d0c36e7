"""Fixtures shared by the test files; the factories behind them are synthetic.py (colour-coded
objects with a known answer), dataset_factory.py (datasets in their exact on-disk formats) and
model_factory.py (random checkpoints in the official key layouts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import colour_backbone, colour_config, write_colour_pairs

from semcorr.config.settings import MatchSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.pairs import PairSet
from semcorr.engine.evaluation import evaluate


@pytest.fixture
def colour_pairs(tmp_path: Path) -> PairSet:
    """12 pairs of colour-coded objects in 2 categories, 5 keypoints each, with exact ground truth."""
    return load_pairs("custom", root=write_colour_pairs(tmp_path / "data"))


@pytest.fixture(scope="module")
def evaluation_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two results folders over the same colour-coded pairs: argmax, and soft-argmax K3 T0.1."""
    tmp = tmp_path_factory.mktemp("runs")
    pairset = load_pairs("custom", root=write_colour_pairs(tmp / "data"))
    backbone = colour_backbone(tmp, image_size=64)
    return [
        evaluate(colour_config(tmp, image_size=64, match=MatchSettings(matcher, 3, 0.1)), pairset, backbone)
        for matcher in ("argmax", "wsoftargmax")
    ]
