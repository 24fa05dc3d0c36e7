"""Pictures of matches, in the spirit of LightGlue's viz2d: small matplotlib functions.

Coordinates are original image pixels with integer values at pixel centres, as everywhere in the
project; `imshow` draws an image with the same convention, so points need no conversion.
Figures are plain `matplotlib.figure.Figure` objects (no pyplot state, safe in loops and
threads): write them with `save_plot`, show them in a notebook with `display(fig)`.

    fig = plot_images([src, trg], ["source", "target"])
    plot_matches(fig, src_xy, pred_xy, match_colors(correct))
    save_plot(fig, "pair.png")
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, ConnectionPatch
from PIL import Image

import pck
from fileio import atomic_write
from geometry import Geometry, Preprocess
from images import load_image
from pairs import PairRecord

CORRECT, WRONG, TRUTH = "lime", "red", "cyan"
SCORE_CMAP, HEAT_CMAP = "viridis", "jet"


def plot_images(images: list[Image.Image | np.ndarray], titles: list[str] | None = None, size: float = 4.5) -> Figure:
    """The images side by side, each `size` inches high, axes off."""
    arrays = [np.asarray(im) for im in images]
    ratios = [a.shape[1] / a.shape[0] for a in arrays]
    fig = Figure(figsize=(size * sum(ratios) + 0.2 * len(arrays), size), dpi=100)
    axes = fig.subplots(1, len(arrays), gridspec_kw={"width_ratios": ratios}, squeeze=False)[0]
    for i, (ax, array) in enumerate(zip(axes, arrays, strict=True)):
        ax.imshow(array)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig


def plot_keypoints(ax, xy: np.ndarray, color="lime", size: float = 18, marker: str = "o") -> None:
    """Points (N, 2) on one axes; `color` is one colour or one per point."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    outline = {} if marker in ("x", "+") else {"edgecolors": "black"}  # line markers have no outline
    ax.scatter(xy[:, 0], xy[:, 1], c=color, s=size, marker=marker, linewidths=0.8, zorder=3, **outline)


def plot_matches(fig: Figure, xy0: np.ndarray, xy1: np.ndarray, colors, *, lw: float = 1.0, alpha: float = 0.9) -> None:
    """Lines from xy0 on the figure's first axes to xy1 on its second, one colour per match."""
    ax0, ax1 = fig.axes[:2]
    xy0, xy1 = np.asarray(xy0, dtype=float).reshape(-1, 2), np.asarray(xy1, dtype=float).reshape(-1, 2)
    colors = [colors] * len(xy0) if isinstance(colors, str) else list(colors)
    for p0, p1, color in zip(xy0, xy1, colors, strict=True):
        line = ConnectionPatch(
            xyA=p0, xyB=p1, coordsA="data", coordsB="data", axesA=ax0, axesB=ax1, color=color, lw=lw, alpha=alpha
        )
        line.set_annotation_clip(False)
        fig.add_artist(line)
    plot_keypoints(ax0, xy0, colors)
    plot_keypoints(ax1, xy1, colors)


def plot_heatmap(
    ax, heat: np.ndarray, extent: tuple[float, float, float, float], cmap: str = HEAT_CMAP, alpha=0.5
) -> ScalarMappable:
    """A (h, w) map over the image of `ax`, spanning `extent` (left, right, bottom, top) in pixels;
    returns the image, for a colour bar."""
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    image = ax.imshow(np.asarray(heat, dtype=float), extent=extent, cmap=cmap, alpha=alpha, interpolation="nearest")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    return image


def add_title(fig: Figure, title: str) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3)  # makes room for it


def save_plot(fig: Figure, path: str | Path) -> Path:
    """Write the figure, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, bbox_inches="tight", pad_inches=0.05))
    return path


def match_colors(correct: np.ndarray) -> list[str]:
    """Green for a correct match, red for a wrong one."""
    return [CORRECT if c else WRONG for c in np.asarray(correct, dtype=bool)]


def score_colors(scores: np.ndarray, cmap: str = SCORE_CMAP) -> tuple[list[tuple], Normalize]:
    """A colour per score on a sequential map (not red / green: those mean wrong / correct), and the
    normalisation that `add_colorbar` needs to explain them."""
    scores = np.asarray(scores, dtype=float)
    norm = Normalize(scores.min(), scores.max()) if len(scores) else Normalize(0, 1)
    return [tuple(c) for c in matplotlib.colormaps[cmap](norm(scores))], norm


def add_colorbar(fig: Figure, ax, norm: Normalize, label: str, cmap=SCORE_CMAP) -> None:
    """A colour bar beside `ax` for colours drawn with `cmap` and `norm` (plain tick values, no offset)."""
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.formatter.set_useOffset(False)


def label_points(ax, xy: np.ndarray, labels: list[str]) -> None:
    """Small labels beside points (white text outlined in black, readable on any image)."""
    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for (x, y), text in zip(np.asarray(xy, dtype=float).reshape(-1, 2), labels, strict=True):
        ax.annotate(text, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, color="white",
                    path_effects=outline, zorder=4)  # fmt: skip


def add_legend(fig: Figure, entries: dict[str, dict]) -> None:
    """A legend below the images: label -> Line2D style (e.g. {"color": "lime"} or {"marker": "x", "ls": ""})."""
    handles = [Line2D([], [], **style) for style in entries.values()]
    fig.legend(handles, list(entries), loc="lower center", ncol=len(entries), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.06))  # fmt: skip


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


def grid_extent(geom: Geometry, prep: Preprocess) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) in original pixels of the patch grid of an image (for imshow).

    The grid spans the whole network input, including any padding, so with resize 'pad' it
    reaches beyond the image.
    """
    (left, top), (right, bottom) = geom.to_original(np.array([[-0.5, -0.5], [prep.width - 0.5, prep.height - 0.5]]))
    return (float(left), float(right), float(bottom), float(top))


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
    with the ground truth, the PCK@alpha circle around it and both runs' predictions."""
    colours = ("#ff7f0e", "#1f77b4")
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
        for (x, y, error, correct), colour, label in zip(predictions, colours, "AB", strict=True):
            trg_ax.plot([row.gt_x, x], [row.gt_y, y], ls=":", lw=1.2, color=colour)
            plot_keypoints(trg_ax, [x, y], colour, size=70, marker="X")
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
            **{
                f"{ab}: {label}": {"marker": "X", "ls": "", "color": c}
                for c, ab, label in zip(colours, "AB", labels, strict=True)
            },
            f"PCK@{alpha:g} radius (alpha x L)": {"ls": "--", "color": "grey"},
        },
    )
    return fig
