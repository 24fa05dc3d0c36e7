"""A matcher is its function and one line in matching_strategies.MATCHERS: the command line, evaluations,
grid searches, ensembles and the explorer all take it from there."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from synthetic import colour_backbone, colour_config, colour_images

import matching_strategies
from matching_strategies import Matcher, window_soft_argmax
from semcorr.cli.resolve import resolve
from semcorr.config.settings import GridSettings, MatchSettings
from semcorr.engine.evaluation import evaluate
from semcorr.engine.grid_search import grid_search
from semcorr.runs.folders import read_run
from semcorr.viz.explorer import Explorer


def clipped(sim, match: MatchSettings):
    """A matcher of the test's own: the window soft-argmax, its window always clipped at the border."""
    return window_soft_argmax(sim, replace(match, window_border="clip"))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(
        matching_strategies.MATCHERS, "clipped", Matcher(clipped, ("window", "temperature"), "clipped window")
    )


def predictions(run):
    return read_run(run).keypoints()[["pred_x", "pred_y"]].to_numpy()


def test_a_registered_matcher_runs_everywhere(registered, tmp_path, colour_pairs):
    assert resolve("evaluation", {"matcher": "clipped", "window": 3}).match.matcher == "clipped"
    bb = colour_backbone(tmp_path)
    ours = evaluate(colour_config(tmp_path, matcher="clipped", window=3, temperature=0.1), colour_pairs, bb)
    theirs = colour_config(tmp_path, matcher="wsoftargmax", window=3, temperature=0.1, window_border="clip")
    np.testing.assert_array_equal(predictions(ours), predictions(evaluate(theirs, colour_pairs, bb)))
    assert ours.name.endswith("_custom-test_clipped-K3-T0.1_pck_norm=bbox")

    ensemble = colour_config(tmp_path, matcher="clipped", window=3, temperature=0.1, weights=[1, 1])
    np.testing.assert_allclose(predictions(evaluate(ensemble, colour_pairs, [bb, bb])), predictions(ours), atol=1e-9)

    grid = grid_search(colour_config(tmp_path, matcher="clipped"), GridSettings((3, 5), (0.1,)), colour_pairs, bb)
    table = pd.read_csv(grid / "grid_search_results.csv")
    assert table["matcher"].tolist() == ["argmax", "clipped", "clipped"]
    assert json.loads((grid / "best_parameters.json").read_text())["matcher"] == "clipped"
    assert resolve("evaluation", {"params": str(grid / "best_parameters.json")}).match.matcher == "clipped"

    explorer = Explorer(colour_config(tmp_path, window=3), bb)
    explorer.open_images(*colour_images(tmp_path))
    assert list(explorer.click(40, 50).predictions) == [*matching_strategies.MATCHERS]


def test_an_unknown_matcher_names_the_registered_ones():
    with pytest.raises(ValueError, match="--matcher 'nearest' is not a matcher: choose one of argmax, wsoftargmax"):
        resolve("evaluation", {"matcher": "nearest"})
    with pytest.raises(ValueError, match="--matcher argmax has no window and temperature to search"):
        resolve("grid", {"matcher": "argmax"})
