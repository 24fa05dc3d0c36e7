"""The notebooks run end to end on results folders made here, and are committed without outputs;
report.py gathers runs into one table beside the published numbers."""

import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from synthetic import colour_backbone, colour_config, write_colour_pairs

import report
from evaluation import MatchConfig, evaluate
from pairs import load_pairs

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An argmax and a soft-argmax evaluation of the same pairs."""
    tmp = tmp_path_factory.mktemp("runs")
    pairset = load_pairs("custom", root=write_colour_pairs(tmp / "data"))
    backbone = colour_backbone(tmp, image_size=64)
    return [
        evaluate(colour_config(tmp, match=MatchConfig(m, 3, 0.1)), pairset, backbone) for m in ("argmax", "wsoftargmax")
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_inspect_results_notebook_runs(runs, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_results.ipynb"
    monkeypatch.setenv("INSPECT_RESULTS", os.pathsep.join(map(str, runs)))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3 + 2 * 2 * 2  # curves, categories, comparison; 2 best + 2 worst for each run
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert str(runs[0]) in text and "wsoftargmax K3 T0.1" in text


def test_report_table_and_markdown(runs, tmp_path):
    table = report.main([str(runs[0].parent), "--markdown", str(tmp_path / "r.md"), "--csv", str(tmp_path / "r.csv")])
    assert table["run"].tolist() == [r.name for r in runs]
    assert table["matcher"].tolist() == ["argmax", "wsoftargmax K3 T0.1"]
    assert table.loc[0, "setting"] == "zero-shot" and table.loc[0, "model"] == "colourcode"
    metrics = json.loads((runs[1] / "metrics.json").read_text())
    assert table.loc[1, "pck@0.1_per_keypoint"] == metrics["pck@0.1"]["per_keypoint"]
    assert np.isnan(table.loc[1, "pck@0.2_per_image"])  # not evaluated at 0.2
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.splitlines()[0].startswith("| model | setting | dataset |")
    assert f"{metrics['pck@0.1']['per_image']:.1f} ({metrics['pck@0.1']['per_keypoint']:.1f})" in markdown
    saved = pd.read_csv(tmp_path / "r.csv")
    assert saved["run"].tolist() == table["run"].tolist()
    assert saved["pck@0.1_per_image"].tolist() == table["pck@0.1_per_image"].tolist()


def test_published_numbers_only_for_the_same_protocol(runs):
    run = report.load_run(runs[0])
    run.config["resolved"]["model"] = "dinov2_vitb14"
    run.config["args"]["weights"] = None
    run.metrics["protocol"].update(dataset="spair", split="test", pck_norm="bbox")
    assert report.published_for(run).per_image == (35.61, 51.90, 67.64)
    run.metrics["protocol"]["pck_norm"] = "image"  # another threshold: not comparable
    assert report.published_for(run) is None
    run.metrics["protocol"].update(dataset="pf-willow", pck_norm="image")
    assert report.published_for(run).per_image == (54.13, 80.78, 93.78)
    run.config["args"]["match"]["matcher"] = "wsoftargmax"
    assert report.published_for(run) is None


def test_pck_curve_agrees_with_the_metrics(runs):
    run = report.load_run(runs[1])
    curve = report.pck_curve(run.keypoints(), [0.05, 0.1])
    for alpha, row in zip(("0.05", "0.1"), curve.itertuples(), strict=True):
        assert row.per_image == run.metrics[f"pck@{alpha}"]["per_image"]
        assert row.per_keypoint == run.metrics[f"pck@{alpha}"]["per_keypoint"]
    assert report.pck_curve(run.keypoints(), [1e-9])["per_keypoint"].iloc[0] == 0


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such results folder"):
        report.find_runs([tmp_path / "missing"])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        report.load_run(tmp_path / "half")
