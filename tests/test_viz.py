"""Pictures: what is drawn where and in which colour, and the best and worst pairs of a run."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import ConnectionPatch
from PIL import Image
from synthetic import colour_backbone, colour_config, write_colour_pairs

from semcorr.cli.flags import evaluation_parser, given
from semcorr.cli.resolve import resolve
from semcorr.data.datasets import load_pairs
from semcorr.data.geometry import Preprocess, image_geometry
from semcorr.engine.evaluation import evaluate
from semcorr.runs.folders import read_run
from semcorr.viz import charts, figures, viz2d


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
    fig = figures.draw_pair_rows(pair_rows([True, False, True]), img, img, alpha=0.1)
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
def test_a_similarity_heatmap_is_drawn_per_image_pixel_over_the_image(resize):
    size = (300, 200)
    prep = Preprocess.create(224, 14, resize)
    geom = image_geometry(size, prep)
    heat = np.zeros(prep.grid)
    heat[3, 5] = 1
    pixels, extent = figures.heatmap_in_pixels(heat, geom, prep.patch_size)
    assert pixels.shape == (200, 300) and extent == (-0.5, 299.5, 199.5, -0.5)  # not 16 x 16 blocks
    assert len(np.unique(pixels.round(6))) > 100  # smooth: bilinear between patch centres
    img = Image.new("RGB", size)
    fig = figures.draw_similarity(img, img, np.array([10.0, 10.0]), pixels, extent)
    trg_ax = fig.axes[1]
    assert trg_ax.images[-1].get_array().shape == (200, 300)
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
    assert figures.pair_ranking(table, 0.1)["pair_id"].tolist() == [
        pairs[1].pair_id,
        pairs[0].pair_id,
        pairs[2].pair_id,
    ]
    written = figures.save_best_worst(tmp_path / "vis", pairs, table, n=2)
    assert [p.name for p in written] == [
        f"best_01_{pairs[1].pair_id}.png",
        f"best_02_{pairs[0].pair_id}.png",
        f"worst_01_{pairs[2].pair_id}.png",
    ]
    assert all(Image.open(p).size[0] > 100 for p in written)


def test_evaluation_saves_pictures_of_its_best_and_worst_pairs(tmp_path):
    pairset = load_pairs("custom", root=write_colour_pairs(tmp_path / "data"))
    run = evaluate(
        colour_config(tmp_path, save_vis=1, image_size=64), pairset, colour_backbone(tmp_path, image_size=64)
    )
    per_pair = pd.read_csv(run / "per_pair.csv", dtype={"pair_id": str})
    table = read_run(run).keypoints()
    ranking = figures.pair_ranking(table, 0.1)["pair_id"]
    assert per_pair.set_index("pair_id").loc[ranking.iloc[0], "pck@0.1"] == per_pair["pck@0.1"].max()
    assert sorted(p.name for p in (run / "vis").iterdir()) == [
        f"best_01_{ranking.iloc[0]}.png",
        f"worst_01_{ranking.iloc[-1]}.png",
    ]


def test_save_vis_argument():
    parser = evaluation_parser("test")
    assert resolve("evaluation", given(parser.parse_args(["--save-vis", "3"]))).output.save_vis == 3
    assert resolve("evaluation", given(parser.parse_args([]))).output.save_vis == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--save-vis", "-1"])


def legend_labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_evaluation_pictures_and_heatmaps_explain_their_marks():
    img = Image.new("RGB", (60, 40))
    fig = figures.draw_pair_rows(pair_rows([True, False]), img, img, alpha=0.1)
    assert legend_labels(fig) == [
        "correct at PCK@0.1",
        "wrong at PCK@0.1",
        "ground truth",
        "wrong prediction -> ground truth",
    ]
    heat = np.linspace(0.2, 0.9, 12).reshape(3, 4)
    fig = figures.draw_similarity(img, img, np.array([5.0, 5.0]), heat, (-0.5, 59.5, 39.5, -0.5), pred_xy=[9.0, 9.0])
    assert legend_labels(fig) == ["source point", "prediction"]
    (bar,) = [ax for ax in fig.axes[2:] if ax.get_ylabel() == "cosine similarity"]
    assert bar.get_ylim() == pytest.approx((0.2, 0.9))


def test_scored_matches_use_a_colour_bar_not_red_and_green():
    colors, norm = viz2d.score_colors(np.array([0.2, 0.6, 1.0]))
    assert (norm.vmin, norm.vmax) == (0.2, 1.0)
    assert colors[0] != colors[-1] and to_rgba("red") not in colors and to_rgba("lime") not in colors
    close, norm = viz2d.score_colors(np.array([0.9675, 0.9682]))  # a hair apart: nearly one colour, not two ends
    assert norm.vmax == 0.9682 and norm.vmin == pytest.approx(0.7682)
    assert np.abs(np.subtract(close[0], close[1])).max() < 0.02


def test_point_ids_are_dark_on_a_light_box():
    fig = viz2d.plot_images([Image.new("RGB", (40, 30), "white")])
    viz2d.label_points(fig.axes[0], np.array([[5.0, 5.0]]), ["7"])
    (text,) = fig.axes[0].texts
    assert text.get_text() == "7" and to_rgba(text.get_color()) == to_rgba("black")
    assert to_rgba(text.get_bbox_patch().get_facecolor())[:3] == (1.0, 1.0, 1.0)


def test_training_curves_of_a_short_flat_run_read():
    log = pd.DataFrame({"step": [0, 2, 4, 6, 6], "loss": [np.nan, np.nan, np.nan, np.nan, 2.7],
                        "lr": [np.nan] * 4 + [1e-5], "val_pck@0.1": [32.29, 32.29, 32.29, 32.29, np.nan]})  # fmt: skip
    fig = charts.training_curves(log, "val_pck@0.1", best_step=2)
    loss_ax, lr_ax, pck_ax = fig.axes
    low, high = pck_ax.get_ylim()
    assert low >= 0 and high - low >= 5 and low < 32.29 < high  # not 32.29 +- 0.04 of noise, never below 0
    assert pck_ax.get_ylabel() == "validation PCK@0.1 (%)"
    assert all(t == int(t) for t in lr_ax.get_xticks())  # steps are whole numbers
    assert loss_ax.get_lines()[0].get_marker() == "o"  # a single loss point is visible


def test_a_grid_where_every_cell_ties_says_so_on_a_labelled_scale():
    rows = [{"matcher": "argmax", "window": pd.NA, "temperature": np.nan, "pck@0.1_per_image": 0.0}]
    rows += [{"matcher": "wsoftargmax", "window": k, "temperature": t, "pck@0.1_per_image": 0.0}
             for k in (3, 5) for t in (0.1, 0.5)]  # fmt: skip
    table = pd.DataFrame(rows).astype({"window": "Int64"})
    fig = charts.grid_heatmap(table, [0.1], "per_image", "", {"0.1": {"window": 3, "temperature": 0.1}})
    panel, bar = fig.axes
    assert panel.images[0].get_clim() == (0.0, 1.0)  # not -0.1 .. 0.1
    assert bar.get_ylabel() == "PCK@0.1 (%)" and "4 cells tie at the best" in panel.get_title()


def test_grid_heatmap_text_stays_readable_on_bright_cells():
    rows = [{"matcher": "argmax", "window": pd.NA, "temperature": np.nan, "pck@0.1_per_image": 40.0}]
    rows += [{"matcher": "wsoftargmax", "window": k, "temperature": t, "pck@0.1_per_image": 10.0 * k + t}
             for k in (3, 5) for t in (0.1, 0.5)]  # fmt: skip
    table = pd.DataFrame(rows).astype({"window": "Int64"})
    fig = charts.grid_heatmap(table, [0.1], "per_image", "", {"0.1": {"window": 5, "temperature": 0.5}})
    ink = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert ink["30.1"] == "white" and ink["50.5"] == "black"  # viridis: dark purple lowest, bright yellow highest


def test_two_member_weight_search_is_one_panel_with_both_weights():
    w = np.linspace(0, 1, 5)
    table = pd.DataFrame({"weight_0": w, "weight_1": 1 - w, "pck@0.1_per_image": 10 * w})
    fig = charts.weight_profiles(table, ["dinov2@518", "sam@512"], [0.1], "per_image")
    (ax,) = [a for a in fig.axes if a.get_xlabel()]
    assert ax.get_xlabel() == "weight of dinov2@518"
    assert [c.get_xlabel() for c in ax.child_axes] == ["weight of sam@512"]
    three = pd.DataFrame({"weight_0": w, "weight_1": 1 - w, "weight_2": 0 * w, "pck@0.1_per_image": w})
    assert len(charts.weight_profiles(three, ["a", "b", "c"], [0.1], "per_image").axes) == 3


def test_feature_pca_is_one_basis_for_all_images_and_leaves_padding_out():
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.normal(size=(16, 3)))[0].T  # three orthonormal directions in 16 channels
    weights = rng.uniform(-1, 1, (2, 3, 4, 5))
    maps = [np.einsum("kc,khw->chw", directions * np.array([[3.0], [2.0], [1.0]]), w) for w in weights]
    maps[1][:, 0, 0] = maps[0][:, 2, 3]  # one feature vector in both images: one colour in both
    masks = [np.ones((4, 5), bool), np.ones((4, 5), bool)]
    rgb = figures.feature_pca(maps, masks)
    assert [c.shape for c in rgb] == [(4, 5, 3), (4, 5, 3)] and min(c.min() for c in rgb) >= 0
    np.testing.assert_allclose(rgb[1][0, 0], rgb[0][2, 3], atol=1e-9)
    red = np.concatenate([c[..., 0].ravel() for c in rgb])  # the first component: the strongest direction
    strongest = np.concatenate([w[0].ravel() for w in weights])
    strongest[20] = weights[0][0, 2, 3]
    assert abs(np.corrcoef(red, strongest)[0, 1]) > 0.99
    padded = [np.concatenate([m, np.full((16, 4, 5), 50.0)], axis=1) for m in maps]  # huge features on padding
    kept = [np.vstack([k, np.zeros((4, 5), bool)]) for k in masks]
    np.testing.assert_allclose(
        figures.feature_pca(padded, kept)[0][:4, :, 0].ravel() > 0.5, rgb[0][..., 0].ravel() > 0.5
    )
    prep = Preprocess.create(224, 14, "pad")
    mask = figures.content_mask(image_geometry((300, 150), prep), prep.grid, prep.patch_size)
    assert mask.all(axis=1).sum() == 8 and not mask[0].any() and not mask[-1].any()  # rows on the padding left out


def test_a_figure_as_a_picture_keeps_its_legend_below_the_axes():
    img = Image.new("RGB", (60, 40), "white")
    fig = figures.draw_pair_rows(pair_rows([True, False]), img, img, alpha=0.1)  # its legend lies below the images
    saved = viz2d.figure_image(fig)
    height = fig.get_size_inches()[1] * fig.dpi
    assert saved.dtype == np.uint8 and saved.shape[2] == 3 and saved.shape[0] > height * 0.95
    assert (saved[-int(0.08 * saved.shape[0]) :] < 128).any()  # the legend's dark text at the bottom
