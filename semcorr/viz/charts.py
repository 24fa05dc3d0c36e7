"""Charts of results (no images of matches: those are viz2d's): plain matplotlib Figures, no pyplot state.

fig = grid_heatmap(table, [0.05, 0.1], "per_image", "title", best)
viz2d.save_plot(fig, run_dir / "grid_search_heatmap.png")
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from semcorr.config.settings import AVERAGINGS
from semcorr.runs.folders import pck_column

FEW_POINTS = 30  # lines with at most this many points are drawn with markers (one point alone is no line)


def percent_limits(values, min_span: float) -> tuple[float, float]:
    """Limits of an axis or colour scale of percentages: the values with a margin, at least `min_span` wide, within
    0..100, so that equal or nearly equal values do not fill the scale with noise (or reach below 0)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 100.0)
    margin = max(0.05 * (high - low), (min_span - (high - low)) / 2)
    low, high = low - margin, high + margin
    if low < 0:
        low, high = 0.0, min(100.0, high - low)
    if high > 100:
        low, high = max(0.0, low - (high - 100)), 100.0
    return low, high


def luminance(rgba: tuple[float, ...]) -> float:
    """Relative luminance (0 dark .. 1 bright) of a colour: text on it is black above 0.5, else white."""
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def grid_heatmap(
    table: pd.DataFrame, thresholds: list[float], averaging: str, title: str, best: dict[str, dict]
) -> Figure:
    """PCK over windows (rows) x temperatures (columns), one panel per alpha, the cell `best` chose outlined; the
    colour scale spans at least one PCK point (cells that tie are one colour, said in the panel's title)."""
    soft = table[table["matcher"] != "argmax"]
    argmax = table[table["matcher"] == "argmax"].iloc[0]
    windows = sorted(soft["window"].unique())
    temperatures = sorted(soft["temperature"].unique())
    fig = Figure(figsize=(4.2 * len(thresholds), 0.5 * len(windows) + 2.2), dpi=100)
    axes = fig.subplots(1, len(thresholds), squeeze=False)[0]
    for ax, alpha in zip(axes, thresholds, strict=True):
        grid = soft.pivot_table(index="window", columns="temperature", values=pck_column(alpha, averaging))
        grid = grid.reindex(index=windows, columns=temperatures)
        values = grid.to_numpy(dtype=float)
        low, high = percent_limits(values, min_span=1.0)
        image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=low, vmax=high)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(f"PCK@{alpha:g} (%)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        for i in range(len(windows)):
            for j in range(len(temperatures)):
                value = grid.iat[i, j]
                ink = "black" if luminance(image.cmap(image.norm(value))) > 0.5 else "white"
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color=ink)
        chosen = best[f"{alpha:g}"]
        i, j = windows.index(chosen["window"]), temperatures.index(chosen["temperature"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        ax.set_xticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
        ax.set_yticks(range(len(windows)), [str(k) for k in windows])
        ax.set_xlabel("temperature T")
        ax.set_ylabel("window K")
        top = np.isclose(values, np.nanmax(values), rtol=0, atol=1e-9).sum()
        tie = f"; {top} cells tie at the best" if top > 1 else ""
        ax.set_title(f"PCK@{alpha:g} ({averaging}); argmax {argmax[pck_column(alpha, averaging)]:.1f}{tie}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def weight_profiles(table: pd.DataFrame, members: list[str], thresholds: list[float], averaging: str) -> Figure:
    """PCK against the ensemble weights, one line per alpha. Two members: one panel, the first member's
    weight below and the second's (1 - w) above. More: a panel per member, the best PCK reached with each
    of its weights (the others' weights free)."""
    two = len(members) == 2
    panels = 1 if two else len(members)
    fig = Figure(figsize=(5.2 if two else 3.6 * panels, 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False, sharey=True)[0]
    for i, ax in enumerate(axes):
        for alpha in thresholds:
            profile = table.groupby(f"weight_{i}")[pck_column(alpha, averaging)].max()
            ax.plot(profile.index, profile.to_numpy(), marker="o", ms=3, label=f"PCK@{alpha:g}")
        ax.set_xlabel(f"weight of {members[i]}", fontsize=8, wrap=True)
        ax.set_xlim(-0.02, 1.02)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    if two:
        top = axes[0].secondary_xaxis("top", functions=(lambda w: 1 - w, lambda w: 1 - w))
        top.set_xlabel(f"weight of {members[1]}", fontsize=8)
        top.tick_params(labelsize=8)
        axes[0].set_ylabel(f"PCK ({averaging.replace('_', ' ')}, %)", fontsize=9)
    else:
        axes[0].set_ylabel(f"best PCK ({averaging.replace('_', ' ')}, %)", fontsize=9)
    axes[-1].legend(fontsize=8)
    return fig


def training_curves(log: pd.DataFrame, val_column: str, title: str = "", best_step: int | None = None) -> Figure:
    """Training loss and validation PCK against the step (the best step marked), and the learning rate
    below them."""
    fig = Figure(figsize=(8, 5.5), dpi=100)
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if "loss" in log:
        train = log.dropna(subset=["loss"])
        dots = {"marker": "o", "ms": 3} if len(train) <= FEW_POINTS else {}
        loss_ax.plot(train["step"], train["loss"], color="tab:blue", lw=1, **dots)
        if "lr" in train:
            lr_ax.plot(train["step"], train["lr"], color="tab:gray", lw=1, **dots)
    lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    lr_ax.set_ylim(bottom=0)
    loss_ax.set_ylabel("training loss", color="tab:blue")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if val_column in log:
        val = log.dropna(subset=[val_column])
        pck_ax = loss_ax.twinx()
        pck_ax.plot(val["step"], val[val_column], "o-", color="tab:red", ms=4)
        pck_ax.set_ylim(*percent_limits(val[val_column], min_span=5.0))
        pck_ax.set_ylabel(val_column.replace("val_", "validation ").replace("pck", "PCK") + " (%)", color="tab:red")
        if best_step is not None and (val["step"] == best_step).any():
            best = val.loc[val["step"] == best_step, val_column].iloc[0]
            pck_ax.plot([best_step], [best], marker="*", ms=14, color="gold", mec="black", ls="none",
                        label=f"best: {best:.1f} at step {best_step}")  # fmt: skip
            pck_ax.legend(loc="best", fontsize=8)
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pck_curves(curves: dict[str, pd.DataFrame], title: str = "", common: str = "") -> Figure:
    """PCK against alpha of several runs ({label: pck.pck_curve(...)}), one panel per averaging; `common` (what
    every run shares, labels.run_labels) under the title."""
    fig = Figure(figsize=(10, 4.2 + 0.18 * len(curves)), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(AVERAGINGS), sharey=True)
    for label, curve in curves.items():
        for ax, averaging in zip(axes, AVERAGINGS, strict=True):
            ax.plot(curve["alpha"], curve[averaging], lw=1.5, label=label)
    for ax, averaging in zip(axes, AVERAGINGS, strict=True):
        ax.set_title(f"{averaging.replace('_', ' ')}: {AVERAGINGS[averaging]}", fontsize=9)
        ax.set_xlabel("alpha")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PCK (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", fontsize=8, frameon=False)
    if title or common:
        shared = "\n".join(textwrap.wrap(f"every run: {common}", 150)) if common else ""
        fig.suptitle("\n".join(filter(None, (title, shared))), fontsize=9)
    return fig


def keypoint_id_bars(frame: pd.DataFrame, labels: tuple[str, str], alpha: float, columns: int = 3) -> Figure:
    """PCK of each keypoint id of two runs side by side, one panel per category; `frame` is indexed by
    (category, kp_id) with columns A and B (comparison.keypoint_id_comparison)."""
    categories = list(dict.fromkeys(frame.index.get_level_values(0)))
    columns = min(columns, len(categories))
    rows = -(-len(categories) // columns)
    most = max(len(frame.loc[c]) for c in categories)
    fig = Figure(figsize=(columns * max(3.8, 0.32 * most + 1.2), 2.4 * rows + 0.7), dpi=100, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, category in zip(axes, categories, strict=False):
        ids = frame.loc[category]
        x = np.arange(len(ids))
        ax.bar(x - 0.2, ids["A"], 0.4, color="#4c72b0", label=labels[0])
        ax.bar(x + 0.2, ids["B"], 0.4, color="#dd8452", label=labels[1])
        ax.set_xticks(x, [str(k) for k in ids.index], fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_title(f"{category}: mean {ids['A'].mean():.1f} vs {ids['B'].mean():.1f}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(categories) :]:
        ax.set_axis_off()
    for ax in axes[::columns]:
        ax.set_ylabel(f"PCK@{alpha:g} (%)", fontsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=2, fontsize=8, frameon=False)
    fig.supxlabel("keypoint id: PCK pooled over its occurrences", fontsize=9)
    return fig
