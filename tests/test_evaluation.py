"""The evaluation run: results folder, reproducibility from the CSV, feature cache, resumption."""

import hashlib
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from synthetic import colour_backbone, colour_config

import pck
from semcorr.config.settings import MatchSettings
from semcorr.engine.evaluation import evaluate
from semcorr.runs.folders import read_run


@pytest.fixture
def pairset(colour_pairs):
    """The colour-coded pairs, as if the loader had skipped 2 pairs without keypoints."""
    return replace(colour_pairs, skipped={"no keypoints": 2})


@pytest.fixture
def backbone(tmp_path):
    return colour_backbone(tmp_path)  # its weights file exists, so the feature cache is used


def config(tmp_path, **kw):
    return colour_config(tmp_path, thresholds=[0.05, 0.1, 0.2], **kw)


def test_run_folder_files_and_figures_recompute_from_csv(tmp_path, pairset, backbone):
    run = evaluate(config(tmp_path, match=MatchSettings("wsoftargmax", 3, 0.05)), pairset, backbone)
    assert run.name.endswith(
        "_custom-weights-weights-8_colourcode_128x128_custom-test_wsoftargmax-K3-T0.05_pck_norm=bbox"
    )
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.json", "per_keypoint.csv", "per_pair.csv"]
    metrics = json.loads((run / "metrics.json").read_text())
    recomputed = pck.summarize(read_run(run).keypoints())
    for key, value in recomputed.items():
        assert metrics[key] == value, key  # JSON floats round-trip exactly
    assert metrics["pck@0.1"]["per_keypoint"] > 90  # the colour code makes this an easy benchmark
    assert metrics["counts"]["pairs"] == 12 and metrics["counts"]["images"] == 4
    assert metrics["counts"]["pairs_skipped"] == {"no keypoints": 2}
    assert metrics["protocol"]["pck_norm"] == "bbox"
    per_pair = pd.read_csv(run / "per_pair.csv", dtype={"pair_id": str})
    table = read_run(run).keypoints()
    assert per_pair.set_index("pair_id")["pck@0.1"].to_dict() == pytest.approx(
        (table.groupby("pair_id")["correct@0.1"].mean() * 100).to_dict()
    )
    cfg = json.loads((run / "config.json").read_text())
    (member,) = cfg["resolved"]["members"]
    assert member["weights_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert member["image_size"] == [128, 128] and cfg["settings"]["match"]["window"] == 3
    assert torch.__version__.startswith(cfg["environment"]["packages"]["torch"])


def test_rerun_uses_cache_and_never_overwrites(tmp_path, pairset, backbone):
    first = evaluate(config(tmp_path), pairset, backbone)
    assert backbone.calls == 2  # 4 images in batches of 3
    backbone.calls = 0
    second = evaluate(config(tmp_path), pairset, backbone)
    assert backbone.calls == 0
    assert first != second and first.exists()
    a = pd.read_csv(first / "per_keypoint.csv")
    b = pd.read_csv(second / "per_keypoint.csv")
    pd.testing.assert_frame_equal(a, b)


def test_interrupted_extraction_resumes(tmp_path, pairset, backbone):
    forward = backbone.forward

    def dies_on_second_batch(images):
        if backbone.calls == 1:
            raise KeyboardInterrupt
        return forward(images)

    backbone.forward = dies_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        evaluate(config(tmp_path), pairset, backbone)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
    backbone.forward = forward
    backbone.calls = 0
    run = evaluate(config(tmp_path), pairset, backbone)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timings"]["images_from_cache"] == 3 and metrics["timings"]["images_extracted"] == 1


def test_cache_is_keyed_by_preprocessing(tmp_path, pairset, backbone):
    evaluate(config(tmp_path), pairset, backbone)
    backbone.calls = 0
    evaluate(config(tmp_path, resize="pad"), pairset, backbone)
    assert backbone.calls == 2
