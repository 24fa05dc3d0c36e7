"""Charts of results (no images of matches: those are viz2d's): plain matplotlib Figures, no pyplot state.

fig = grid_heatmap(table, [0.05, 0.1], "per_image", "title", best)
viz2d.save_plot(fig, run_dir / "grid_search_heatmap.png")
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from results import pck_column


def grid_heatmap(
    table: pd.DataFrame, thresholds: list[float], averaging: str, title: str, best: dict[str, dict]
) -> Figure:
    """PCK over windows (rows) x temperatures (columns), one panel per alpha, the cell `best` chose outlined."""
    soft = table[table["matcher"] == "wsoftargmax"]
    argmax = table[table["matcher"] == "argmax"].iloc[0]
    windows = sorted(soft["window"].unique())
    temperatures = sorted(soft["temperature"].unique())
    fig = Figure(figsize=(4.2 * len(thresholds), 0.5 * len(windows) + 2.2), dpi=100)
    axes = fig.subplots(1, len(thresholds), squeeze=False)[0]
    for ax, alpha in zip(axes, thresholds, strict=True):
        grid = soft.pivot_table(index="window", columns="temperature", values=pck_column(alpha, averaging))
        grid = grid.reindex(index=windows, columns=temperatures)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        for i in range(len(windows)):
            for j in range(len(temperatures)):
                ax.text(j, i, f"{grid.iat[i, j]:.1f}", ha="center", va="center", fontsize=8, color="white")
        chosen = best[f"{alpha:g}"]
        i, j = windows.index(chosen["window"]), temperatures.index(chosen["temperature"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        ax.set_xticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
        ax.set_yticks(range(len(windows)), [str(k) for k in windows])
        ax.set_xlabel("temperature T")
        ax.set_ylabel("window K")
        ax.set_title(f"PCK@{alpha:g} ({averaging}); argmax {argmax[pck_column(alpha, averaging)]:.1f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def weight_profiles(table: pd.DataFrame, members: list[str], thresholds: list[float], averaging: str) -> Figure:
    """For each member, the best PCK reached with each of its weights (one line per alpha)."""
    fig = Figure(figsize=(4 * len(members), 3.4), dpi=100)
    axes = fig.subplots(1, len(members), squeeze=False)[0]
    for i, (ax, member) in enumerate(zip(axes, members, strict=True)):
        for alpha in thresholds:
            profile = table.groupby(f"weight_{i}")[pck_column(alpha, averaging)].max()
            ax.plot(profile.index, profile.to_numpy(), marker="o", ms=3, label=f"PCK@{alpha:g}")
        ax.set_xlabel(f"weight of {member}")  # model, weights file and size: tells apart two sizes of one model
        ax.set_ylabel(f"best PCK ({averaging}) with that weight")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(log: pd.DataFrame, val_column: str, title: str = "", best_step: int | None = None) -> Figure:
    """Training loss and validation PCK against the step (the best step marked), and the learning rate
    below them."""
    fig = Figure(figsize=(8, 5.5), dpi=100)
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if "loss" in log:
        train = log.dropna(subset=["loss"])
        loss_ax.plot(train["step"], train["loss"], color="tab:blue", lw=1)
        if "lr" in train:
            lr_ax.plot(train["step"], train["lr"], color="tab:gray", lw=1)
    loss_ax.set_ylabel("training loss", color="tab:blue")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if val_column in log:
        val = log.dropna(subset=[val_column])
        pck_ax = loss_ax.twinx()
        pck_ax.plot(val["step"], val[val_column], "o-", color="tab:red", ms=4)
        pck_ax.set_ylabel(val_column.replace("val_", "validation ") + " (%)", color="tab:red")
        if best_step is not None and (val["step"] == best_step).any():
            best = val.loc[val["step"] == best_step, val_column].iloc[0]
            pck_ax.plot([best_step], [best], marker="*", ms=14, color="gold", mec="black", ls="none",
                        label=f"best: {best:.1f} at step {best_step}")  # fmt: skip
            pck_ax.legend(loc="lower right", fontsize=8)
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
