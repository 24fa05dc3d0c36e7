"""The notebooks run end to end on results folders made here, and are committed without outputs."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.slow
def test_inspect_results_notebook_runs(evaluation_runs, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_results.ipynb"
    started = evaluation_runs[0].parents[1]  # folders relative to where jupyter was started, as in the README
    monkeypatch.setenv("PWD", str(started))
    monkeypatch.setenv("INSPECT_RESULTS", os.pathsep.join(str(run.relative_to(started)) for run in evaluation_runs))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4 + 2 * 2 * 2  # curves, categories, keypoint ids, per-pair scatter; 2 best + 2 worst per run
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert str(evaluation_runs[0]) in text and "wsoftargmax K3 T0.1" in text
    assert "\n   argmax\n" in text and "\n   wsoftargmax K3 T0.1\n" in text  # each run by what differs
    assert "every run: colourcode, custom weights weights-8.bin, 64x64," in text  # the rest once
    assert "| all | all pairs |" in text and "more than noise" in text  # the comparison table
