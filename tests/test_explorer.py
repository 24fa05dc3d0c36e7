"""The match explorer (semcorr/viz/explorer.py, notebooks/explore_matches.ipynb): a click answers what match_pair.py
answers, from the evaluations' feature cache, and the notebook runs headlessly through its own callbacks."""

import json
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from matplotlib.figure import Figure
from model_factory import write_official_checkpoint
from nbclient import NotebookClient
from synthetic import SRC_BOX, TRG_BOX, colour_backbone, colour_config, colour_images, write_colour_pairs

import match_pair
from semcorr.config.settings import MatchSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.geometry import Geometry
from semcorr.engine import pair as mp
from semcorr.runs import folders
from semcorr.viz.explorer import Explorer, ExplorerView, dataset_pairs, pair_choices, settings_of_run
from semcorr.viz.figures import heatmap_in_pixels

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_matches.ipynb"


def test_click_answers_what_match_pair_answers(tmp_path):
    src, trg = colour_images(tmp_path)
    cfg = colour_config(tmp_path, match=MatchSettings("wsoftargmax", 3, 0.2))
    explorer = Explorer(cfg, colour_backbone(tmp_path))
    explorer.open_images(src, trg)
    points = np.array([[40, 50], [100.3, 95.7], [0, 0], [199, 159], [119.4, 30.6]], np.float32)
    clicks = [explorer.click(x, y) for x, y in points]
    for matcher in ("argmax", "wsoftargmax"):
        cfg_m = colour_config(tmp_path, match=MatchSettings(matcher, 3, 0.2))
        expected, _ = mp.match_pair(cfg_m, colour_backbone(tmp_path), src, trg, points=points)
        np.testing.assert_array_equal(np.stack([c.predictions[matcher] for c in clicks]), expected.pred)
        np.testing.assert_allclose([c.similarity for c in clicks], expected.peak, rtol=1e-6)
    # the colour-coded object: the same object coordinates, within a target patch
    s, t = np.array(SRC_BOX, float), np.array(TRG_BOX, float)
    truth = t[:2] + (points[:2] + 0.5 - s[:2]) / (s[2:] - s[:2]) * (t[2:] - t[:2]) - 0.5
    assert (
        np.abs(np.stack([c.predictions["wsoftargmax"] for c in clicks[:2]]) - truth) < np.array([230, 150]) / 16
    ).all()
    click = clicks[0]
    assert click.heatmap.shape == (150, 230) and click.extent == (-0.5, 229.5, 149.5, -0.5)
    peak = np.unravel_index(click.heatmap.argmax(), click.heatmap.shape)[::-1]
    assert (
        np.abs(np.array(peak) - click.predictions["argmax"]).max() < 230 / 16
    )  # the heatmap peaks at the argmax patch
    assert click.keypoint is None and click.truth is None and "ground truth" not in click.describe()
    assert (
        json.loads(json.dumps(click.record()))["predictions"]["wsoftargmax"]
        == click.predictions["wsoftargmax"].tolist()
    )

    features = explorer.features_figure()  # the pair's features, their principal components as RGB
    assert [ax.get_title() for ax in features.axes[:2]] == ["src.png", "trg.png"]
    assert features.axes[2].images[0].get_array().shape == (160, 200, 3)  # over the source's pixels

    explorer.window, explorer.temperature = 5, 0.05
    wider = explorer.click(40, 50)
    cfg_5 = colour_config(tmp_path, match=MatchSettings("wsoftargmax", 5, 0.05))
    expected, _ = mp.match_pair(cfg_5, colour_backbone(tmp_path), src, trg, points=points[:1])
    np.testing.assert_array_equal(wider.predictions["wsoftargmax"], expected.pred[0])


def test_a_second_explorer_reads_the_features_from_the_cache(tmp_path):
    src, trg = colour_images(tmp_path)
    cfg = colour_config(tmp_path)
    first, second = colour_backbone(tmp_path), colour_backbone(tmp_path)
    Explorer(cfg, first).open_images(src, trg)
    explorer = Explorer(cfg, second)
    explorer.open_images(src, trg)
    assert first.calls == 1 and second.calls == 0
    assert explorer.stats["images_from_cache"] == 2 and explorer.stats["images_extracted"] == 0
    assert explorer.click(40, 50).seconds < 1.0  # milliseconds in practice; generous on a busy machine


def test_heatmap_is_the_similarity_map_at_pixel_centres():
    sim = np.arange(12, dtype=float).reshape(3, 4)
    # pixel i lands on patch centre i: the input is twice the image, with 2-pixel patches
    heat, extent = heatmap_in_pixels(sim, Geometry((4, 3), (8, 6), (0.0, 0.0)), patch_size=2)
    np.testing.assert_allclose(heat, sim)
    assert extent == (-0.5, 3.5, 2.5, -0.5)
    # pixel 1 lies a quarter of the way from patch centre 0 to 1: bilinear; beyond the last centre: clamped
    heat, _ = heatmap_in_pixels(sim, Geometry((8, 6), (8, 6), (0.0, 0.0)), patch_size=2)
    assert heat.shape == (6, 8) and heat[0, 1] == pytest.approx(0.75 * sim[0, 0] + 0.25 * sim[0, 1])
    assert heat[0, 0] == sim[0, 0] and heat[5, 7] == sim[2, 3]
    # a large image: every stride-th pixel (blocks of 3 x 3 centred at 1, 4, ...), spanning the image
    heat, extent = heatmap_in_pixels(sim, Geometry((8, 6), (8, 6), (0.0, 0.0)), patch_size=2, max_side=3)
    assert heat.shape == (2, 3) and extent == (-0.5, 8.5, 5.5, -0.5)
    assert heat[0, 1] == pytest.approx(heatmap_in_pixels(sim, Geometry((8, 6), (8, 6), (0.0, 0.0)), 2)[0][1, 4])


def test_dataset_pair_shows_the_nearest_keypoints_ground_truth(tmp_path, colour_pairs):
    pair = colour_pairs.pairs[3]
    explorer = Explorer(colour_config(tmp_path, match=MatchSettings("wsoftargmax", 3, 0.1)), colour_backbone(tmp_path))
    explorer.open_pair(pair)
    x, y = pair.src_kps[2] + np.array([2.0, -1.0])
    click = explorer.click(x, y)
    assert click.keypoint == 2 and click.keypoint_id == pair.kp_ids[2]
    assert click.keypoint_distance == pytest.approx(np.sqrt(5), abs=1e-4)
    np.testing.assert_array_equal(click.truth, pair.trg_kps[2])
    assert np.abs(explorer.click(*pair.src_kps[2]).predictions["wsoftargmax"] - pair.trg_kps[2]).max() < 230 / 16
    assert f"keypoint {pair.kp_ids[2]} (2.2 px from the click)" in click.describe()
    labels = pair_choices({p.pair_id: p for p in colour_pairs.pairs})
    assert next(iter(labels)) == f"{colour_pairs.pairs[0].pair_id} (a, 5 keypoints)"


def test_a_results_folder_opens_with_the_runs_settings_and_features(tmp_path, evaluation_runs):
    run = folders.read_run(evaluation_runs[1])  # soft-argmax K3 T0.1, 64-pixel input
    cfg = settings_of_run(run, device="cpu")
    match, device = cfg.match, cfg.member.backbone.device
    assert (match.matcher, match.window, match.temperature, device) == ("wsoftargmax", 3, 0.1, "cpu")
    pairs = dataset_pairs(cfg)
    table = run.keypoints()
    choices = pair_choices(pairs, table)
    worst = next(iter(choices.values()))
    assert len(choices) == len(pairs) == 12
    by_pair = table.groupby("pair_id")["correct@0.1"].mean()
    assert by_pair[worst] == by_pair.min()
    backbone = colour_backbone(tmp_path, image_size=64)  # the same weights file contents: the run's cache entries
    explorer = Explorer(cfg, backbone)
    explorer.open_pair(pairs[worst])
    assert backbone.calls == 0 and explorer.stats["images_from_cache"] == 2
    rows = table[table["pair_id"] == worst]
    predicted = np.stack(
        [explorer.click(x, y).predictions["wsoftargmax"] for x, y in rows[["src_x", "src_y"]].to_numpy()]
    )
    np.testing.assert_allclose(predicted, rows[["pred_x", "pred_y"]].to_numpy(), atol=1e-9)


def test_what_the_explorer_refuses(tmp_path, evaluation_runs):
    explorer = Explorer(colour_config(tmp_path), colour_backbone(tmp_path))
    with pytest.raises(ValueError, match="no image pair open"):
        explorer.click(1, 1)
    explorer.open_images(*colour_images(tmp_path))
    with pytest.raises(ValueError, match=r"\(200, 10\) lies outside the source image \(200 x 160 pixels\)"):
        explorer.click(200, 10)
    run = folders.read_run(evaluation_runs[0])
    settings = run.config["settings"]
    run.config = {**run.config, "settings": {**settings, "members": settings["members"] * 2}}
    with pytest.raises(ValueError, match="an ensemble evaluation: explore one member"):
        settings_of_run(run)


def test_view_draws_a_press_on_the_source_and_ignores_others(tmp_path, colour_pairs):
    pair = colour_pairs.pairs[0]
    explorer = Explorer(colour_config(tmp_path), colour_backbone(tmp_path))
    explorer.open_pair(pair)
    view = ExplorerView(explorer, Figure(figsize=(10, 4.5)))
    assert view.on_click(SimpleNamespace(inaxes=view.trg_ax, xdata=10.0, ydata=10.0)) is None
    assert view.on_click(SimpleNamespace(inaxes=None, xdata=None, ydata=None)) is None
    x, y = pair.src_kps[1]
    click = view.on_click(SimpleNamespace(inaxes=view.src_ax, xdata=x, ydata=y))
    assert view.last is click and click.keypoint == 1
    for name in ("argmax", "wsoftargmax"):
        np.testing.assert_array_equal(view.marks[name].get_xydata()[0], click.predictions[name])
    np.testing.assert_array_equal(view.nearest.get_xydata()[0], pair.src_kps[1])
    np.testing.assert_array_equal(view.heat.get_array(), click.heatmap)
    assert view.heat.get_clim() == (click.heatmap.min(), click.heatmap.max())
    assert view.trg_ax.get_xlim() == (-0.5, pair.trg.size[0] - 0.5)  # the heatmap does not move the image
    explorer.window = 3
    assert view.redo().window == 3


@pytest.mark.slow
def test_notebook_click_equals_match_pair(tmp_path, monkeypatch):
    """The notebook on a dataset pair: a simulated press through the canvas callback answers what
    match_pair.py answers for that point; the pair, keypoint and K menus drive the view."""
    weights = write_official_checkpoint(tmp_path, "dinov2_vits14")
    data = write_colour_pairs(tmp_path / "data")
    settings = {"MODEL": "dinov2_vits14", "WEIGHTS": weights, "IMAGE_SIZE": "112", "DEVICE": "cpu",
                "CACHE_DIR": tmp_path / "cache", "DATASET": "custom", "DATA_ROOT": data, "LIMIT": "4",
                "WINDOW": "3", "TEMPERATURE": "0.2", "SIMULATE_CLICK": "40,50"}  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setenv(f"EXPLORE_{name}", str(value))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            'pair_menu.value = "1-0"\nkeypoint_menu.value = 2\nwindow.value = 5\n'
            'print("widgets: " + json.dumps({"pair": ex.pair.pair_id, **view.last.record()}))'
        )
    )
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "a click answers in" in text and "widget-view" in json.dumps([o.get("data", {}) for o in outputs])
    lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in text.splitlines() if ": {" in line}
    click, widgets = json.loads(lines["click"]), json.loads(lines["widgets"])

    common = ["--model", "dinov2_vits14", "--weights", str(weights), "--image-size", "112", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "results"), "--quiet",
              "--src", str(data.parent / "im0.png"), "--trg", str(data.parent / "im1.png"), "--points", "40,50"]  # fmt: skip
    for matcher, window in (("argmax", []), ("wsoftargmax", ["--window", "3", "--temperature", "0.2"])):
        folder = match_pair.main([*common, "--matcher", matcher, *window])
        ((match,),) = [pair["matches"] for pair in folders.read_run(folder).read("matches")["pairs"]]
        assert click["predictions"][matcher] == match["target"]
        assert click["similarity"] == pytest.approx(match["similarity"])

    pair = {p.pair_id: p for p in load_pairs("custom", root=data).pairs}["1-0"]
    assert widgets["pair"] == "1-0" and widgets["window"] == 5 and widgets["keypoint"] == pair.kp_ids[2]
    assert widgets["source"] == pytest.approx(pair.src_kps[2].tolist())
    assert widgets["truth"] == pytest.approx(pair.trg_kps[2].tolist())
