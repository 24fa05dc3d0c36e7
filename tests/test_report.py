"""report.py and analysis.py: one table of runs beside the published numbers, PCK at any threshold."""

import json

import numpy as np
import pandas as pd
import pytest

import analysis
import published
import report
import results


def test_report_table_and_markdown(evaluation_runs, tmp_path):
    table = report.main(
        [str(evaluation_runs[0].parent), "--markdown", str(tmp_path / "r.md"), "--csv", str(tmp_path / "r.csv")]
    )
    assert table["run"].tolist() == [r.name for r in evaluation_runs]
    assert table["matcher"].tolist() == ["argmax", "wsoftargmax K3 T0.1"]
    assert (
        table.loc[0, "setting"] == "custom weights"
    )  # the test backbone's file is no official one and table.loc[0, "model"] == "colourcode"
    metrics = json.loads((evaluation_runs[1] / "metrics.json").read_text())
    assert table.loc[1, "pck@0.1_per_keypoint"] == metrics["pck@0.1"]["per_keypoint"]
    assert np.isnan(table.loc[1, "pck@0.2_per_image"])  # not evaluated at 0.2
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.splitlines()[0].startswith("| model | setting | dataset |")
    assert f"{metrics['pck@0.1']['per_image']:.1f} ({metrics['pck@0.1']['per_keypoint']:.1f})" in markdown
    saved = pd.read_csv(tmp_path / "r.csv")
    assert saved["run"].tolist() == table["run"].tolist()
    assert saved["pck@0.1_per_image"].tolist() == table["pck@0.1_per_image"].tolist()


def as_original_dinov2_run(run) -> None:
    """Edit a run's files in memory into a zero-shot DINOv2-B run of the original protocol on SPair test."""
    run.config["resolved"].update(model="dinov2_vitb14", weights_origin="official", image_size=[518, 518])
    run.config["protocol"] = {"name": "original", "overrides": {}}
    run.metrics["protocol"].update(dataset="spair", split="test", pck_norm="bbox")
    run.metrics["counts"]["pairs"] = 12234


def test_published_numbers_only_for_the_whole_protocol(evaluation_runs):
    run = results.read_run(evaluation_runs[0])
    as_original_dinov2_run(run)
    assert published.published_for(run).per_image == (35.61, 51.90, 67.64)
    assert published.published_for(run).per_keypoint == (38.12, 54.61, 70.41)
    changes = [
        ("protocol", lambda r: r.config.update(protocol={"name": "default", "overrides": {}})),
        ("an override", lambda r: r.config["protocol"]["overrides"].update(resize="pad")),
        ("threshold", lambda r: r.metrics["protocol"].update(pck_norm="image")),
        ("pair count", lambda r: r.metrics["counts"].update(pairs=100)),
        ("image size", lambda r: r.config["resolved"].update(image_size=[448, 448])),
        ("weights origin", lambda r: r.config["resolved"].update(weights_origin="random")),
        ("matcher", lambda r: r.config["args"]["match"].update(matcher="wsoftargmax")),
    ]
    for what, change in changes:
        run = results.read_run(evaluation_runs[0])
        as_original_dinov2_run(run)
        change(run)
        assert published.published_for(run) is None, what
    run = results.read_run(evaluation_runs[0])
    as_original_dinov2_run(run)
    run.metrics["protocol"].update(dataset="pf-willow", pck_norm="image")
    run.metrics["counts"]["pairs"] = 900
    assert published.published_for(run).per_image == (54.13, 80.78, 93.78)
    run.metrics["protocol"].update(dataset="pf-pascal")
    run.metrics["counts"]["pairs"] = 264  # the original's DINOv2 row covers the first 264 of 299 pairs
    assert published.published_for(run).per_image == (63.79, 82.52, 93.54)


def test_an_ensemble_matches_only_with_every_member_and_weight(evaluation_runs):
    run = results.read_run(evaluation_runs[1])
    members = [("dinov2_vitb14", 0.25, 518), ("dinov3_vitb16", 0.65, 512), ("sam_vit_b", 0.10, 512)]
    run.config["resolved"] = {
        "members": [
            {"model": m, "weight": w, "weights_origin": "fine-tuned", "image_size": [s, s]} for m, w, s in members
        ]
    }
    run.config["args"]["match"].update(matcher="wsoftargmax", window=5, temperature=0.2)
    run.config["protocol"] = {"name": "original", "overrides": {}}
    run.metrics["protocol"].update(dataset="spair", split="test", pck_norm="bbox")
    run.metrics["counts"]["pairs"] = 12234
    assert published.published_for(run).per_image == (57.75, 70.08, 79.32)
    run.config["resolved"]["members"][0]["weight"] = 0.3
    assert published.published_for(run) is None


def test_pck_curve_agrees_with_the_metrics(evaluation_runs):
    run = results.read_run(evaluation_runs[1])
    curve = analysis.pck_curve(run.keypoints(), [0.05, 0.1])
    for alpha, row in zip(("0.05", "0.1"), curve.itertuples(), strict=True):
        assert row.per_image == run.metrics[f"pck@{alpha}"]["per_image"]
        assert row.per_keypoint == run.metrics[f"pck@{alpha}"]["per_keypoint"]
    assert analysis.pck_curve(run.keypoints(), [1e-9])["per_keypoint"].iloc[0] == 0


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no evaluation results"):
        report.main([str(tmp_path)])
