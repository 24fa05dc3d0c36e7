"""Grid search: every cell equals a separate evaluation, features are extracted once, and the
best parameters reach evaluate.py through --params."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle
from PIL import Image
from synthetic import colour_backbone, colour_config, write_colour_pairs

import evaluation
import grid_search as gs
import grid_search_hyperparams
import pck
import plots
from cli import eval_config, evaluation_parser, read_best_parameters
from evaluation import build_member, evaluation_set, predict_keypoints
from settings import MatchConfig


def test_grid_extracts_once_and_every_cell_equals_its_own_evaluation(tmp_path, colour_pairs):
    backbone = colour_backbone(tmp_path)
    windows, temperatures = [3, 5], [0.02, 0.5, 2.0]
    run = gs.grid_search(colour_config(tmp_path), colour_pairs, backbone, windows=windows, temperatures=temperatures)
    assert backbone.calls == 2  # 4 images in batches of 3, once for the whole grid
    assert sorted(p.name for p in run.iterdir()) == [
        "best_parameters.json",
        "config.json",
        "grid_search_heatmap.png",
        "grid_search_results.csv",
    ]
    assert run.name.endswith("_colourcode_custom_test_grid")
    table = pd.read_csv(run / "grid_search_results.csv")
    assert table["matcher"].tolist() == ["argmax"] + ["wsoftargmax"] * 6
    assert table[["window", "temperature"]].iloc[1:].values.tolist() == [[k, t] for k in windows for t in temperatures]
    assert {f"pck@{a}_{avg}" for a in ("0.05", "0.1") for avg in ("per_image", "per_keypoint")} < set(table.columns)
    assert (table["time_s"] > 0).all()

    # each cell is what a single evaluation with that matcher gives
    eval_set, _ = evaluation_set(colour_pairs)
    norm = "bbox"
    member, _ = build_member(colour_config(tmp_path, cache_dir=None), backbone, eval_set)
    for row in table.itertuples():
        cfg = MatchConfig(
            row.matcher,
            5 if row.matcher == "argmax" else int(row.window),
            0.1 if row.matcher == "argmax" else row.temperature,
        )
        pred = predict_keypoints(eval_set.pairs, [member], cfg, progress=False)
        summary = pck.summarize(pck.keypoint_table(eval_set.pairs, pred, [0.05, 0.1], norm))
        assert table.loc[row.Index, "pck@0.05_per_image"] == pytest.approx(summary["pck@0.05"]["per_image"])
        assert table.loc[row.Index, "pck@0.1_per_keypoint"] == pytest.approx(summary["pck@0.1"]["per_keypoint"])

    best = json.loads((run / "best_parameters.json").read_text())
    soft = table[table["matcher"] == "wsoftargmax"]
    for alpha in ("0.05", "0.1"):
        top = soft.loc[soft[f"pck@{alpha}_per_image"].idxmax()]
        assert (best["best"][alpha]["window"], best["best"][alpha]["temperature"]) == (
            top["window"],
            top["temperature"],
        )
        assert best["argmax"][alpha]["pck_per_image"] == table.loc[0, f"pck@{alpha}_per_image"]
    assert best["pck_norm"] == "bbox" and best["pairs"] == 12 and best["keypoints"] == 60
    assert Image.open(run / "grid_search_heatmap.png").size[0] > 400


def test_ties_go_to_the_first_cell_searched_and_the_heatmap_outlines_that_cell():
    """Windows given as 9, 3 (the heatmap sorts them): K=9 T=0.2 and K=3 T=0.1 tie, the first searched wins."""
    cells = [(9, 0.1, 50.0), (9, 0.2, 70.0), (3, 0.1, 70.0), (3, 0.2, 60.0)]
    rows = [
        {
            "matcher": "argmax",
            "window": None,
            "temperature": None,
            "pck@0.1_per_image": 40.0,
            "pck@0.1_per_keypoint": 41.0,
        }
    ]
    rows += [
        {"matcher": "wsoftargmax", "window": k, "temperature": t, "pck@0.1_per_image": v, "pck@0.1_per_keypoint": v - 1}
        for k, t, v in cells
    ]
    table = pd.DataFrame(rows).astype({"window": "Int64"})
    best, argmax = gs.best_parameters(table, [0.1], "per_image")
    assert best["0.1"] == {"window": 9, "temperature": 0.2, "pck_per_image": 70.0, "pck_per_keypoint": 69.0}
    assert argmax == {"0.1": {"pck_per_image": 40.0, "pck_per_keypoint": 41.0}}
    fig = plots.grid_heatmap(table, [0.1], "per_image", "ties", best)
    (outline,) = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert outline.get_xy() == (0.5, 0.5)  # row K=9 (of 3, 9), column T=0.2 (of 0.1, 0.2)


def test_grid_reaches_below_patch_resolution_and_low_temperature_is_argmax(tmp_path, colour_pairs):
    """Known behaviour on the colour-coded data: keypoints lie between patch centres, so a moderate
    temperature beats argmax, and T -> 0 reduces to argmax."""
    table = gs.grid_table(
        *_member_setup(tmp_path, colour_pairs),
        windows=[3, 11],
        temperatures=[1e-4, 0.1],
        thresholds=[0.05],
        norm="bbox",
        progress=False,
    )
    col = table["pck@0.05_per_keypoint"]
    assert col[1] == col[0] == col[3]  # T=1e-4 rows equal argmax
    assert col[2] > col[0] + 10 and col[4] > col[0] + 10


def _member_setup(tmp_path, colour_pairs):
    eval_set, _ = evaluation_set(colour_pairs)
    member, _ = build_member(colour_config(tmp_path, cache_dir=None), colour_backbone(tmp_path), eval_set)
    return eval_set.pairs, member


def test_chunked_matching_changes_nothing(tmp_path, colour_pairs, monkeypatch):
    assert evaluation.target_chunks([3, 3, 3, 10, 1], 7) == [[0, 1], [2], [3], [4]]
    pairs, member = _member_setup(tmp_path, colour_pairs)
    cfgs = [MatchConfig("argmax"), MatchConfig("wsoftargmax", 5, 0.1)]
    whole = evaluation.predict_variants(pairs, [member], cfgs, progress=False, with_similarity=True)
    monkeypatch.setattr(evaluation, "CHUNK_KEYPOINTS", 7)  # 5 keypoints per pair, 15 per target image
    chunked = evaluation.predict_variants(pairs, [member], cfgs, progress=False, with_similarity=True)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.similarity, b.similarity)


def test_best_parameters_reach_evaluation_through_params(tmp_path, colour_pairs):
    run = gs.grid_search(
        colour_config(tmp_path), colour_pairs, colour_backbone(tmp_path), windows=[3, 7], temperatures=[0.05, 1.0]
    )
    best = json.loads((run / "best_parameters.json").read_text())["best"]
    parser = evaluation_parser("test")
    args = parser.parse_args(["--params", str(run / "best_parameters.json"), "--params-alpha", "0.05"])
    cfg = eval_config(args)
    assert cfg.match == MatchConfig("wsoftargmax", best["0.05"]["window"], best["0.05"]["temperature"])
    assert cfg.match_params.endswith("(best at PCK@0.05)")
    setting = {"model": "colourcode", "image_size": [128, 128], "grid": [16, 16]}
    assert cfg.params_setting == setting
    assert read_best_parameters(run / "best_parameters.json", 0.1) == (
        best["0.1"]["window"],
        best["0.1"]["temperature"],
        setting,
    )


def test_matcher_arguments_without_params_keep_their_defaults():
    parser = evaluation_parser("test")
    assert eval_config(parser.parse_args([])).match == MatchConfig("argmax", 5, 0.1, "nearest")
    args = parser.parse_args(["--matcher", "wsoftargmax", "--window", "9", "--temperature", "0.2"])
    assert eval_config(args).match == MatchConfig("wsoftargmax", 9, 0.2, "nearest")


def test_params_errors_are_clear(tmp_path):
    good = tmp_path / "best_parameters.json"
    good.write_text(json.dumps({"best": {"0.1": {"window": 7, "temperature": 0.2}}}))
    parser = evaluation_parser("test")
    for extra in (["--window", "5"], ["--temperature", "0.3"], ["--matcher", "argmax"]):
        with pytest.raises(ValueError, match="--params sets the soft-argmax window"):
            eval_config(parser.parse_args(["--params", str(good), *extra]))
    assert eval_config(parser.parse_args(["--params", str(good), "--matcher", "wsoftargmax"])).match.window == 7
    with pytest.raises(ValueError, match=r"alpha 0.1, not 0.05; choose one of those with --params-alpha"):
        read_best_parameters(good, 0.05)
    with pytest.raises(FileNotFoundError, match=r"grid_search_hyperparams\.py"):
        read_best_parameters(tmp_path / "missing.json", 0.1)
    bad = tmp_path / "bad.json"
    for text in ('{"window": 5}', '{"best": {"0.1": {"window": 5}}}', '{"best": [1]}', "not json"):
        bad.write_text(text)
        with pytest.raises(ValueError, match=r"is not a best_parameters\.json"):
            read_best_parameters(bad, 0.1)


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_command_line_grid_search(tmp_path, capsys):
    """The script end to end with a tiny random DINOv2 (argument wiring, folder, printout)."""
    pairs_file = write_colour_pairs(tmp_path / "data", n_images=3, kps=3)
    grid_search_hyperparams.main(
        [
            "--model",
            "dinov2_vits14",
            "--weights",
            "random",
            "--image-size",
            "28",
            "--device",
            "cpu",
            "--num-workers",
            "0",
            "--dataset",
            "custom",
            "--data-root",
            str(pairs_file),
            "--pck-norm",
            "bbox",
            "--windows",
            "3",
            "5",
            "--temperatures",
            "0.1",
            "--output-dir",
            str(tmp_path / "results"),
            "--quiet",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    out = capsys.readouterr().out
    assert "best at PCK@0.1 (per_image): K=" in out
    (run,) = (tmp_path / "results").iterdir()
    assert run.name.endswith("_dinov2_vits14_custom_val_grid")
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["args"]["windows"] == [3, 5] and config_json["resolved"]["image_size"] == [28, 28]
    assert len(pd.read_csv(run / "grid_search_results.csv")) == 3
