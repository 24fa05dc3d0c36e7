"""Drawing primitives for pictures of matches, in the spirit of LightGlue's viz2d: small matplotlib functions
(the figures made of them are semcorr/viz/figures.py's).

Coordinates are original image pixels with integer values at pixel centres, as everywhere in the
project; `imshow` draws an image with the same convention, so points need no conversion.
Figures are plain `matplotlib.figure.Figure` objects (no pyplot state, safe in loops and
threads): write them with `save_plot`, show them in a notebook with `display(fig)`.

    fig = plot_images([src, trg], ["source", "target"])
    plot_matches(fig, src_xy, pred_xy, match_colors(correct))
    save_plot(fig, "pair.png")
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import ConnectionPatch
from PIL import Image

from semcorr.storage.files import atomic_write, make_folder

CORRECT, WRONG, TRUTH = "lime", "red", "cyan"
SCORE_CMAP, HEAT_CMAP = "viridis", "jet"
MIN_SCORE_SPAN = 0.2  # a colour bar of cosine similarities spans at least this much (no noise made into contrast)


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
    make_folder(path.parent)
    atomic_write(path, lambda tmp: fig.savefig(tmp, bbox_inches="tight", pad_inches=0.05))
    return path


def figure_image(fig: Figure) -> np.ndarray:
    """The figure as save_plot writes it (legends below the axes included), as an (H, W, 3) uint8 array (for
    TensorBoard), without pyplot."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
    return np.asarray(Image.open(buffer).convert("RGB"))


def match_colors(correct: np.ndarray) -> list[str]:
    """Green for a correct match, red for a wrong one."""
    return [CORRECT if c else WRONG for c in np.asarray(correct, dtype=bool)]


def score_colors(
    scores: np.ndarray, cmap: str = SCORE_CMAP, min_span: float = MIN_SCORE_SPAN
) -> tuple[list[tuple], Normalize]:
    """A colour per score on a sequential map (not red / green: those mean wrong / correct), and the
    normalisation that `add_colorbar` needs to explain them. The scale reaches at least `min_span` below the
    highest score, so that scores a hair apart get nearly one colour."""
    scores = np.asarray(scores, dtype=float)
    norm = Normalize(min(scores.min(), scores.max() - min_span), scores.max()) if len(scores) else Normalize(0, 1)
    return [tuple(c) for c in matplotlib.colormaps[cmap](norm(scores))], norm


def add_colorbar(fig: Figure, ax, norm: Normalize, label: str, cmap=SCORE_CMAP) -> None:
    """A colour bar beside `ax` for colours drawn with `cmap` and `norm` (plain tick values, no offset)."""
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.formatter.set_useOffset(False)


def label_points(ax, xy: np.ndarray, labels: list[str]) -> None:
    """Labels beside points: black text on a white box, readable on dark and light images alike."""
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "black", "linewidth": 0.5, "alpha": 0.85}
    for (x, y), text in zip(np.asarray(xy, dtype=float).reshape(-1, 2), labels, strict=True):
        ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, color="black",
                    bbox=box, zorder=4)  # fmt: skip


def add_legend(fig: Figure, entries: dict[str, dict]) -> None:
    """A legend below the images: label -> Line2D style (e.g. {"color": "lime"} or {"marker": "x", "ls": ""})."""
    handles = [Line2D([], [], **style) for style in entries.values()]
    fig.legend(handles, list(entries), loc="lower center", ncol=len(entries), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.06))  # fmt: skip
