"""match_pair.py: the user's own two images, given points, a grid or mutual nearest neighbours."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from model_factory import tiny_checkpoint
from synthetic import SRC_BOX, TRG_BOX, colour_backbone, colour_config, colour_images, write_colour_pairs

import match_pair
from semcorr.cli.flags import points as parse_points
from semcorr.cli.resolve import resolve
from semcorr.config.settings import MatchSettings
from semcorr.engine import pair as mp
from semcorr.runs import folders


def truth(points):
    """Where source points land on the target object (same object coordinates)."""
    s, t = np.array(SRC_BOX, float), np.array(TRG_BOX, float)
    uv = (points + 0.5 - s[:2]) / (s[2:] - s[:2])
    return t[:2] + uv * (t[2:] - t[:2]) - 0.5


def test_match_pair_finds_given_and_mutual_points(tmp_path):
    src, trg = colour_images(tmp_path)
    points = np.array([[40.0, 50.0], [100.3, 95.7], [70.0, 70.0]], dtype=np.float32)
    settings = colour_config(tmp_path, match=MatchSettings("wsoftargmax", 5, 0.1))
    result, _ = mp.match_pair(settings, colour_backbone(tmp_path), src, trg, points=points)
    patch = np.array([230, 150]) / 16  # one target patch, in target pixels
    assert (np.abs(result.pred - truth(points)) < patch).all()
    assert result.similarity.shape == (3, 16, 16) and (result.peak > 0.5).all()

    mutual, _ = mp.match_pair(settings, colour_backbone(tmp_path), src, trg, mutual=20)
    on_object = ((mutual.pair.src_kps >= SRC_BOX[:2]) & (mutual.pair.src_kps <= np.array(SRC_BOX[2:]) - 1)).all(1)
    assert len(mutual.pred) == 20 and on_object.sum() >= 19  # the black background is one repeated feature
    assert (np.abs(mutual.pred[on_object] - truth(mutual.pair.src_kps[on_object])) < patch).all()

    (tmp_path / "out").mkdir()
    mp.draw_pair(tmp_path / "out", result, "title", heatmaps=(1,), name="")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["heatmap_1.png", "matches.png"]
    saved = json.loads(json.dumps(mp.matches_record([result], "colourcode", settings.match)))
    (pair,) = saved["pairs"]
    assert pair["matches"][1]["source"] == pytest.approx([100.3, 95.7], abs=1e-4)
    assert (
        pair["matches"][1]["target"] == pytest.approx(result.pred[1].tolist()) and pair["matches"][1]["truth"] is None
    )


def test_a_checkpoint_defaults_to_the_preprocessing_it_was_trained_with(tmp_path):
    ckpt = tiny_checkpoint(tmp_path, trained={"image_size": [64], "resize": "pad"})
    settings, _ = resolve("match", {"checkpoint": str(ckpt), "src": "a.png", "trg": "b.png"})
    member = settings.member  # its model from the checkpoint, 64 rounded to the 14-pixel patch
    assert (member.image_size, member.resize, member.backbone.model) == ((70, 70), "pad", "dinov2_vitb14")
    settings, _ = resolve("match", {"checkpoint": str(ckpt), "image_size": (28,), "resize": "squash"})
    assert (settings.member.image_size, settings.member.resize) == ((28, 28), "squash")


def test_points_syntax_and_grid():
    assert parse_points("1,2; 3.5,4") == ((1, 2), (3.5, 4))
    for bad in ("1,2,3", "a,b", "", "1,nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="x,y;x,y"):
            parse_points(bad)
    grid = mp.grid_points((100, 50), 2)
    np.testing.assert_allclose(grid, [[24.5, 12], [74.5, 12], [24.5, 37], [74.5, 37]])


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_match_pair_command_line(tmp_path, capsys):
    src, trg = colour_images(tmp_path)
    common = [
        "--src",
        str(src),
        "--trg",
        str(trg),
        "--model",
        "dinov2_vits14",
        "--weights",
        "random",
        "--image-size",
        "28",
        "--device",
        "cpu",
        "--output-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    folder = match_pair.main([*common, "--grid", "2", "--heatmap", "0", "3"])
    assert folder.name.endswith("_match_random-weights_dinov2_vits14_28x28_src_trg")
    names = ["config.json", "features_pca.png", "heatmap_0.png", "heatmap_3.png", "matches.csv", "matches.json",
             "matches.png"]  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == names
    run = folders.read_run(folder)
    (saved,) = run.read("matches")["pairs"]
    assert len(saved["matches"]) == 4 and saved["points"] == "2 x 2 grid"
    assert run.config["resolved"]["members"][0]["image_size"] == [28, 28]
    assert run.config["settings"]["pair"]["grid"] == 2 and run.config["settings"]["pair"]["heatmaps"] == [0, 3]
    assert run.config["settings"]["data"] is None  # no dataset: none is recorded
    with pytest.raises(ValueError, match=r"outside the source image \(200 x 160 pixels\)"):
        match_pair.main([*common, "--points", "10,10;250,10"])
    with pytest.raises(ValueError, match="only 4 points"):
        match_pair.main([*common, "--grid", "2", "--heatmap", "4"])
    with pytest.raises(SystemExit):
        match_pair.main([*common, "--mutual", "0"])
    assert "--mutual: must be >= 1" in capsys.readouterr().err


# --- custom pairs as documented: drawn with or without keypoints, scored by their own boxes --------------------


def boxed_pairs(folder, keypoints: bool = True, boxes: int | None = None) -> str:
    """A pairs file of the colour-coded pairs (synthetic.py, each with its target_bbox) and a third pair of no
    keypoints (with a box); `boxes`: keep the target_bbox of only the first `boxes` pairs."""
    path = write_colour_pairs(folder, n_images=2)
    entries = json.loads(path.read_text())
    for i, entry in enumerate(entries):
        if boxes is not None and i >= boxes:
            del entry["target_bbox"]
        if not keypoints:
            del entry["source_kps"], entry["target_kps"]
    plain = {"source": "im0.png", "target": "im1.png", "pair_id": "plain"}
    entries.append(plain | ({"target_bbox": entries[0]["target_bbox"]} if boxes is None else {}))
    path.write_text(json.dumps(entries))
    return str(path)


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_a_pairs_file_is_matched_and_drawn_pair_by_pair_and_printed(tmp_path, capsys):
    pairs = boxed_pairs(tmp_path / "data")
    folder = match_pair.main(["--pairs", pairs, "--model", "dinov2_vits14", "--weights", "random", "--image-size", "28",
                              "--device", "cpu", "--output-dir", str(tmp_path / "out"), "--no-cache", "--quiet",
                              "--grid", "2", "--heatmap", "1"])  # fmt: skip
    assert folder.name.endswith("_match_random-weights_dinov2_vits14_28x28_custom-pairs_pairs")
    pictures = sorted(p.name for p in folder.glob("*.png"))
    assert pictures == ["features_pca.png"] + [f"{kind}_{pid}{end}.png" for kind, end in (("heatmap", "_1"),
                        ("matches", "")) for pid in ("0-1", "1-0", "plain")]  # fmt: skip
    saved = folders.read_run(folder).read("matches")["pairs"]
    assert [p["points"] for p in saved] == ["the pairs file's keypoints"] * 2 + ["2 x 2 grid"]
    truth = json.loads(Path(pairs).read_text())[0]["target_kps"]
    np.testing.assert_allclose([m["truth"] for m in saved[0]["matches"]], truth, atol=1e-4)  # the file's keypoints
    assert all(m["truth"] is None for m in saved[2]["matches"])
    table = folders.read_run(folder).read("match_table")
    assert len(table) == 5 + 5 + 4 and table["truth_x"].isna().sum() == 4
    printed = capsys.readouterr().out
    first = saved[0]["matches"][0]
    source, target = "({:.1f}, {:.1f})".format(*first["source"]), "({:.1f}, {:.1f})".format(*first["target"])
    assert f"{source} -> {target:>16}  {first['similarity']:.3f}" in printed
    assert "14 matches in 3 pairs" in printed and "px off" in printed


def test_match_pair_offers_no_dataset_flags_and_takes_images_or_a_pairs_file(capsys):
    text = match_pair.arguments().format_help()
    assert "--pairs" in text and not any(flag in text for flag in ("--pf-shift", "--clamp-keypoints", "--dataset"))
    for argv in (["--src", "a.png"], ["--pairs", "p.json", "--src", "a.png", "--trg", "b.png"], []):
        with pytest.raises(SystemExit):
            match_pair.main(argv)
        assert "give --src and --trg (two images), or --pairs (a pairs file)" in capsys.readouterr().err


def test_custom_pairs_are_scored_by_their_target_boxes_when_every_pair_gives_one(tmp_path, recwarn):
    full, none = boxed_pairs(tmp_path / "full"), boxed_pairs(tmp_path / "none", boxes=0)
    assert resolve("evaluation", {"dataset": "custom", "data_root": full}).data.pck_norm == "bbox"
    assert resolve("evaluation", {"dataset": "custom", "data_root": none}).data.pck_norm == "image"
    assert resolve("evaluation", {"dataset": "custom", "data_root": full, "pck_norm": "image"}).data.pck_norm == "image"
    assert resolve("finetune", {"dataset": "custom", "data_root": none, "val_data": full}).data.pck_norm == "bbox"
    assert not recwarn.list
    with pytest.warns(UserWarning, match=r"1 of 3 pairs give a target_bbox, so PCK uses the protocol's threshold"):
        some = resolve("evaluation", {"dataset": "custom", "data_root": boxed_pairs(tmp_path / "some", boxes=1)})
    assert some.data.pck_norm == "image"


def test_the_box_threshold_is_said_and_a_file_of_no_keypoints_points_to_match_pair(tmp_path, capsys):
    import evaluate

    flags = ["--model", "dinov2_vits14", "--weights", "random", "--image-size", "28", "--device", "cpu", "--quiet",
             "--no-cache", "--num-workers", "0", "--output-dir", str(tmp_path / "out"), "--dataset", "custom"]  # fmt: skip
    with pytest.warns(UserWarning, match="RANDOM"):
        run = evaluate.main([*flags, "--data-root", boxed_pairs(tmp_path / "data")])
    threshold = folders.read_run(run).metrics["protocol"]["threshold"]
    assert (
        threshold == "alpha * max side of the target bounding box (the target_bbox each pair of the pairs file gives)"
    )
    assert f"threshold = {threshold}" in capsys.readouterr().out
    plain = boxed_pairs(tmp_path / "plain", keypoints=False)
    with pytest.raises(ValueError, match=f"to match and draw them: python match_pair.py --pairs {plain}"):
        evaluate.main([*flags, "--data-root", plain])
