"""Figures of matches made of the viz2d primitives: a pair's matches and their ground truth, a similarity
map, the best and worst pairs of a run, and keypoint examples of two runs.

    fig = draw_matches(src, trg, src_xy, pred_xy, correct=correct, gt_xy=gt_xy, alpha=0.1)
    viz2d.save_plot(fig, "pair.png")
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from PIL import Image

import pck
from helper_functions import FeatureSet
from semcorr.data.geometry import Geometry, input_to_patch, patch_to_input
from semcorr.data.images import ImageRef, load_image
from semcorr.data.pairs import PairRecord
from semcorr.viz.viz2d import (
    CORRECT,
    TRUTH,
    WRONG,
    add_colorbar,
    add_legend,
    add_title,
    match_colors,
    plot_heatmap,
    plot_images,
    plot_keypoints,
    plot_matches,
    save_plot,
)


def draw_matches(
    src: Image.Image,
    trg: Image.Image,
    src_xy: np.ndarray,
    pred_xy: np.ndarray,
    *,
    correct: np.ndarray | None = None,
    gt_xy: np.ndarray | None = None,
    colors=None,
    title: str | None = None,
    alpha: float | None = None,
) -> Figure:
    """Source and target side by side with a line per predicted match.

    Lines are green / red by `correct` at PCK@`alpha` (or `colors`); ground truth is a cyan cross on
    the target, joined to a wrong prediction by a dotted red line; a legend says so.
    """
    fig = plot_images([src, trg], ["source", "target"])
    if colors is None:
        colors = match_colors(correct) if correct is not None else CORRECT
    plot_matches(fig, src_xy, pred_xy, colors)
    if correct is not None:
        at = f" at PCK@{alpha:g}" if alpha is not None else ""
        entries = {f"correct{at}": {"color": CORRECT}, f"wrong{at}": {"color": WRONG}}
        if gt_xy is not None:
            entries |= {"ground truth": {"color": TRUTH, "marker": "x", "ls": ""}}
            entries |= {"wrong prediction -> ground truth": {"color": WRONG, "ls": ":"}}
        add_legend(fig, entries)
    if gt_xy is not None:
        gt_xy, pred_xy = np.asarray(gt_xy, dtype=float), np.asarray(pred_xy, dtype=float)
        known = np.isfinite(gt_xy).all(axis=1)
        plot_keypoints(fig.axes[1], gt_xy[known], TRUTH, size=30, marker="x")
        wrong = known & ~np.asarray(correct, dtype=bool) if correct is not None else np.zeros(len(gt_xy), bool)
        for p, g in zip(pred_xy[wrong], gt_xy[wrong], strict=True):
            fig.axes[1].plot([p[0], g[0]], [p[1], g[1]], ls=":", lw=1.0, color=WRONG)
    if title:
        add_title(fig, title)
    return fig


def draw_pair_rows(rows: pd.DataFrame, src: Image.Image, trg: Image.Image, alpha: float) -> Figure:
    """One pair's rows of a per-keypoint table drawn, coloured by correctness at `alpha`."""
    correct = rows[pck.correct_column(alpha)].to_numpy(bool)
    title = (
        f"{rows['pair_id'].iloc[0]} ({rows['category'].iloc[0]}): PCK@{alpha:g} = {100 * correct.mean():.0f}% "
        f"({correct.sum()}/{len(correct)})"
    )
    return draw_matches(
        src,
        trg,
        rows[["src_x", "src_y"]].to_numpy(),
        rows[["pred_x", "pred_y"]].to_numpy(),
        correct=correct,
        gt_xy=rows[["gt_x", "gt_y"]].to_numpy(),
        title=title,
        alpha=alpha,
    )


HEATMAP_MAX_SIDE = 1024  # a larger image's heatmap is sampled every few pixels (enough for a screen or a page)


def heatmap_in_pixels(
    sim: np.ndarray, geom: Geometry, patch_size: int, max_side: int = HEATMAP_MAX_SIDE
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A (h, w) similarity map on the patch grid, interpolated bilinearly (clamped at the border) at the
    centres of the image's pixels, or of blocks of `stride` x `stride` pixels when the image's long side
    exceeds `max_side`; and its extent for imshow."""
    w, h = geom.size
    stride = math.ceil(max(w, h) / max_side)
    xs = np.arange(math.ceil(w / stride)) * stride + (stride - 1) / 2
    ys = np.arange(math.ceil(h / stride)) * stride + (stride - 1) / 2
    cols = input_to_patch(geom.to_input(np.stack([xs, np.zeros_like(xs)], axis=1))[:, 0], patch_size)
    rows = input_to_patch(geom.to_input(np.stack([np.zeros_like(ys), ys], axis=1))[:, 1], patch_size)
    sim = np.asarray(sim, np.float64)
    heat = linear_weights(rows, sim.shape[0]) @ sim @ linear_weights(cols, sim.shape[1]).T  # bilinear is separable
    return heat, (-0.5, len(xs) * stride - 0.5, len(ys) * stride - 0.5, -0.5)


def linear_weights(positions: np.ndarray, n: int) -> np.ndarray:
    """(len(positions), n) weights that interpolate n samples at 0..n-1 linearly at `positions`
    (clamped to the first and last sample)."""
    q = np.clip(positions, 0, n - 1)
    low = np.minimum(np.floor(q).astype(int), max(n - 2, 0))
    weights = np.zeros((len(q), n))
    rows = np.arange(len(q))
    weights[rows, low] = 1 - (q - low)
    weights[rows, np.minimum(low + 1, n - 1)] += q - low
    return weights


def draw_similarity(
    src: Image.Image,
    trg: Image.Image,
    src_xy: np.ndarray,
    heat: np.ndarray,
    extent: tuple[float, float, float, float],
    *,
    pred_xy: np.ndarray | None = None,
    gt_xy: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """One source keypoint, and its similarity map over the target (with a colour bar, the prediction
    and the ground truth, and a legend)."""
    fig = plot_images([src, trg], ["source", "target: cosine similarity to the source point"])
    plot_keypoints(fig.axes[0], src_xy, CORRECT, size=40)
    image = plot_heatmap(fig.axes[1], heat, extent)
    add_colorbar(fig, fig.axes[1], image.norm, "cosine similarity", image.cmap)
    entries = {"source point": {"color": CORRECT, "marker": "o", "ls": "", "mec": "black"}}
    if pred_xy is not None:
        plot_keypoints(fig.axes[1], pred_xy, CORRECT, size=60, marker="*")
        entries |= {"prediction": {"color": CORRECT, "marker": "*", "ls": "", "mec": "black", "ms": 9}}
    if gt_xy is not None and np.isfinite(gt_xy).all():
        plot_keypoints(fig.axes[1], gt_xy, TRUTH, size=50, marker="x")
        entries |= {"ground truth": {"color": TRUTH, "marker": "x", "ls": ""}}
    add_legend(fig, entries)
    if title:
        add_title(fig, title)
    return fig


def content_mask(geom: Geometry, grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """(h, w) True at the patches whose centre lies on the image (not on --resize pad's padding)."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    xy = geom.to_original(patch_to_input(np.stack([cols.ravel(), rows.ravel()], axis=1).astype(float), patch_size))
    w, h = geom.size
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
    return inside.reshape(grid)


def feature_pca(maps: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
    """The first three principal components of several images' (C, h, w) feature maps, computed jointly over the
    patches each mask keeps (one basis and one 0..1 scale for all images, so colours compare across them), as
    (h, w, 3) RGB maps. Each component's sign makes its largest loading positive (the same colours every run)."""
    kept = np.concatenate([m.reshape(m.shape[0], -1).T[k.ravel()] for m, k in zip(maps, masks, strict=True)])
    mean = kept.astype(np.float64).mean(axis=0)
    centred = kept - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues: C x C, not patches x patches
    basis = vectors[:, ::-1][:, :3]
    basis *= np.sign(basis[np.abs(basis).argmax(axis=0), range(3)])
    projected = centred @ basis
    low, high = projected.min(axis=0), projected.max(axis=0)
    scale = np.where(high > low, high - low, 1.0)
    rgb = [((m.reshape(m.shape[0], -1).T - mean) @ basis - low) / scale for m in maps]
    return [np.clip(c, 0, 1).reshape(*m.shape[1:], 3) for c, m in zip(rgb, maps, strict=True)]


PCA_IMAGES = 12  # images drawn in one features picture


def draw_feature_pca(features: FeatureSet, refs: list[ImageRef], columns: int = 4) -> Figure:
    """Each image above its features' first three principal components as RGB, computed jointly over the images
    (feature_pca; as DIFT and sd-dino show features) and drawn over the image's pixels (interpolated between patch
    centres, as the similarity heatmaps are); the first PCA_IMAGES images."""
    shown = refs[:PCA_IMAGES]
    geoms = [features.geometries[ref.key] for ref in shown]
    maps = [features.feats[features.index[ref.key]].float().cpu().numpy() for ref in shown]
    rgb = feature_pca(maps, [content_mask(g, features.prep.grid, features.prep.patch_size) for g in geoms])
    columns = min(columns, len(shown))
    rows = -(-len(shown) // columns)
    fig = Figure(figsize=(3.2 * columns, 5.0 * rows + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(2 * rows, columns, squeeze=False)
    for i, (ref, colours, geom) in enumerate(zip(shown, rgb, geoms, strict=True)):
        top, bottom = axes[2 * (i // columns), i % columns], axes[2 * (i // columns) + 1, i % columns]
        top.imshow(np.asarray(load_image(ref)))
        top.set_title(Path(ref.path).name, fontsize=8)
        channels = [heatmap_in_pixels(colours[..., c], geom, features.prep.patch_size) for c in range(3)]
        bottom.imshow(np.clip(np.stack([c for c, _ in channels], axis=-1), 0, 1), extent=channels[0][1])
    for ax in axes.ravel():
        ax.set_axis_off()
    more = f" (the first {len(shown)} of {len(refs)} images)" if len(refs) > len(shown) else ""
    fig.suptitle(f"features: first three principal components, computed jointly, as RGB{more}", fontsize=9)
    return fig


def default_alpha(alphas: list[float]) -> float:
    """The alpha pictures are coloured at: 0.1 when evaluated, else the middle one."""
    return 0.1 if 0.1 in alphas else sorted(alphas)[len(alphas) // 2]


def pair_ranking(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Pairs best first: PCK at `alpha` (%), ties broken by the mean error relative to the threshold length."""
    ranked = (
        table.assign(pck=table[pck.correct_column(alpha)] * 100.0, error=table["distance"] / table["norm_L"])
        .groupby("pair_id", sort=False)
        .agg(category=("category", "first"), pck=("pck", "mean"), error=("error", "mean"), keypoints=("pck", "size"))
        .reset_index()
    )
    return ranked.sort_values(["pck", "error", "pair_id"], ascending=[False, True, True], ignore_index=True)


def save_best_worst(
    folder: str | Path, pairs: list[PairRecord], table: pd.DataFrame, n: int, alpha: float | None = None
) -> list[Path]:
    """Pictures of the n best and n worst pairs of a per-keypoint table: best_01_<pair>.png, worst_01_<pair>.png."""
    alpha = default_alpha(pck.alphas_of(table)) if alpha is None else alpha
    ranking = pair_ranking(table, alpha)["pair_id"].tolist()
    best = ranking[:n]
    worst = [p for p in reversed(ranking) if p not in best][:n]
    by_id = {p.pair_id: p for p in pairs}
    rows = dict(tuple(table.groupby("pair_id", sort=False)))
    written = []
    for kind, ids in (("best", best), ("worst", worst)):
        for rank, pair_id in enumerate(ids, 1):
            pair = by_id[pair_id]
            fig = draw_pair_rows(rows[pair_id], load_image(pair.src), load_image(pair.trg), alpha)
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id)
            written.append(save_plot(fig, Path(folder) / f"{kind}_{rank:02d}_{safe}.png"))
    return written


def draw_keypoint_examples(
    examples: pd.DataFrame, images: dict[str, tuple[Image.Image, Image.Image]], labels: tuple[str, str], alpha: float
) -> Figure:
    """One row per example keypoint (comparison.example_rows): the source with its point, and the target
    with the ground truth, the PCK@alpha circle around it and both runs' predictions (A a ring, B a cross
    inside it: both stay visible where they coincide)."""
    colours = ("#ff7f0e", "#1f77b4")
    marks = ({"marker": "o", "s": 220, "facecolors": "none", "edgecolors": colours[0], "linewidths": 2.5},
             {"marker": "X", "s": 70, "c": colours[1], "edgecolors": "black", "linewidths": 0.8})  # fmt: skip
    fig = Figure(figsize=(9, 3.0 * len(examples) + 0.5), dpi=100, layout="constrained")
    axes = fig.subplots(len(examples), 2, squeeze=False)
    for (src_ax, trg_ax), row in zip(axes, examples.itertuples(index=False), strict=True):
        src, trg = images[row.pair_id]
        src_ax.imshow(np.asarray(src))
        trg_ax.imshow(np.asarray(trg))
        plot_keypoints(src_ax, [row.src_x, row.src_y], CORRECT, size=60)
        plot_keypoints(trg_ax, [row.gt_x, row.gt_y], CORRECT, size=60)
        trg_ax.add_patch(Circle((row.gt_x, row.gt_y), alpha * row.norm_L, fill=False, ls="--", color="white"))
        errors = []
        predictions = (
            (row.pred_x, row.pred_y, row.error, row.correct),
            (row.pred_x_b, row.pred_y_b, row.error_b, row.correct_b),
        )
        for (x, y, error, correct), colour, mark, label in zip(predictions, colours, marks, "AB", strict=True):
            trg_ax.plot([row.gt_x, x], [row.gt_y, y], ls=":", lw=1.2, color=colour)
            trg_ax.scatter([x], [y], zorder=4, **mark)
            errors.append(f"{label}: {error:.2f} L ({'correct' if correct else 'wrong'})")
        src_ax.set_title(
            f"{row.kind}: {row.category} keypoint {row.kp_id}, PCK A {row.id_pck_a:.0f}%, B {row.id_pck_b:.0f}%\n"
            f"pair {row.pair_id}",
            fontsize=8,
        )
        trg_ax.set_title("error: " + "; ".join(errors), fontsize=8)
        src_ax.set_axis_off()
        trg_ax.set_axis_off()
    add_legend(
        fig,
        {
            "source / ground truth": {"marker": "o", "ls": "", "color": CORRECT, "mec": "black"},
            f"A: {labels[0]}": {"marker": "o", "ls": "", "mfc": "none", "mec": colours[0], "mew": 2, "ms": 10},
            f"B: {labels[1]}": {"marker": "X", "ls": "", "color": colours[1], "mec": "black"},
            f"PCK@{alpha:g} radius (alpha x L)": {"ls": "--", "color": "grey"},
        },
    )
    return fig
