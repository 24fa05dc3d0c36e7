"""match_pair.py: the user's own two images, given points, a grid or mutual nearest neighbours."""

import argparse
import json

import numpy as np
import pytest
from model_factory import tiny_checkpoint
from synthetic import SRC_BOX, TRG_BOX, colour_backbone, colour_config, colour_images

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
    report = mp.write_outputs(tmp_path / "out", result, colour_backbone(tmp_path), settings, heatmaps=(1,))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["heatmap_1.png", "matches.png"]
    saved = json.loads(json.dumps(report))
    assert saved["matches"][1]["source"] == pytest.approx([100.3, 95.7], abs=1e-4)
    assert saved["matches"][1]["target"] == pytest.approx(result.pred[1].tolist())


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
    names = ["config.json", "heatmap_0.png", "heatmap_3.png", "matches.json", "matches.png"]
    assert sorted(p.name for p in folder.iterdir()) == names
    run = folders.read_run(folder)
    saved = run.read("matches")
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
