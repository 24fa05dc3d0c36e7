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
    assert table.loc[0, "setting"] == "zero-shot" and table.loc[0, "model"] == "colourcode"
    metrics = json.loads((evaluation_runs[1] / "metrics.json").read_text())
    assert table.loc[1, "pck@0.1_per_keypoint"] == metrics["pck@0.1"]["per_keypoint"]
    assert np.isnan(table.loc[1, "pck@0.2_per_image"])  # not evaluated at 0.2
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.splitlines()[0].startswith("| model | setting | dataset |")
    assert f"{metrics['pck@0.1']['per_image']:.1f} ({metrics['pck@0.1']['per_keypoint']:.1f})" in markdown
    saved = pd.read_csv(tmp_path / "r.csv")
    assert saved["run"].tolist() == table["run"].tolist()
    assert saved["pck@0.1_per_image"].tolist() == table["pck@0.1_per_image"].tolist()


def test_published_numbers_only_for_the_same_protocol(evaluation_runs):
    run = results.read_run(evaluation_runs[0])
    run.config["resolved"]["model"] = "dinov2_vitb14"
    run.config["args"]["weights"] = None
    run.metrics["protocol"].update(dataset="spair", split="test", pck_norm="bbox")
    assert published.published_for(run, analysis.run_settings(run)).per_image == (35.61, 51.90, 67.64)
    run.metrics["protocol"]["pck_norm"] = "image"  # another threshold: not comparable
    assert published.published_for(run, analysis.run_settings(run)) is None
    run.metrics["protocol"].update(dataset="pf-willow", pck_norm="image")
    assert published.published_for(run, analysis.run_settings(run)).per_image == (54.13, 80.78, 93.78)
    run.config["args"]["match"]["matcher"] = "wsoftargmax"
    assert published.published_for(run, analysis.run_settings(run)) is None


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
