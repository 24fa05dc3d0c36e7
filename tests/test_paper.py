"""semcorr/report/paper.py and comparison.py: every number of the paper tables recomputes from the runs' CSV files,
the SPair-71k difficulty breakdown equals hand-computed values, the LaTeX is well formed, and two runs
are compared with a reproducible paired bootstrap."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from paper_runs import counted_run, hand_run, spair_runs

import pck
from semcorr.report import comparison, paper, summary
from semcorr.report.labels import run_labels
from semcorr.runs.folders import read_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return [read_run(p) for p in spair_runs(tmp_path_factory.mktemp("spair_runs"))]


@pytest.fixture
def hand(tmp_path):
    return read_run(hand_run(tmp_path / "hand"))


# --- SPair-71k difficulty breakdown ------------------------------------------------------------------


def test_difficulty_breakdown_equals_hand_computed_values(hand):
    got = pck.difficulty(hand.keypoints(), hand.pairs())
    expected = {  # level: (per image, per keypoint, pairs, keypoints), from HAND_PAIRS by hand
        "viewpoint_variation": {"easy": (75.0, 200 / 3, 2, 3), "hard": (50 / 3, 20.0, 2, 5)},
        "scale_variation": {"easy": (50.0, 50.0, 1, 2), "medium": (200 / 3, 50.0, 2, 4), "hard": (0.0, 0.0, 1, 2)},
        "truncation": {"none": (50.0, 50.0, 1, 2), "source": (100.0, 100.0, 1, 1), "both": (50 / 3, 20.0, 2, 5)},
        "occlusion": {"none": (50.0, 50.0, 1, 2), "target": (200 / 3, 50.0, 2, 4), "both": (0.0, 0.0, 1, 2)},
    }
    for flag, levels in expected.items():
        assert list(got[flag]) == list(levels), flag  # only the levels present, in level order
        for level, (image, keypoint, pairs, keypoints) in levels.items():
            entry = got[flag][level]
            assert entry["pck@0.1"]["per_image"] == pytest.approx(image)
            assert entry["pck@0.1"]["per_keypoint"] == pytest.approx(keypoint)
            assert (entry["pairs"], entry["keypoints"]) == (pairs, keypoints)
    table = paper.difficulty_table([hand], ["hand"], alpha=0.1, averaging="per_keypoint")
    assert table.frame.loc[("viewpoint variation", "hard"), "hand"] == pytest.approx(20.0)
    assert table.frame.loc[("scale variation", "medium"), "pairs"] == 2


def test_every_spair_evaluation_stores_and_prints_its_difficulty_breakdown(runs):
    for run in runs:
        assert pck.has_difficulty_flags(run.pairs())
        recomputed = pck.difficulty(run.keypoints(), run.pairs())
        assert run.metrics["difficulty"] == recomputed  # exactly, from the CSV files alone
        assert sum(level["pairs"] for level in recomputed["occlusion"].values()) == 24
    printed = summary.evaluation_summary(runs[0].config, runs[0].metrics)
    block = printed.split("per difficulty level, PCK@0.1 per image (pairs):\n")[1].splitlines()[:4]
    assert [line.split("  ")[0] for line in block] == [
        "viewpoint variation", "scale variation", "truncation", "occlusion"
    ]  # fmt: skip
    easy = runs[0].metrics["difficulty"]["viewpoint_variation"]["easy"]
    assert f"easy {easy['pck@0.1']['per_image']:.2f} ({easy['pairs']})" in block[0]


def test_custom_pairs_have_no_difficulty_breakdown(evaluation_runs):
    assert "difficulty" not in read_run(evaluation_runs[0]).metrics


# --- the tables recompute from the CSV files ------------------------------------------------------------


def test_group_tables_equal_the_metrics(runs):
    labels = run_labels(runs).names
    assert labels == ["argmax", "wsoftargmax K3 T0.1"]  # what differs between the two
    overall, per_category, difficulty = paper.group_tables(runs, labels, (0.05, 0.1, 0.2), alpha=0.1)
    for run, label in zip(runs, labels, strict=True):
        m = run.metrics
        for alpha in ("0.05", "0.1", "0.2"):
            assert overall.frame.loc[label, f"PCK@{alpha}"] == m[f"pck@{alpha}"]["per_image"]
        for category, scores in m["per_category"].items():
            assert per_category.frame.loc[category, label] == pytest.approx(scores["pck@0.1"]["per_image"], abs=1e-9)
        assert per_category.frame.loc["all pairs", label] == m["pck@0.1"]["per_image"]
        for flag, levels in m["difficulty"].items():
            for level, scores in levels.items():
                row = (flag.replace("_", " "), level)
                assert difficulty.frame.loc[row, label] == pytest.approx(scores["pck@0.1"]["per_image"], abs=1e-9)
    keypoint = paper.overall_table(runs, labels, (0.1,), averaging="per_keypoint")
    assert keypoint.frame[["PCK@0.1"]].to_numpy().ravel().tolist() == [
        r.metrics["pck@0.1"]["per_keypoint"] for r in runs
    ]
    best = overall.frame["PCK@0.05"].idxmax()
    assert overall.bold.loc[best, "PCK@0.05"] and overall.bold["PCK@0.05"].sum() == 1


def test_run_tables_recompute_from_per_keypoint_csv(runs):
    run = runs[0]
    table = pd.read_csv(run.path / "per_keypoint.csv", dtype={"pair_id": str, "kp_id": str})
    consistency, sensitivity, extremes = paper.run_tables(run, "A", (0.05, 0.1, 0.2), alpha=0.1, level=50.0)
    ids = table.groupby(["category", "kp_id"])["correct@0.1"].mean() * 100
    for category, row in consistency.frame.iterrows():
        accuracies = ids.loc[category]
        assert row["mean"] == pytest.approx(accuracies.mean()) and row["std"] == pytest.approx(accuracies.std())
        assert row["range"] == pytest.approx(accuracies.max() - accuracies.min())
        assert row["keypoint ids"] == len(accuracies)
    assert consistency.frame["std"].is_monotonic_decreasing
    for category, row in sensitivity.frame.iterrows():
        subset = table[table["category"] == category]
        reached = row["alpha for 50%"]
        curve = pck.pck_curve(subset, [reached - 0.01, reached, 0.05, 0.2]).set_index("alpha")["per_image"]
        assert curve.iloc[1] >= 50 > curve.iloc[0]  # the first alpha (0.01 steps) that reaches 50%
        assert row["PCK@0.2 - PCK@0.05"] == pytest.approx(curve.loc[0.2] - curve.loc[0.05])
    for category, row in extremes.frame.iterrows():
        accuracies = ids.loc[category]
        assert row["hardest PCK"] == pytest.approx(accuracies.min())
        assert row["easiest PCK"] == pytest.approx(accuracies.max())
        assert ids.loc[(category, row["hardest id"])] == pytest.approx(accuracies.min())
        assert row["pairs"] == table.loc[table["category"] == category, "pair_id"].nunique()
    assert extremes.frame["PCK"].is_monotonic_increasing


# --- LaTeX, CSV, markdown ------------------------------------------------------------------------------


def test_latex_tables_are_booktabs_with_bold_best_and_a_full_caption(runs, tmp_path):
    labels = run_labels(runs).names
    written = paper.group_tables(runs, labels) + paper.run_tables(runs[0], labels[0])
    for table in written:
        tex, csv, md = paper.write_table(table, tmp_path, table.name)
        latex = tex.read_text()
        assert latex.count(r"\toprule") == latex.count(r"\midrule") == latex.count(r"\bottomrule") == 1
        assert latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}") == 1
        columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", latex).group(1))
        body = latex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
        header = latex.split("\\toprule\n")[1].split("\\midrule")[0].strip().splitlines()
        assert len(header) == 1 and len(body) == len(table.frame)
        assert all(line.count(" & ") == columns - 1 and line.endswith(r"\\") for line in header + body)
        caption = re.search(r"\\caption\{(.*)\}", latex).group(1)
        assert "per image" in caption or "per keypoint" in caption
        assert r"$\alpha$ $\times$ max side of the target bounding box" in caption
        assert latex.count(r"\textbf{") == table.bold.to_numpy().sum() + table.frame.reset_index().shape[1]
        numbers = table.frame.select_dtypes("number").columns
        saved = pd.read_csv(csv)[numbers].to_numpy(float)
        np.testing.assert_array_equal(saved, table.frame[numbers].to_numpy(float))  # full precision
        assert (
            md.read_text().startswith(table.caption) and md.read_text().count("**") == 2 * table.bold.to_numpy().sum()
        )
    overall = written[0]
    best = overall.frame["PCK@0.05"].max()
    assert rf"\textbf{{{best:.2f}}}" in paper.to_latex(overall)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_tables_compile(runs, tmp_path):
    labels = run_labels(runs).names
    for table in paper.group_tables(runs, labels):
        paper.write_table(table, tmp_path)
    inputs = "".join(f"\\input{{{t}}}\n" for t in ("overall", "per_category", "difficulty"))
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + inputs + "\\end{document}\n"
    )
    done = subprocess.run(["pdflatex", "-halt-on-error", "doc.tex"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]


def test_latex_text_escapes_specials():
    assert paper.latex_text("50% of a_b & c <= alpha * L") == r"50\% of a\_b \& c $\leq$ $\alpha$ $\times$ L"


# --- comparing two runs ------------------------------------------------------------------------------


def test_comparison_is_paired_reproducible_and_says_when_a_difference_is_noise(runs):
    a, b = runs
    table = comparison.compare_runs(a, b, ("argmax", "soft"), alpha=0.1)
    overall = table.frame.loc[("all", "all pairs")]
    assert overall["A"] == pytest.approx(a.metrics["pck@0.1"]["per_image"])
    assert overall["B"] == pytest.approx(b.metrics["pck@0.1"]["per_image"])
    with_interval = table.frame[table.frame["pairs"] >= 2]  # one pair: no interval
    assert with_interval.notna().all().all() and table.frame.loc[table.frame["pairs"] < 2, "A low"].isna().all()
    for name in ("A", "B", "B - A"):
        assert (with_interval[f"{name} low"] <= with_interval[name] + 1e-9).all()
        assert (with_interval[name] <= with_interval[f"{name} high"] + 1e-9).all()
    assert table.bold["B - A"].tolist() == table.frame["more than noise"].tolist()
    assert table.bold.drop(columns="B - A").to_numpy().sum() == 0
    again = comparison.compare_runs(a, b, ("argmax", "soft"), alpha=0.1)
    pd.testing.assert_frame_equal(table.frame, again.frame)  # fixed seed
    categories = table.frame.loc["category"]
    for category, scores in a.metrics["per_category"].items():
        assert categories.loc[category, "A"] == pytest.approx(scores["pck@0.1"]["per_image"])
    assert table.frame.loc["occlusion", "pairs"].sum() == 24

    same = comparison.compare_runs(a, a, ("a", "a"), alpha=0.1).frame.loc[("all", "all pairs")]
    assert (same["B - A"], same["B - A low"], same["B - A high"], same["more than noise"]) == (0, 0, 0, False)


def compare_counted(tmp_path, correct_a, correct_b, keypoints, averaging="per_image"):
    a = read_run(counted_run(tmp_path / "a", correct_a, keypoints))
    b = read_run(counted_run(tmp_path / "b", correct_b, keypoints))
    return comparison.compare_runs(a, b, ("a", "b"), alpha=0.1, averaging=averaging)


def test_one_more_correct_keypoint_per_pair_is_a_known_difference_with_a_zero_width_interval(tmp_path):
    """Every pair of B has one more of its 5 keypoints correct than in A: B - A is 20 points in every pair, so
    every paired resample gives 20 and the interval is [20, 20], in every row; A's own interval is wide."""
    correct_a = [0, 1, 2, 3, 4, 1, 2, 3]  # mean 2 of 5: PCK 40%; cat (even pairs) and dog both 40%
    table = compare_counted(tmp_path, correct_a, [c + 1 for c in correct_a], [5] * 8)
    frame = table.frame
    assert frame.loc[("all", "all pairs"), ["A", "B", "pairs"]].tolist() == pytest.approx([40.0, 60.0, 8])
    assert frame.loc["category", "A"].tolist() == pytest.approx([40.0, 40.0])
    for column in ("B - A", "B - A low", "B - A high"):
        np.testing.assert_allclose(frame[column].to_numpy(float), 20.0, atol=1e-9)
    assert frame["more than noise"].all() and table.bold["B - A"].all()
    overall = frame.loc[("all", "all pairs")]
    assert overall["A low"] < 40.0 - 5 and overall["A high"] > 40.0 + 5  # unpaired, A alone varies a lot
    assert frame.loc["viewpoint variation", "pairs"].tolist() == [3, 3, 2]  # pair i at level i % 3


def test_differences_that_cancel_out_are_noise(tmp_path):
    """B is one keypoint better on half the pairs and one worse on the other half: B - A is 0 and its interval
    holds values on both sides of 0."""
    correct_a = [1, 2] * 4
    table = compare_counted(tmp_path, correct_a, [2, 1] * 4, [5] * 8)
    overall = table.frame.loc[("all", "all pairs")]
    assert overall["A"] == overall["B"] == pytest.approx(30.0) and overall["B - A"] == pytest.approx(0.0, abs=1e-9)
    assert overall["B - A low"] < 0 < overall["B - A high"]
    assert not overall["more than noise"] and not table.bold.loc[("all", "all pairs"), "B - A"]


def test_per_keypoint_comparison_pools_keypoints(tmp_path):
    """Pairs of 2 and 4 keypoints, B one more correct in each: per keypoint, B - A = 8 / 24 keypoints = 33.3
    points (per image it would be the mean of 50 and 25 = 37.5); each resample gives a value between 25 and 50."""
    keypoints, correct_a = [2, 4] * 4, [0, 1, 1, 2] * 2
    correct_b = [c + 1 for c in correct_a]
    pooled = compare_counted(tmp_path, correct_a, correct_b, keypoints, "per_keypoint")
    overall = pooled.frame.loc[("all", "all pairs")]
    assert overall["A"] == pytest.approx(100 * 8 / 24) and overall["B"] == pytest.approx(100 * 16 / 24)
    assert overall["B - A"] == pytest.approx(100 * 8 / 24)
    assert 25.0 <= overall["B - A low"] < overall["B - A"] < overall["B - A high"] <= 50.0
    assert overall["more than noise"] and "per keypoint" in pooled.caption
    assert pooled.frame.loc[("category", "cat"), "B - A"] == pytest.approx(50.0)  # cat: the 2-keypoint pairs
    per_image = compare_counted(tmp_path / "image", correct_a, correct_b, keypoints).frame.loc[("all", "all pairs")]
    assert per_image["B - A"] == pytest.approx(37.5)


def test_comparison_refuses_different_pair_lists(runs, evaluation_runs, tmp_path):
    other = read_run(evaluation_runs[0])
    with pytest.raises(ValueError, match=r"cannot compare .*: dataset spair vs custom"):
        comparison.compare_runs(runs[0], other)
    copy = tmp_path / "copy"
    shutil.copytree(runs[1].path, copy)
    config = json.loads((copy / "config.json").read_text())
    config["resolved"]["pairs_fingerprint"] = "0123456789abcdef"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"different pair lists .* the same dataset, split, layout and --limit"):
        comparison.compare_runs(runs[0], read_run(copy))


def test_example_rows_pick_the_easiest_and_hardest_keypoint_ids(runs):
    rows = comparison.example_rows(runs[0].keypoints(), runs[1].keypoints(), alpha=0.1, n=2)
    ids = paper.keypoint_id_pck(runs[0].keypoints(), 0.1)["pck"]
    assert rows["kind"].tolist() == ["easy", "easy", "hard", "hard"]
    easy, hard = rows.iloc[0], rows.iloc[2]
    assert easy["id_pck_a"] == ids.max() and hard["id_pck_a"] == ids.min()
    assert rows["correct"].tolist() == [True, True, False, False]  # easy rows show A right, hard rows A wrong
    assert ids.loc[(hard["category"], hard["kp_id"])] == ids.min()
    b = runs[1].keypoints().set_index(["pair_id", "kp_id"])
    assert rows["pred_x_b"].tolist() == [
        b.loc[(p, k), "pred_x"] for p, k in zip(rows["pair_id"], rows["kp_id"], strict=True)
    ]
    for column, run in (("correct", runs[0]), ("correct_b", runs[1])):  # as pck.py scored them in the runs' files
        stored = run.keypoints().set_index(["pair_id", "kp_id"])["correct@0.1"]
        assert rows[column].tolist() == [stored.loc[key] for key in zip(rows["pair_id"], rows["kp_id"], strict=True)]
    assert np.isfinite(rows[["error", "error_b"]].to_numpy()).all()
