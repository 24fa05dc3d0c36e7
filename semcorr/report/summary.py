"""What a run prints when it ends: short, readable summaries of its results files (config.json and
metrics.json as semcorr/runs/ writes them), every number with one format: PCK with 2 decimals in %."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from semcorr.report import labels

PCK = "{:.2f}"


def plural(n: int, word: str) -> str:
    """'1 pair', '2 pairs', '12,234 pairs', '2 matches'."""
    return f"{n:,} {word}{'' if n == 1 else 'es' if word.endswith(('ch', 'sh', 's', 'x')) else 's'}"


def matcher_text(match: dict, params: dict | None = None, uses: list[str] | None = None) -> str:
    """'argmax', 'wsoftargmax K5 T0.2' or 'geoaware-gaussian sigma5 T0.02': the matcher and the settings it uses
    (config.json's resolved matcher_uses; runs that predate it: window and temperature), and where K and T came
    from."""
    if match["matcher"] == "argmax":
        return match["matcher"]
    uses = uses or ["window", "temperature", "window_border"]
    text = labels.matcher_text(match, uses)
    if "window_border" in uses and match.get("window_border") == "clip":
        text += " (window clipped at the border)"
    return text + (f" from {params['path']} (best at PCK@{params['alpha']:g})" if params else "")


def protocol_text(protocol: dict) -> str:
    """'protocol original', with the settings that left it."""
    overrides = ", ".join(f"{k}={v}" for k, v in protocol["overrides"].items())
    return f"protocol {protocol['name']}" + (f" with {overrides}" if overrides else "")


def model_text(member: dict, checkpoint: str | None = None) -> str:
    """'dinov2_vitb14 (official weights models/.../file.pth) at 518x518, 37x37 patches, squash'."""
    origin = member["weights_origin"]
    where = member["weights"] if member["weights"] != "random" else "random init"
    what = f"{member['model']} ({origin} weights {where})" if origin != "random" else f"{member['model']} (RANDOM)"
    if checkpoint:
        what = f"{member['model']} (checkpoint {checkpoint}, {origin})"
    h, w = member["image_size"]
    gh, gw = member["grid"]
    return f"{what} at {h}x{w}, {gh}x{gw} patches, {member['resize']}"


def setup_line(config: dict) -> str:
    """One line: model (or ensemble members with weights), input, matcher, protocol."""
    settings, resolved = config["settings"], config["resolved"]
    checkpoints = [m["backbone"]["checkpoint"] for m in settings["members"]]
    if len(resolved["members"]) > 1:
        members = " + ".join(f"{m['weight']:.2f} x {model_text(m)}" for m in resolved["members"])
        models = f"ensemble of {members}; maps on a {'x'.join(map(str, resolved['grid']))} grid"
    else:
        models = model_text(resolved["members"][0], checkpoints[0])
    matcher = matcher_text(settings["match"], settings["params"], resolved.get("matcher_uses"))
    return f"{models} | {matcher} | {protocol_text(settings['protocol'])}"


def pck_table(scores: dict) -> pd.DataFrame:
    """PCK at each alpha (rows) per image and per keypoint (columns), formatted."""
    rows = {k.removeprefix("pck@"): v for k, v in scores.items() if k.startswith("pck@")}
    frame = pd.DataFrame(rows).T[["per_image", "per_keypoint"]]
    frame.index = [f"PCK@{alpha}" for alpha in frame.index]
    frame.columns = ["per image", "per keypoint"]
    return frame.map(PCK.format)


def baseline_lines(metrics: dict) -> list[str]:
    """This run's PCK against its baseline's (metrics.json "baseline"), per image (per keypoint) at each alpha."""
    baseline = metrics.get("baseline")
    if not baseline:
        return []
    lines = [f"against {baseline['run']} ({baseline['chosen']}): this run - baseline, per image (per keypoint):"]
    for key, scores in ((k, v) for k, v in baseline.items() if k.startswith("pck@")):
        image, keypoint = scores["per_image"], scores["per_keypoint"]
        lines.append(
            f"  PCK@{key.removeprefix('pck@')}: {PCK.format(metrics[key]['per_image'])} vs "
            f"{PCK.format(image['baseline'])}: {image['difference']:+.2f} ({keypoint['difference']:+.2f})"
        )
    return lines


def published_lines(config: dict, metrics: dict) -> list[str]:
    """The original project's published number, when this run ran its whole protocol (report/published.py)."""
    from semcorr.report.published import PUBLISHED_ALPHAS, published_for
    from semcorr.runs.folders import Run

    entry = published_for(Run(Path(""), "evaluation", config, {"metrics": metrics}))
    if entry is None:
        return []
    scores = [
        f"PCK@{a:g} {PCK.format(image)}" + (f" ({PCK.format(entry.per_keypoint[i])})" if entry.per_keypoint else "")
        for i, (a, image) in enumerate(zip(PUBLISHED_ALPHAS, entry.per_image, strict=True))
    ]
    note = f"; {entry.note}" if entry.note else ""
    return [f"published by the original project for this protocol, per image (per keypoint): {', '.join(scores)}{note}"]


def members_table(metrics: dict) -> pd.DataFrame:
    """PCK per image (per keypoint) at each alpha of the ensemble and of each member alone (metrics.json's members),
    rows named by model and weights file."""
    alphas = [k for k in metrics if k.startswith("pck@")]
    rows = {"ensemble": metrics}
    for i, member in enumerate(metrics["members"]):
        name = f"{i}: {member['weight']:.2f} x {member['model']} ({member['weights_origin']} {Path(member['weights']).name})"
        rows[name] = member
    cells = {
        name: {f"PCK@{a.removeprefix('pck@')}": f"{PCK.format(s[a]['per_image'])} ({PCK.format(s[a]['per_keypoint'])})"
               for a in alphas}
        for name, s in rows.items()
    }  # fmt: skip
    return pd.DataFrame(cells).T


def category_table(metrics: dict, alpha: str) -> pd.DataFrame:
    """PCK@alpha per category (per image, per keypoint, pairs), then the mean over categories."""
    key = f"pck@{alpha}"
    rows = {
        cat: {"per image": m[key]["per_image"], "per keypoint": m[key]["per_keypoint"], "pairs": m["pairs"]}
        for cat, m in metrics["per_category"].items()
    }
    frame = pd.DataFrame(rows).T
    mean = frame[["per image", "per keypoint"]].mean()
    frame.loc[f"mean of {len(rows)} categories"] = [*mean, float("nan")]
    out = frame[["per image", "per keypoint"]].map(PCK.format)
    out["pairs"] = [f"{int(n):,}" if n == n else "" for n in frame["pairs"]]
    return out


def difficulty_summary(difficulty: dict, alpha: str) -> pd.DataFrame:
    """PCK@alpha per image at each level (columns 0..3) of each difficulty flag (rows): 'easy 55.00 (120)'."""
    from pck import DIFFICULTY_LEVELS

    rows = {
        flag.replace("_", " "): {
            DIFFICULTY_LEVELS[flag].index(name): f"{name} {PCK.format(level[f'pck@{alpha}']['per_image'])} "
            f"({level['pairs']:,})"
            for name, level in levels.items()
        }
        for flag, levels in difficulty.items()
    }
    frame = pd.DataFrame(rows).T.sort_index(axis=1).fillna("")
    return frame.apply(lambda cells: cells.str.ljust(cells.str.len().max()))  # aligned on the level's name


def evaluation_summary(config: dict, metrics: dict) -> str:
    """The setup, PCK at each alpha (and on keypoint subsets, e.g. the geometry-aware ones), the flip decisions,
    PCK per category (when the dataset has several) and per difficulty level (SPair-71k), what was skipped, and
    the time."""
    proto, counts = metrics["protocol"], metrics["counts"]
    threshold = proto["threshold"] + (" (correct below it, strictly)" if proto.get("strict") else "")
    lines = [
        setup_line(config),
        data_line(proto["dataset"], proto["split"], counts["pairs"], counts["keypoints"], threshold),
        pck_table(metrics).to_string(),
    ]
    for subset in metrics.get("subsets", {}).values():
        lines += [
            f"{subset['description']}: {plural(subset['pairs'], 'pair')}, {plural(subset['keypoints'], 'keypoint')}",
            pck_table(subset).to_string(),
        ]
    if "flip" in metrics:
        flip = metrics["flip"]
        lines.append(
            f"pose alignment by flip ({flip['mode']}): the mirrored source was closer for {flip['pairs_flipped']:,} of "
            f"{plural(flip['pairs'], 'pair')}; {flip['keypoints_flipped']:,} of {plural(flip['keypoints'], 'keypoint')} "
            "took its prediction"
        )
    lines += baseline_lines(metrics) + published_lines(config, metrics)
    if metrics.get("members"):
        lines += [
            "the ensemble and each member alone (its own grid, the same matcher and pairs), per image (per keypoint):",
            members_table(metrics).to_string(),
        ]
    alphas = [k.removeprefix("pck@") for k in metrics if k.startswith("pck@")]
    alpha = "0.1" if "0.1" in alphas else alphas[len(alphas) // 2]
    if "pck_dagger" in metrics:
        lines.append(jamais_vu_line(metrics, alpha))
    if len(metrics["per_category"]) > 1:
        lines += [f"per category, PCK@{alpha}:", category_table(metrics, alpha).to_string()]
    if "difficulty" in metrics:
        table = difficulty_summary(metrics["difficulty"], alpha).to_string(header=False)
        lines += [f"per difficulty level, PCK@{alpha} per image (pairs):", table]
    skipped = counts.get("pairs_skipped") or {}
    if skipped:
        lines.append("skipped: " + ", ".join(f"{plural(n, 'pair')} ({why})" for why, n in skipped.items()))
    lines += [f"note: {note}" for note in counts.get("notes", [])]
    timings = metrics["timings"]
    lines.append(
        f"time: {timings['total_s']:.1f} s (features {timings['extraction_s']:.1f} s for "
        f"{plural(timings['images_extracted'], 'image')}, {timings['images_from_cache']:,} from the cache; "
        f"matching and PCK {timings['matching_s']:.1f} s"
        + (f", KAP {timings['kap_s']:.1f} s)" if "kap_s" in timings else ")")
        + (f", after {timings['startup_s']:.1f} s of start-up (imports, arguments)" if timings.get("startup_s") else "")
    )
    if timings.get("features_streamed"):
        lines.append(
            f"features: {timings['features_gb']:.3g} GB, more than --feature-memory allows in memory: read from the "
            "disk cache one image at a time"
        )
    return "\n".join(lines)


def jamais_vu_line(metrics: dict, alpha: str) -> str:
    """'PCK-dagger@0.1 40.00 / 42.00, KAP@0.1 ... (per image / per keypoint)': Jamais Vu's figures at one alpha."""
    shown = [(key, name) for key, name in (("pck_dagger", "PCK-dagger"), ("kap", "KAP")) if key in metrics]
    parts = [
        f"{name}@{alpha} {PCK.format(scores['per_image'])} / {PCK.format(scores['per_keypoint'])}"
        for key, name in shown
        for scores in [metrics[key][f"{key}@{alpha}"]]
    ]
    return ", ".join(parts) + " (per image / per keypoint)"


def data_line(dataset: str, split: str, pairs: int, keypoints: int, threshold: str) -> str:
    """'spair test: 24 pairs, 106 keypoints; threshold = alpha * ...; PCK in %'."""
    return f"{dataset} {split}: {plural(pairs, 'pair')}, {plural(keypoints, 'keypoint')}; threshold = {threshold}; PCK in %"


def search_context(config: dict, best_file: dict) -> list[str]:
    """What a grid or weight search ran on: each model (weights or checkpoint, image size, grid), the matcher,
    protocol, then the data (dataset, split, pairs, keypoints, threshold)."""
    from pck import NORM_DESCRIPTIONS

    settings, resolved = config["settings"], config["resolved"]
    checkpoints = [m["backbone"]["checkpoint"] for m in settings["members"]]
    models = " + ".join(model_text(m, c) for m, c in zip(resolved["members"], checkpoints, strict=True))
    match = settings["match"]
    searched = (
        f"{match['matcher']}, K and T searched"
        if config["kind"] == "grid"
        else f"{matcher_text(match)}, weights searched"
    )
    return [
        f"{models} | {searched} | {protocol_text(settings['protocol'])}",
        data_line(best_file["dataset"], best_file["split"], best_file["pairs"], best_file["keypoints"],
                  NORM_DESCRIPTIONS[best_file["pck_norm"]]),
    ]  # fmt: skip


def tie_text(entry: dict, cells: int, order: str) -> str:
    """'' unless several cells reach the best value: then how many, and which of them is named."""
    tied = entry.get("tied", 1)
    if tied <= 1:
        return ""
    which = f"all {cells} tie" if tied == cells else f"{tied} of {cells} tie"
    return f"; a tie: {which} at the best, the first in {order} is named"


def grid_summary(
    table: pd.DataFrame, best: dict, argmax: dict, select_by: str, grid: tuple[int, int], context: list[str]
) -> str:
    """What the search ran on, the grid's table, then the best window and temperature at each alpha beside argmax
    (and whether it is a tie), and which windows cover the whole patch grid from every position (they all give
    the same predictions)."""
    shown = table.drop(columns="time_s")
    shown[[c for c in shown if c.startswith("pck@")]] = shown[[c for c in shown if c.startswith("pck@")]].map(
        PCK.format
    )
    lines = [*context, shown.to_string(index=False)]
    cells = int((table["matcher"] != "argmax").sum())
    for alpha, entry in best.items():
        lines.append(
            f"best at PCK@{alpha} ({select_by}): K={entry['window']} T={entry['temperature']:g} -> "
            f"{PCK.format(entry[f'pck_{select_by}'])} (argmax {PCK.format(argmax[alpha][f'pck_{select_by}'])})"
            + tie_text(entry, cells, "the order searched (--windows, then --temperatures, as given)")
        )
    whole = 2 * max(grid) - 1
    same = sorted(int(k) for k in table["window"].dropna().unique() if k >= whole)
    if len(same) > 1:
        lines.append(
            f"note: windows {', '.join(map(str, same))} give identical results: on the {grid[0]}x{grid[1]} patch grid "
            f"any K >= {whole} covers the whole map from every keypoint"
        )
    return "\n".join(lines)


def weight_search_summary(best: dict, select_by: str, cells: int, context: list[str]) -> str:
    """What the search ran on, then the best member weights at each alpha as --member arguments (and whether it is
    a tie)."""
    return "\n".join(
        context
        + [
            f"best at PCK@{alpha} ({select_by}): {PCK.format(entry[f'pck_{select_by}'])} with {entry['member_args']}"
            + tie_text(entry, cells, "weight_search_results.csv")
            for alpha, entry in best.items()
        ]
    )


def match_summary(config: dict, record: dict) -> str:
    """The setup, then each pair's matches as matches.json holds them: source and predicted target pixels, peak
    cosine similarity, and the ground truth with the error in pixels where the pairs file gives one."""
    pairs = record["pairs"]
    total = sum(len(p["matches"]) for p in pairs)
    lines = [setup_line(config), f"{plural(total, 'match')} in {plural(len(pairs), 'pair')}; {record['coordinates']}"]
    xy = "({:.1f}, {:.1f})".format
    for pair in pairs:
        lines.append(f"{pair['pair_id']}: {pair['source']['path']} -> {pair['target']['path']} ({pair['points']})")
        lines.append(f"  {'point':>5}  {'source':>16}    {'target':>16}  similarity")
        for m in pair["matches"]:
            name = f"{m['point']}" + (f" ({m['id']})" if m["id"] != str(m["point"]) else "")
            line = f"  {name:>5}  {xy(*m['source']):>16} -> {xy(*m['target']):>16}  {m['similarity']:.3f}"
            if m["truth"] is not None:
                error = float(np.hypot(*np.subtract(m["target"], m["truth"])))
                line += f"  truth {xy(*m['truth'])}, {error:.1f} px off"
            lines.append(line)
    return "\n".join(lines)


def benchmarks_summary(table) -> str:
    """A run of several benchmarks: PCK at each alpha (rows) on each benchmark (columns), as papers print them,
    from its benchmark table (report/benchmarks.py, one row)."""
    row = table.frame.iloc[0]
    cells = {tuple(column.rsplit(" ", 1)): PCK.format(value) for column, value in row.items()}
    frame = pd.Series(cells).unstack(level=0)
    frame = frame[list(dict.fromkeys(name for name, _ in cells))].fillna("")
    what = table.caption.split(" Every row:")[0].removesuffix(" Best per column in bold.")
    return f"all benchmarks: {what}\n" + frame.to_string()
