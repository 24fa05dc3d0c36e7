"""What a run prints when it ends: short, readable summaries of its results files."""

from __future__ import annotations

import pandas as pd


def evaluation_summary(metrics: dict) -> str:
    """A short printable table: PCK at each alpha, both averagings, and the protocol."""
    rows = {k: v for k, v in metrics.items() if k.startswith("pck@")}
    frame = pd.DataFrame(rows).T[["per_image", "per_keypoint"]].round(2)
    proto = metrics["protocol"]
    head = (
        f"{proto['dataset']} {proto['split']}: {metrics['pairs']} pairs, {metrics['keypoints']} keypoints; "
        f"threshold = {proto['threshold']}"
    )
    return head + "\n" + frame.to_string()


def grid_summary(table: pd.DataFrame, best: dict, argmax: dict, select_by: str) -> str:
    """The grid's table, then the best window and temperature at each alpha beside argmax."""
    lines = [table.drop(columns="time_s").round(2).to_string(index=False)]
    for alpha, entry in best.items():
        lines.append(
            f"best at PCK@{alpha} ({select_by}): K={entry['window']} T={entry['temperature']:g} -> "
            f"{entry[f'pck_{select_by}']:.2f} (argmax {argmax[alpha][f'pck_{select_by}']:.2f})"
        )
    return "\n".join(lines)


def weight_search_summary(best: dict, select_by: str) -> str:
    """The best member weights at each alpha, as --member arguments."""
    return "\n".join(
        f"best at PCK@{alpha} ({select_by}): {entry[f'pck_{select_by}']:.2f} with {entry['member_args']}"
        for alpha, entry in best.items()
    )
