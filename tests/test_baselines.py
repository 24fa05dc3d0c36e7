"""A run beside its baseline (--baseline, or the zero-shot run of the same setting) and beside the published number
of the original's protocol: the difference in metrics.json and the summary."""

from __future__ import annotations

import json

import pytest
from synthetic import colour_backbone, colour_config

from semcorr.config.settings import MatchSettings
from semcorr.data.datasets import load_pairs
from semcorr.engine.evaluation import evaluate
from semcorr.report import summary
from semcorr.runs.folders import read_run

SOFT = MatchSettings("wsoftargmax", 3, 0.1)


def as_zero_shot(run) -> None:
    """Mark a results folder's weights as Meta's official file (what a zero-shot run records)."""
    config = json.loads((run / "config.json").read_text())
    for member in config["resolved"]["members"]:
        member["weights_origin"] = "official"
    (run / "config.json").write_text(json.dumps(config))


def test_a_named_baseline_gives_the_difference_in_metrics_and_summary(tmp_path, colour_pairs, capsys):
    backbone = colour_backbone(tmp_path)
    first = evaluate(colour_config(tmp_path), colour_pairs, backbone)
    second = evaluate(colour_config(tmp_path, match=SOFT, baseline=str(first)), colour_pairs, backbone)
    a, b = read_run(first).metrics, read_run(second).metrics
    baseline = b["baseline"]
    assert baseline["run"] == str(first) and baseline["chosen"] == "--baseline"
    for key in ("pck@0.05", "pck@0.1"):
        for avg in ("per_image", "per_keypoint"):
            assert baseline[key][avg] == {"baseline": a[key][avg], "difference": b[key][avg] - a[key][avg]}
    printed = capsys.readouterr().out
    assert f"against {first} (--baseline): this run - baseline, per image (per keypoint):" in printed
    line = f"  PCK@0.1: {b['pck@0.1']['per_image']:.2f} vs {a['pck@0.1']['per_image']:.2f}: "
    assert line + f"{baseline['pck@0.1']['per_image']['difference']:+.2f}" in printed
    with pytest.raises(ValueError, match="no such results folder"):  # refused before any work
        colour_config(tmp_path, baseline=str(tmp_path / "typo"))


def test_the_zero_shot_run_of_the_same_setting_is_found(tmp_path, colour_pairs):
    backbone = colour_backbone(tmp_path)
    other_size = evaluate(colour_config(tmp_path, image_size=64), colour_pairs, backbone)
    same = evaluate(colour_config(tmp_path), colour_pairs, backbone)
    other_matcher = evaluate(colour_config(tmp_path, match=SOFT), colour_pairs, backbone)
    for run in (other_size, same, other_matcher):
        as_zero_shot(run)
    tuned = read_run(evaluate(colour_config(tmp_path), colour_pairs, backbone)).metrics  # custom weights
    assert (
        tuned["baseline"]["run"] == str(same) and tuned["baseline"]["chosen"] == "the zero-shot run of the same setting"
    )
    assert tuned["baseline"]["pck@0.1"]["per_image"]["difference"] == 0  # the same features, here
    other_pairs = load_pairs("custom", root=colour_pairs.root, limit=6)
    alone = read_run(evaluate(colour_config(tmp_path), other_pairs, backbone)).metrics
    assert "baseline" not in alone  # no zero-shot run scored these 6 pairs


def test_a_baseline_over_other_pairs_is_said_and_skipped(tmp_path, colour_pairs):
    backbone = colour_backbone(tmp_path)
    first = evaluate(colour_config(tmp_path), load_pairs("custom", root=colour_pairs.root, limit=6), backbone)
    with pytest.warns(UserWarning, match="scored other pairs or another threshold: no difference is given"):
        second = evaluate(colour_config(tmp_path, baseline=str(first)), colour_pairs, backbone)
    assert "baseline" not in read_run(second).metrics


def test_a_run_of_the_original_protocol_prints_the_published_number(tmp_path, colour_pairs):
    run = read_run(evaluate(colour_config(tmp_path), colour_pairs, colour_backbone(tmp_path)))
    config, metrics = run.config, run.metrics
    assert "published by the original project" not in summary.evaluation_summary(config, metrics)
    config["resolved"]["members"][0].update(model="dinov2_vitb14", weights_origin="official", image_size=[518, 518])
    config["settings"]["protocol"] = {"name": "original", "overrides": {}}
    metrics["protocol"].update(dataset="spair", split="test", pck_norm="bbox")
    metrics["counts"]["pairs"] = 12234
    printed = summary.evaluation_summary(config, metrics)
    assert (
        "published by the original project for this protocol, per image (per keypoint): PCK@0.05 35.61 (38.12), "
        "PCK@0.1 51.90 (54.61), PCK@0.2 67.64 (70.41)" in printed
    )
