"""Pictures: what is drawn where and in which colour, best/worst pairs, and match_pair.py."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import ConnectionPatch
from PIL import Image
from synthetic import colour_backbone, colour_config, render_object, write_colour_pairs

import match_pair as mp
import pck
import viz2d
from cli import eval_config, evaluation_parser
from evaluation import MatchConfig, evaluate
from helper_functions import Preprocess, image_geometry
from pairs import load_pairs

SRC_BOX, TRG_BOX = (20, 30, 120, 110), (50, 10, 170, 140)


def lines(fig):
    return [a for a in fig.artists if isinstance(a, ConnectionPatch)]


def pair_rows(correct):
    n = len(correct)
    xy = np.arange(2 * n, dtype=float).reshape(n, 2) + 10
    return pd.DataFrame(
        {
            "pair_id": "p",
            "category": "cat",
            "kp_id": [str(i) for i in range(n)],
            "src_x": xy[:, 0],
            "src_y": xy[:, 1],
            "gt_x": xy[:, 0] + 5,
            "gt_y": xy[:, 1],
            "pred_x": xy[:, 0] + 1,
            "pred_y": xy[:, 1] + 1,
            "distance": 1.0,
            "norm_L": 10.0,
            "correct@0.1": correct,
        }
    )


def test_matches_are_coloured_by_correctness_with_ground_truth():
    img = Image.new("RGB", (60, 40))
    fig = viz2d.draw_pair_rows(pair_rows([True, False, True]), img, img, alpha=0.1)
    drawn = lines(fig)
    assert len(drawn) == 3
    assert [to_rgba(line.get_edgecolor(), 1) for line in drawn] == [to_rgba(c) for c in ("lime", "red", "lime")]
    src_ax, trg_ax = fig.axes
    assert list(drawn[1].xy1) == [12.0, 13.0] and list(drawn[1].xy2) == [13.0, 14.0]  # source -> prediction
    assert drawn[1].axesA is src_ax and drawn[1].axesB is trg_ax
    truth = [
        c
        for c in trg_ax.collections
        if len(c.get_offsets()) == 3 and c.get_facecolor()[0].tolist() == list(to_rgba("cyan"))
    ]
    assert len(truth) == 1 and truth[0].get_offsets()[1].tolist() == [17.0, 13.0]
    dotted = [ln for ln in trg_ax.lines if ln.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_xydata().tolist() == [[13.0, 14.0], [17.0, 13.0]]  # wrong one only
    assert "PCK@0.1 = 67% (2/3)" in fig._suptitle.get_text()


@pytest.mark.parametrize("resize", ["squash", "pad"])
def test_heatmap_spans_the_patch_grid_in_image_pixels(resize):
    size = (300, 200)
    prep = Preprocess.create(224, 14, resize)
    geom = image_geometry(size, prep)
    left, right, bottom, top = viz2d.grid_extent(geom, prep)
    # the grid's outer edges are the network input's edges, mapped back to the image
    np.testing.assert_allclose(
        geom.to_input(np.array([[left, top], [right, bottom]])), [[-0.5, -0.5], [223.5, 223.5]], atol=1e-9
    )
    if resize == "squash":
        assert (left, right, bottom, top) == pytest.approx((-0.5, 299.5, 199.5, -0.5))
    else:
        assert top < -0.5 and bottom > 199.5 and (left, right) == pytest.approx((-0.5, 299.5))
    heat = np.zeros(prep.grid)
    heat[3, 5] = 1
    img = Image.new("RGB", size)
    fig = viz2d.draw_similarity(img, img, np.array([10.0, 10.0]), heat, (left, right, bottom, top))
    trg_ax = fig.axes[1]
    assert trg_ax.images[-1].get_extent() == [left, right, bottom, top]
    assert trg_ax.get_xlim() == (-0.5, 299.5) and trg_ax.get_ylim() == (199.5, -0.5)  # still the image


def test_best_and_worst_pairs_are_drawn(tmp_path):
    pairset = load_pairs("custom", root=write_colour_pairs(tmp_path / "data", n_images=3))
    pairs = pairset.pairs[:3]
    correct = {pairs[0].pair_id: [1, 0, 0, 0, 0], pairs[1].pair_id: [1] * 5, pairs[2].pair_id: [0] * 5}
    rows = []
    for p in pairs:
        for k, (xy, ok) in enumerate(zip(p.trg_kps, correct[p.pair_id], strict=True)):
            rows.append(
                {
                    "pair_id": p.pair_id,
                    "category": p.category,
                    "kp_id": str(k),
                    "src_x": p.src_kps[k, 0],
                    "src_y": p.src_kps[k, 1],
                    "gt_x": xy[0],
                    "gt_y": xy[1],
                    "pred_x": xy[0],
                    "pred_y": xy[1],
                    "distance": 0.0 if ok else 50.0,
                    "norm_L": 100.0,
                    "correct@0.05": bool(ok),
                    "correct@0.1": bool(ok),
                }
            )
    table = pd.DataFrame(rows)
    assert viz2d.pair_ranking(table, 0.1)["pair_id"].tolist() == [pairs[1].pair_id, pairs[0].pair_id, pairs[2].pair_id]
    written = viz2d.save_best_worst(tmp_path / "vis", pairs, table, n=2)
    assert [p.name for p in written] == [
        f"best_01_{pairs[1].pair_id}.png",
        f"best_02_{pairs[0].pair_id}.png",
        f"worst_01_{pairs[2].pair_id}.png",
    ]
    assert all(Image.open(p).size[0] > 100 for p in written)


def test_evaluation_saves_pictures_of_its_best_and_worst_pairs(tmp_path):
    pairset = load_pairs("custom", root=write_colour_pairs(tmp_path / "data"))
    run = evaluate(colour_config(tmp_path, save_vis=1), pairset, colour_backbone(tmp_path, image_size=64))
    per_pair = pd.read_csv(run / "per_pair.csv", dtype={"pair_id": str})
    table = pck.read_keypoint_table(run / "per_keypoint.csv")
    ranking = viz2d.pair_ranking(table, 0.1)["pair_id"]
    assert per_pair.set_index("pair_id").loc[ranking.iloc[0], "pck@0.1"] == per_pair["pck@0.1"].max()
    assert sorted(p.name for p in (run / "vis").iterdir()) == [
        f"best_01_{ranking.iloc[0]}.png",
        f"worst_01_{ranking.iloc[-1]}.png",
    ]


def test_save_vis_argument():
    parser = evaluation_parser("test")
    assert eval_config(parser.parse_args(["--save-vis", "3"])).save_vis == 3
    assert eval_config(parser.parse_args([])).save_vis == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--save-vis", "-1"])


def colour_images(tmp_path):
    src, trg = tmp_path / "src.png", tmp_path / "trg.png"
    render_object((200, 160), SRC_BOX).save(src)
    render_object((230, 150), TRG_BOX).save(trg)
    return src, trg


def truth(points):
    """Where source points land on the target object (same object coordinates)."""
    s, t = np.array(SRC_BOX, float), np.array(TRG_BOX, float)
    uv = (points + 0.5 - s[:2]) / (s[2:] - s[:2])
    return t[:2] + uv * (t[2:] - t[:2]) - 0.5


def test_match_pair_finds_given_and_mutual_points(tmp_path):
    src, trg = colour_images(tmp_path)
    points = np.array([[40.0, 50.0], [100.3, 95.7], [70.0, 70.0]], dtype=np.float32)
    cfg = MatchConfig("wsoftargmax", 5, 0.1)
    result = mp.match_pair(colour_backbone(tmp_path), src, trg, cfg, points)
    patch = np.array([230, 150]) / 16  # one target patch, in target pixels
    assert (np.abs(result.pred - truth(points)) < patch).all()
    assert result.similarity.shape == (3, 16, 16) and (result.peak > 0.5).all()

    mutual = mp.match_pair(colour_backbone(tmp_path), src, trg, cfg, mutual=20)
    on_object = ((mutual.pair.src_kps >= SRC_BOX[:2]) & (mutual.pair.src_kps <= np.array(SRC_BOX[2:]) - 1)).all(1)
    assert len(mutual.pred) == 20 and on_object.sum() >= 19  # the black background is one repeated feature
    assert (np.abs(mutual.pred[on_object] - truth(mutual.pair.src_kps[on_object])) < patch).all()

    report = mp.write_outputs(tmp_path / "out", result, colour_backbone(tmp_path), cfg, heatmaps=[1])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["heatmap_1.png", "matches.json", "matches.png"]
    saved = json.loads((tmp_path / "out" / "matches.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["matches"][1]["source"] == pytest.approx([100.3, 95.7], abs=1e-4)
    assert saved["matches"][1]["target"] == pytest.approx(result.pred[1].tolist())


def test_match_pair_defaults_to_the_preprocessing_a_checkpoint_was_trained_with(tmp_path):
    src, trg = colour_images(tmp_path)
    backbone = colour_backbone(tmp_path)
    backbone.extra = {"finetune": {"image_size": [64], "resize": "pad"}}  # what load_finetuned restores
    result = mp.match_pair(backbone, src, trg, MatchConfig(), np.array([[40.0, 50.0]]))
    assert (result.features.prep.height, result.features.prep.width, result.features.prep.resize) == (64, 64, "pad")


def test_points_syntax_and_grid():
    np.testing.assert_array_equal(mp.parse_points("1,2; 3.5,4"), [[1, 2], [3.5, 4]])
    for bad in ("1,2,3", "a,b", "", "1,nan"):
        with pytest.raises(ValueError, match="x,y;x,y"):
            mp.parse_points(bad)
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
    folder = mp.main([*common, "--grid", "2", "--heatmap", "0", "3"])
    assert folder.name.endswith("_match_dinov2_vits14_src_trg")
    assert sorted(p.name for p in folder.iterdir()) == ["heatmap_0.png", "heatmap_3.png", "matches.json", "matches.png"]
    saved = json.loads((folder / "matches.json").read_text())
    assert len(saved["matches"]) == 4 and saved["points"] == "2 x 2 grid" and saved["image_size"] == [28, 28]
    with pytest.raises(ValueError, match=r"outside the source image \(200 x 160 pixels\)"):
        mp.main([*common, "--points", "10,10;250,10"])
    with pytest.raises(ValueError, match="only 4 points"):
        mp.main([*common, "--grid", "2", "--heatmap", "4"])
    with pytest.raises(ValueError, match="--mutual must be >= 1"):
        mp.main([*common, "--mutual", "0"])
