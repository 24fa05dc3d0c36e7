"""Several benchmarks in one run (--dataset a b c) and in one table, benchmarks as columns: each dataset its own
run with its own threshold, the backbone through each image once, the table's numbers recomputed from the runs'
files; report.py gives the same table from any evaluations of several benchmarks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from dataset_factory import make_pf_pascal, make_pf_willow, make_spair
from model_factory import tiny_checkpoint

import evaluate
import pck
import report
from semcorr.cli.resolve import resolve
from semcorr.config.settings import BENCHMARK_THRESHOLDS, Benchmarks
from semcorr.runs.folders import read_run

FLAGS = ["--device", "cpu", "--num-workers", "0", "--quiet", "--image-size", "56"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("benchmarks")
    roots = {"spair": make_spair(tmp / "SPair-71k"), "pf-pascal": make_pf_pascal(tmp / "pf_pascal"),
             "pf-willow": make_pf_willow(tmp / "pf_willow")}  # fmt: skip
    return tmp, roots, tiny_checkpoint(tmp)


def test_several_datasets_resolve_to_one_evaluation_each():
    runs = resolve("evaluation", {"dataset": ["spair", "pf-pascal", "spair:small"], "data_root": ["spair=/s"]}).runs
    assert [(r.data.dataset, r.data.layout, r.data.root, r.data.pck_norm) for r in runs] == [
        ("spair", "large", "/s", "bbox"), ("pf-pascal", None, None, "image"), ("spair", "small", "/s", "bbox")
    ]  # fmt: skip
    assert all(r.data.thresholds == BENCHMARK_THRESHOLDS for r in runs)
    given = resolve("evaluation", {"dataset": ["spair", "pf-willow"], "thresholds": (0.1,), "layout": "small"})
    assert [(r.data.thresholds, r.data.layout) for r in given.runs] == [((0.1,), "small"), ((0.1,), None)]
    assert not isinstance(resolve("evaluation", {"dataset": ["pf-willow"], "data_root": ["/w"]}), Benchmarks)
    for flags, error in (
        ({"dataset": ["spair", "pf-pascal"], "data_root": ["/s"]}, "give each folder as DATASET=PATH"),
        ({"dataset": ["spair", "spair"]}, "a benchmark given twice"),
        ({"dataset": ["spair"], "data_root": ["pf-pascal=/p"]}, "pf-pascal is not among --dataset spair"),
    ):
        with pytest.raises(ValueError, match=error):
            resolve("evaluation", flags)
    with pytest.raises(ValueError, match="--dataset takes one dataset for a grid"):
        resolve("grid", {"dataset": ["spair", "pf-pascal"]})


def test_one_run_of_three_benchmarks_writes_their_runs_and_one_table(world, capsys):
    tmp, roots, checkpoint = world
    out = tmp / "out"
    argv = ["--checkpoint", str(checkpoint), "--dataset", "spair", "pf-pascal", "pf-willow", "--data-root"]
    argv += [f"{name}={root}" for name, root in roots.items()]
    folder = evaluate.main([*argv, *FLAGS, "--output-dir", str(out)])
    printed = capsys.readouterr().out
    group = read_run(folder)
    assert group.kind == "benchmarks" and group.config["resolved"]["benchmarks"] == ["SPair-71k", "PF-Pascal",
                                                                                     "PF-Willow"]  # fmt: skip
    runs = [read_run(out / name) for name in group.config["resolved"]["runs"]]
    assert [run.metrics["protocol"]["pck_norm"] for run in runs] == ["bbox", "image", "kpbox"]  # each its own
    table = group.read("benchmarks").set_index("run")
    for run, name in zip(runs, ("SPair-71k", "PF-Pascal", "PF-Willow"), strict=True):
        curve = pck.pck_curve(run.keypoints(), BENCHMARK_THRESHOLDS)["per_image"].to_numpy()
        np.testing.assert_allclose(table[[f"{name} PCK@{a:g}" for a in BENCHMARK_THRESHOLDS]].iloc[0], curve)
        assert run.metrics[f"pck@{BENCHMARK_THRESHOLDS[1]:g}"]["per_image"] == pytest.approx(curve[1])
    header = next(line for line in printed.splitlines()[printed.splitlines().index(next(
        line for line in printed.splitlines() if line.startswith("all benchmarks"))) + 1:])  # fmt: skip
    assert header.split() == ["SPair-71k", "PF-Pascal", "PF-Willow"]  # benchmarks as columns, alphas as rows
    assert "PCK@0.15" in printed


def test_the_report_puts_every_benchmark_in_one_table(world, tmp_path, capsys):
    tmp, roots, checkpoint = world
    out = tmp / "report_runs"
    for dataset in ("spair", "pf-pascal"):  # two separate evaluations, as most are run
        evaluate.main(["--checkpoint", str(checkpoint), "--dataset", dataset, "--data-root", str(roots[dataset]),
                       *FLAGS, "--output-dir", str(out)])  # fmt: skip
    capsys.readouterr()
    report.main([str(out), "--latex", str(tmp_path / "paper")])
    printed = capsys.readouterr().out
    assert "## all benchmarks" in printed
    csv = pd.read_csv(tmp_path / "paper" / "benchmarks.csv")
    assert len(csv) == 1 and list(csv.columns[1:]) == [
        f"{name} PCK@{a:g}" for name in ("SPair-71k", "PF-Pascal") for a in BENCHMARK_THRESHOLDS
    ]
    latex = (tmp_path / "paper" / "benchmarks.tex").read_text()
    assert "SPair-71k PCK@0.1" in latex and "\\toprule" in latex
    assert json.loads(json.dumps(csv.iloc[0, 1:].tolist()))  # numbers, not text
