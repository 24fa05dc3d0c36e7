"""Grid search: every cell equals a separate evaluation, features are extracted once, and the
best parameters reach evaluate.py through --params."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle
from PIL import Image
from synthetic import colour_backbone, colour_config, write_colour_pairs

import grid_search_hyperparams
import pck
from semcorr.cli.flags import evaluation_parser, given
from semcorr.cli.resolve import read_best_parameters, resolve
from semcorr.config.settings import DataSettings, GridSettings, MatchSettings
from semcorr.engine import grid_search as gs
from semcorr.engine import matching
from semcorr.engine.evaluation import evaluation_set
from semcorr.engine.matching import predict_keypoints
from semcorr.engine.members import build_member
from semcorr.viz import charts


def grid(windows: list[int], temperatures: list[float]) -> GridSettings:
    return GridSettings(tuple(windows), tuple(temperatures))


def settings_of(argv: list[str]):
    return resolve("evaluation", given(evaluation_parser("test").parse_args(argv)))


def test_grid_extracts_once_and_every_cell_equals_its_own_evaluation(tmp_path, colour_pairs):
    backbone = colour_backbone(tmp_path)
    windows, temperatures = [3, 5], [0.02, 0.5, 2.0]
    settings = colour_config(tmp_path, matcher="wsoftargmax")
    run = gs.grid_search(settings, grid(windows, temperatures), colour_pairs, backbone)
    assert backbone.calls == 2  # 4 images in batches of 3, once for the whole grid
    assert sorted(p.name for p in run.iterdir()) == [
        "best_parameters.json",
        "config.json",
        "grid_search_heatmap.png",
        "grid_search_results.csv",
    ]
    assert run.name.endswith("_grid_custom-weights-weights-8_colourcode_128x128_custom-test_pck_norm=bbox")
    table = pd.read_csv(run / "grid_search_results.csv")
    assert table["matcher"].tolist() == ["argmax"] + ["wsoftargmax"] * 6
    assert table[["window", "temperature"]].iloc[1:].values.tolist() == [[k, t] for k in windows for t in temperatures]
    assert {f"pck@{a}_{avg}" for a in ("0.05", "0.1") for avg in ("per_image", "per_keypoint")} < set(table.columns)
    assert (table["time_s"] > 0).all()

    # each cell is what a single evaluation with that matcher gives
    eval_set, _ = evaluation_set(colour_pairs)
    norm = "bbox"
    member, _ = build_member(settings.member, settings.extract, backbone, eval_set.unique_images(), progress=False)
    for row in table.itertuples():
        cfg = MatchSettings(
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
    assert best["matcher"] == "wsoftargmax"
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
    assert best["0.1"] == {"window": 9, "temperature": 0.2, "pck_per_image": 70.0, "pck_per_keypoint": 69.0, "tied": 2}
    assert argmax == {"0.1": {"pck_per_image": 40.0, "pck_per_keypoint": 41.0}}
    fig = charts.grid_heatmap(table, [0.1], "per_image", "ties", best)
    (outline,) = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert outline.get_xy() == (0.5, 0.5)  # row K=9 (of 3, 9), column T=0.2 (of 0.1, 0.2)


def test_grid_reaches_below_patch_resolution_and_low_temperature_is_argmax(tmp_path, colour_pairs):
    """Known behaviour on the colour-coded data: keypoints lie between patch centres, so a moderate
    temperature beats argmax, and T -> 0 reduces to argmax."""
    table = gs.grid_table(
        *_member_setup(tmp_path, colour_pairs),
        grid([3, 11], [1e-4, 0.1]),
        MatchSettings("wsoftargmax"),
        DataSettings(thresholds=(0.05,), pck_norm="bbox"),
        progress=False,
    )
    col = table["pck@0.05_per_keypoint"]
    assert col[1] == col[0] == col[3]  # T=1e-4 rows equal argmax
    assert col[2] > col[0] + 10 and col[4] > col[0] + 10


def _member_setup(tmp_path, colour_pairs):
    eval_set, _ = evaluation_set(colour_pairs)
    settings = colour_config(tmp_path, no_cache=True)
    member, _ = build_member(
        settings.member, settings.extract, colour_backbone(tmp_path), eval_set.unique_images(), progress=False
    )
    return eval_set.pairs, member


def test_chunked_matching_changes_nothing(tmp_path, colour_pairs, monkeypatch):
    assert matching.target_chunks([3, 3, 3, 10, 1], 7) == [[0, 1], [2], [3], [4]]
    pairs, member = _member_setup(tmp_path, colour_pairs)
    cfgs = [MatchSettings("argmax"), MatchSettings("wsoftargmax", 5, 0.1)]
    whole = matching.predict_variants(pairs, [member], cfgs, progress=False, with_similarity=True)
    monkeypatch.setattr(matching, "CHUNK_KEYPOINTS", 7)  # 5 keypoints per pair, 15 per target image
    chunked = matching.predict_variants(pairs, [member], cfgs, progress=False, with_similarity=True)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.similarity, b.similarity)


def test_best_parameters_reach_evaluation_through_params(tmp_path, colour_pairs):
    settings = colour_config(tmp_path, matcher="wsoftargmax")
    run = gs.grid_search(settings, grid([3, 7], [0.05, 1.0]), colour_pairs, colour_backbone(tmp_path))
    best = json.loads((run / "best_parameters.json").read_text())["best"]
    path = str(run / "best_parameters.json")
    resolved = settings_of(["--params", path, "--params-alpha", "0.05"])
    assert resolved.match == MatchSettings("wsoftargmax", best["0.05"]["window"], best["0.05"]["temperature"])
    setting = {"model": "colourcode", "image_size": [128, 128], "grid": [16, 16]}
    assert (resolved.params.path, resolved.params.alpha, resolved.params.searched) == (path, 0.05, setting)
    assert read_best_parameters(path, 0.1) == (
        "wsoftargmax",
        best["0.1"]["window"],
        best["0.1"]["temperature"],
        setting,
    )


def test_matcher_arguments_without_params_keep_their_defaults():
    assert settings_of([]).match == MatchSettings("argmax", 5, 0.1, "nearest")
    argv = ["--matcher", "wsoftargmax", "--window", "9", "--temperature", "0.2"]
    assert settings_of(argv).match == MatchSettings("wsoftargmax", 9, 0.2, "nearest")


def test_params_errors_are_clear(tmp_path):
    good = tmp_path / "best_parameters.json"
    good.write_text(json.dumps({"matcher": "wsoftargmax", "best": {"0.1": {"window": 7, "temperature": 0.2}}}))
    for extra in (["--window", "5"], ["--temperature", "0.3"], ["--matcher", "argmax"]):
        with pytest.raises(ValueError, match="--params sets the matcher's window and temperature"):
            settings_of(["--params", str(good), *extra])
    assert settings_of(["--params", str(good), "--matcher", "wsoftargmax"]).match.window == 7
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
    assert run.name.endswith("_grid_random-weights_dinov2_vits14_28x28_custom-val")  # its boxes: no override
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["settings"]["grid"]["windows"] == [3, 5]
    assert config_json["resolved"]["members"][0]["image_size"] == [28, 28]
    assert len(pd.read_csv(run / "grid_search_results.csv")) == 3


def test_a_grid_search_says_what_it_searched_on_and_that_identical_cells_tie(tmp_path, colour_pairs, capsys):
    settings = colour_config(tmp_path, matcher="wsoftargmax", image_size=64)  # an 8x8 grid: K >= 15 spans it all
    run = gs.grid_search(settings, grid([15, 17], [0.1]), colour_pairs, colour_backbone(tmp_path))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("colourcode (custom weights ") and "at 64x64, 8x8 patches, squash" in printed[0]
    assert "| wsoftargmax, K and T searched | protocol default" in printed[0]
    assert (
        printed[1]
        == "custom test: 12 pairs, 60 keypoints; threshold = alpha * max side of the target bounding box; PCK in %"
    )
    best_lines = [line for line in printed if line.startswith("best at")]
    assert best_lines and all(
        line.endswith(
            "; a tie: all 2 tie at the best, the first in the order searched (--windows, then --temperatures, as given) is named"
        )
        for line in best_lines
    )
    best = json.loads((run / "best_parameters.json").read_text())["best"]["0.1"]
    assert (best["window"], best["tied"]) == (15, 2)
