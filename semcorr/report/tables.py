"""Tables of results folders, with no backbone and no re-evaluation: evaluations beside the published numbers,
fine-tuning runs and grid searches (report.py prints them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from semcorr.config.settings import AVERAGINGS, DEFAULT_THRESHOLDS
from semcorr.report import labels
from semcorr.report.published import PUBLISHED_ALPHAS, members_of, published_for
from semcorr.report.summary import PCK, matcher_text, protocol_text
from semcorr.runs.folders import Run


def kinds_text(runs: list[Run]) -> str:
    """'3 results folders: 2 evaluation, 1 finetune'."""
    counts = pd.Series([run.kind for run in runs], dtype=object).value_counts()
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return f"{len(runs)} results folder{'' if len(runs) == 1 else 's'}" + (f": {kinds}" if kinds else "")


def run_settings(run: Run) -> dict[str, object]:
    """What a run evaluated: model, setting (from the weights actually loaded: zero-shot, fine-tuned best.pt, ...),
    dataset, split, PCK threshold, matcher, image size, protocol, pairs."""
    proto, protocol = run.metrics["protocol"], run.config["settings"]["protocol"]
    overrides = ", ".join(f"{k}={v}" for k, v in protocol["overrides"].items())
    members = members_of(run)
    setting = labels.weights_text(labels.flat_config(run.config))
    if len(members) > 1:
        model = " + ".join(f"{m['weight']:.2f} {m['model']}" for m in members)
        setting = f"ensemble, {setting}"
    else:
        model = members[0]["model"]
    return {
        "folder": run.name,
        "model": model,
        "setting": setting,
        "dataset": proto["dataset"],
        "split": proto["split"],
        "pck_norm": proto["pck_norm"] + (" (<)" if proto.get("strict") else ""),
        "matcher": matcher_text(run.config["settings"]["match"], uses=run.config["resolved"].get("matcher_uses")),
        "image_size": ", ".join("x".join(map(str, m["image_size"])) for m in members),
        "protocol": protocol["name"] + (f" ({overrides})" if overrides else ""),
        "pairs": run.metrics["counts"]["pairs"],
    }


def report_table(runs: list[Run], alphas: tuple[float, ...] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """One row per evaluation run: its label among `runs` (labels.run_labels), description, PCK, PCK of the geometry-aware
    keypoints (where the run has them) and the published PCK; `attrs["common"]` holds what every run shares."""
    shown = labels.run_labels(runs)
    rows = []
    for run, label in zip(runs, shown.names, strict=True):
        row = {"run": label, **run_settings(run)}
        entry = published_for(run)
        geo_aware = run.metrics.get("subsets", {}).get("geo_aware", {})
        for alpha in alphas:
            key = f"pck@{alpha:g}"
            for avg in AVERAGINGS:
                row[f"{key}_{avg}"] = run.metrics.get(key, {}).get(avg, np.nan)
                row[f"geo_aware@{alpha:g}_{avg}"] = geo_aware.get(key, {}).get(avg, np.nan)
            i = PUBLISHED_ALPHAS.index(alpha) if alpha in PUBLISHED_ALPHAS else None
            row[f"published@{alpha:g}_per_image"] = entry.per_image[i] if entry and i is not None else np.nan
            row[f"published@{alpha:g}_per_keypoint"] = (
                entry.per_keypoint[i] if entry and entry.per_keypoint and i is not None else np.nan
            )
        row["published_note"] = entry.note if entry else ""
        row["path"] = str(run.path)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["common"] = shown.common
    return table


def _both(image: float, keypoint: float) -> str:
    if np.isnan(image):
        return "–"
    return PCK.format(image) + ("" if np.isnan(keypoint) else f" ({PCK.format(keypoint)})")


def report_markdown(table: pd.DataFrame, alphas: tuple[float, ...] = DEFAULT_THRESHOLDS) -> str:
    """A markdown table: each run by its label (what differs among the runs), its pairs, PCK 'per image (per
    keypoint)' beside the published one, PCK of the
    geometry-aware keypoints at the middle alpha when a run has them; then what every run shares, and the legend."""
    head = ["run", "pairs"]
    for alpha in alphas:
        head += [f"PCK@{alpha:g}", f"published@{alpha:g}"]
    geo = f"{alphas[len(alphas) // 2]:g}"
    with_geo = table.get(f"geo_aware@{geo}_per_image", pd.Series(dtype=float)).notna().any()
    head += [f"geo-aware PCK@{geo}"] if with_geo else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.to_dict("records"):
        cells = [row["run"], str(row["pairs"])]
        for alpha in alphas:
            a = f"{alpha:g}"
            cells.append(_both(row[f"pck@{a}_per_image"], row[f"pck@{a}_per_keypoint"]))
            cells.append(_both(row[f"published@{a}_per_image"], row[f"published@{a}_per_keypoint"]))
        if with_geo:
            cells.append(_both(row[f"geo_aware@{geo}_per_image"], row[f"geo_aware@{geo}_per_keypoint"]))
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({n for n in table.get("published_note", []) if n})
    common = table.attrs.get("common")
    legend = [
        "",
        *([f"Every run: {common}."] if common else []),
        "PCK in %, per image (per keypoint). threshold: bbox = alpha x max side of the target bounding box, "
        "image = of the target image, kpbox = of the target keypoints' box.",
        *(
            [
                "geo-aware: the geometry-aware keypoints (GeoAware-SC's subset of SPair-71k: left-right groups with 2 "
                "members visible in the target), over the pairs that have any."
            ]
            if with_geo
            else []
        ),
        "published: the original project's number, shown only beside a run of its whole protocol: --protocol "
        "original without overrides, the same backbones (and ensemble weights), weights origin, matcher with K and T, "
        "image size, dataset, split, number of pairs and threshold.",
        *[f"- {note}" for note in notes],
    ]
    return "\n".join(lines + legend) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A markdown table of the columns of a frame of text (not its index)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _at(value: float, step: object) -> str:
    return "–" if pd.isna(value) else f"{PCK.format(value)} at step {int(step)}"


def finetune_table(runs: list[Run]) -> pd.DataFrame:
    """One row per fine-tuning run: model, data, steps, settings, and its best and last validation PCK."""
    rows = []
    for run, label in zip(runs, labels.run_labels(runs).names, strict=True):
        settings, resolved = run.config["settings"], run.config["resolved"]
        backbone, data, opt = settings["backbone"], settings["data"], settings["optimisation"]
        log = run.read("train_log")
        column = f"val_pck@{settings['val_alpha']:g}"
        val = log.dropna(subset=[column]) if column in log else log.iloc[:0]
        trained = val[val["step"] > 0] if (val["step"] > 0).any() else val  # step 0: the starting point
        best = trained.loc[trained[column].idxmax()] if len(val) else {column: np.nan, "step": 0}
        last = val.iloc[-1] if len(val) else {column: np.nan, "step": 0}
        start = f" from {backbone['checkpoint']}" if backbone["checkpoint"] else ""
        rows.append({
            "run": label,
            "folder": run.name,
            "model": f"{backbone['model']}{start} ({resolved['weights_origin']} weights)",
            "data": f"{data['dataset']} {data['split']} ({resolved['train_pairs']} pairs), "
            f"val {settings['val_split'] or 'none'} ({resolved['val_pairs']} pairs)",
            "steps": f"{int(log['step'].max()) if len(log) else 0} of {resolved['steps']}",
            "settings": f"last {settings['trainable_blocks']} blocks, lr {opt['lr']}, "
            f"batch {resolved['global_batch']}, {opt['schedule']}, select {opt['select']}, "
            f"{protocol_text(settings['protocol'])}",
            f"best val PCK@{settings['val_alpha']:g}": _at(best[column], best["step"]),
            f"last val PCK@{settings['val_alpha']:g}": _at(last[column], last["step"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def grids_table(runs: list[Run]) -> pd.DataFrame:
    """One row per grid search: model, data, and the best window K and temperature T at each alpha
    (with their PCK, and argmax's beside it)."""
    rows = []
    for run, label in zip(runs, labels.run_labels(runs).names, strict=True):
        best_file = run.read("best_parameters")
        averaging = best_file.get("selected_by", "per_image")
        row = {
            "run": label,
            "folder": run.name,
            "model": best_file["model"],
            "data": f"{best_file.get('dataset')} {best_file.get('split')} ({best_file.get('pairs', '?')} pairs, "
            f"{best_file.get('pck_norm')} threshold)",
            "selected by": averaging,
        }
        for alpha, entry in best_file["best"].items():
            argmax = best_file["argmax"].get(alpha, {}).get(f"pck_{averaging}", np.nan)
            row[f"best at PCK@{alpha}"] = (
                f"K={entry['window']} T={entry['temperature']:g}: {PCK.format(entry[f'pck_{averaging}'])} "
                f"(argmax {PCK.format(argmax)})"
            )
        rows.append(row)
    return pd.DataFrame(rows)
