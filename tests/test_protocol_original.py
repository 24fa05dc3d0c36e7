"""--protocol original gives the original project's numbers: its predicted pixel for at least 99% of
keypoints (to 0.01 px) and its per-pair PCK (to 0.01 points), against golden files made once from
the original's own code (benchmarks/make_original_goldens.py) on the same images and weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from original_protocol import GOLDEN_DIR, RUNS, build_pf_pascal, build_spair, weights_digest, write_weights

import training_free_evaluation
from semcorr.runs.folders import read_run

PIXELS, POINTS, SHARE = 0.01, 0.01, 0.99


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("original")
    return tmp, {"spair": build_spair(tmp), "pf-pascal": build_pf_pascal(tmp)}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:precision='fp32' leaves the original protocol")
@pytest.mark.parametrize("run", sorted(p.stem for p in GOLDEN_DIR.glob("*.json")))
def test_original_protocol_reproduces_the_original_code(scenario, run):
    tmp, roots = scenario
    golden = json.loads((GOLDEN_DIR / f"{run}.json").read_text())
    model, dataset, matcher, window, temperature = RUNS[run]
    weights = write_weights(tmp / "weights", model)
    assert weights_digest(weights) == golden["weights_digest"], "the random weights are no longer those of the goldens"
    argv = ["--protocol", "original", "--model", model, "--weights", str(weights), "--dataset", dataset]
    argv += ["--data-root", str(roots[dataset]), "--device", "cpu", "--num-workers", "0", "--quiet"]
    argv += ["--cache-dir", str(tmp / "cache"), "--output-dir", str(tmp / "results" / run), "--matcher", matcher]
    if window:
        argv += ["--window", str(window), "--temperature", str(temperature)]
    if model.startswith("sam"):
        argv += ["--precision", "fp32"]  # the goldens ran on the CPU, where the original's fp16 autocast is off
    training_free_evaluation.main(argv)
    (folder,) = (tmp / "results" / run).iterdir()
    ours = read_run(folder)
    table, pairs = ours.keypoints(), ours.pairs()
    assert ours.config["settings"]["protocol"]["name"] == "original"

    expected = np.array([p for pair in golden["pairs"] for p in pair["pred"]])
    predicted = table[["pred_x", "pred_y"]].to_numpy()
    assert predicted.shape == expected.shape
    same_pixel = (np.abs(predicted - expected) <= PIXELS).all(axis=1)
    assert same_pixel.mean() >= SHARE, (
        f"{run}: {same_pixel.sum()} of {len(same_pixel)} keypoints at the original's pixel"
    )
    for alpha in golden["thresholds"]:
        want = np.array([pair["pck"][f"{alpha:g}"] for pair in golden["pairs"]])
        same_pck = np.abs(pairs[f"pck@{alpha:g}"].to_numpy() - want) <= POINTS
        assert same_pck.mean() >= SHARE, (
            f"{run}: per-pair PCK@{alpha:g} equal for {same_pck.sum()} of {len(want)} pairs"
        )
    print(f"{run}: {same_pixel.sum()} of {len(same_pixel)} keypoints at the original's pixel (to {PIXELS} px)")


@pytest.mark.slow
def test_default_protocol_differs_from_the_original_where_its_conventions_do(scenario):
    """A control: the goldens are sensitive to the conventions (the default protocol misses them)."""
    tmp, roots = scenario
    golden = json.loads((GOLDEN_DIR / "dinov2_pf-pascal_argmax.json").read_text())
    weights = write_weights(tmp / "weights", "dinov2_vitb14")
    argv = ["--model", "dinov2", "--weights", str(weights), "--dataset", "pf-pascal", "--data-root"]
    argv += [str(roots["pf-pascal"]), "--device", "cpu", "--num-workers", "0", "--quiet", "--no-cache"]
    training_free_evaluation.main([*argv, "--output-dir", str(tmp / "default")])
    (folder,) = (tmp / "default").iterdir()
    predicted = read_run(folder).keypoints()[["pred_x", "pred_y"]].to_numpy()
    expected = np.array([p for pair in golden["pairs"] for p in pair["pred"]])
    assert (np.abs(predicted - expected) <= PIXELS).all(axis=1).mean() < 0.5
