"""Matching images of the user's own, through the same engine as the evaluations: two images (given points, a
grid of points, or mutual nearest neighbours), or every pair of a custom pairs file (its keypoints, where a
pair has them); and the files that show the result: matches.json, matches.csv, pictures."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helper_functions import FeatureSet
from models import Backbone, create_backbone
from semcorr.config.settings import EvalSettings, MatchSettings, PairSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.geometry import patch_to_input
from semcorr.data.images import ImageRef, image_ref, load_image
from semcorr.data.pairs import PairRecord
from semcorr.engine.matching import predict_keypoints, source_descriptors, target_similarity
from semcorr.engine.members import Member, build_member
from semcorr.report import labels, summary
from semcorr.runs import folders
from semcorr.runs.record import run_record, start_run

COORDINATES_TEXT = "pixels (x, y), 0-based, integer values at pixel centres, EXIF orientation applied"


@dataclass
class PairMatches:
    """Matches of one image pair: the points as a PairRecord (trg_kps: their ground truth where a pairs file gives
    it, else NaN), predictions and similarity maps."""

    pair: PairRecord
    pred: np.ndarray  # (k, 2) target pixels
    similarity: torch.Tensor  # (k, h, w) on the feature grid
    features: FeatureSet
    points: str  # how the source points were chosen

    @property
    def peak(self) -> np.ndarray:
        return self.similarity.flatten(1).amax(dim=1).cpu().numpy()

    @property
    def has_truth(self) -> bool:
        return bool(np.isfinite(self.pair.trg_kps).all(axis=1).any())


def grid_points(size: tuple[int, int], n: int) -> np.ndarray:
    """The centres of an n x n grid of cells covering an image of size (W, H)."""
    w, h = size
    xs, ys = ((np.arange(n) + 0.5) * side / n - 0.5 for side in (w, h))
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def mutual_nearest_points(fs: FeatureSet, src: ImageRef, trg: ImageRef, limit: int) -> np.ndarray:
    """Centres (source pixels) of the source patches that are mutual nearest neighbours of a target
    patch, most similar first, at most `limit`; patches whose centre lies outside the image are left out."""
    sim = fs.feats[fs.index[src.key]].flatten(1).float().T @ fs.feats[fs.index[trg.key]].flatten(1).float()
    best_trg, best_src = sim.argmax(dim=1), sim.argmax(dim=0)
    ids = torch.arange(sim.shape[0], device=sim.device)
    mutual = ids[best_src[best_trg] == ids]
    order = torch.argsort(sim[mutual, best_trg[mutual]], descending=True)
    mutual = mutual[order].cpu()
    w = fs.prep.grid[1]
    pq = torch.stack([mutual % w, mutual // w], dim=1).double().numpy()
    xy = fs.geometries[src.key].to_original(patch_to_input(pq, fs.prep.patch_size))
    inside = ((xy >= 0) & (xy <= np.array(src.size) - 1)).all(axis=1)
    return xy[inside][:limit].astype(np.float32)


def check_inside(points: np.ndarray, size: tuple[int, int], what: str = "--points") -> None:
    """Refuse source points outside the image (pixel centres at integers, so its edge is at -0.5)."""
    w, h = size
    outside = [f"({x:g}, {y:g})" for x, y in points if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5)]
    if outside:
        verb = "lies" if len(outside) == 1 else "lie"
        raise ValueError(f"{what} {', '.join(outside)} {verb} outside the source image ({w} x {h} pixels)")


def image_pair(src: str | Path, trg: str | Path) -> PairRecord:
    """Two images of the user's as a pair without keypoints, keyed src/<name> and trg/<name> (the keys
    of their feature cache entries)."""
    refs = [image_ref(f"{role}/{Path(path).name}", path) for role, path in (("src", src), ("trg", trg))]
    none = np.zeros((0, 2), np.float32)
    return PairRecord("images", "custom", "custom", refs[0], refs[1], none, none, [])


def pair_points(pair: PairRecord, features: FeatureSet, choice: PairSettings) -> tuple[np.ndarray, np.ndarray, str]:
    """The source points matched in `pair`, their ground truth (NaN where none is known) and how they were chosen:
    --points, else the pair's own keypoints (a pairs file's), else mutual nearest neighbours or a grid."""
    if choice.points is not None:
        points = np.asarray(choice.points, np.float32)
        check_inside(points, pair.src.size)
        how = "given"
    elif pair.num_keypoints:
        return pair.src_kps, pair.trg_kps, "the pairs file's keypoints"
    elif choice.mutual:
        points = mutual_nearest_points(features, pair.src, pair.trg, choice.mutual)
        how = f"mutual nearest neighbours (at most {choice.mutual})"
    else:
        points = grid_points(pair.src.size, choice.grid)
        how = f"{choice.grid} x {choice.grid} grid"
    return points, np.full_like(points, np.nan, dtype=np.float32), how


def match_points(pair: PairRecord, member: Member, match: MatchSettings, choice: PairSettings) -> PairMatches:
    """Match the points `choice` picks in `pair` with one member's features (already extracted) and a matcher."""
    points, truth, how = pair_points(pair, member.features, choice)
    ids = pair.kp_ids if how == "the pairs file's keypoints" else [str(i) for i in range(len(points))]
    query = replace(pair, src_kps=points.astype(np.float32), trg_kps=truth.astype(np.float32), kp_ids=ids)
    pred = predict_keypoints([query], [member], match, progress=False)
    descs = [source_descriptors(member.features, [query], match.descriptor)]
    ks = torch.arange(len(points), device=member.features.feats.device)
    similarity = target_similarity([member], descs, ks, pair.trg.key)
    return PairMatches(query, pred, similarity, member.features, how)


def match_pair(
    settings: EvalSettings,
    backbone: Backbone,
    src: str | Path,
    trg: str | Path,
    *,
    points: np.ndarray | None = None,
    grid: int = 5,
    mutual: int | None = None,
) -> tuple[PairMatches, dict]:
    """Match `points` of image src in image trg (default: a grid x grid grid, or `mutual` nearest neighbours)
    with the settings' member, extraction and matcher; and what the member resolved to."""
    pair = image_pair(src, trg)
    member, resolved = extract([pair.src, pair.trg], settings, backbone)
    choice = PairSettings(points=None if points is None else tuple(map(tuple, points)), grid=grid, mutual=mutual)
    return match_points(pair, member, settings.match, choice), resolved


def pair_images(pairs: list[PairRecord]) -> list[ImageRef]:
    """The images of `pairs`, each once, in order."""
    return list({ref.key: ref for p in pairs for ref in (p.src, p.trg)}.values())


def extract(images: list[ImageRef], settings: EvalSettings, backbone: Backbone) -> tuple[Member, dict]:
    """The member's features of `images` (no loader workers for two images: starting them costs more than reading
    two images)."""
    extraction = settings.extract if len(images) > 2 else replace(settings.extract, num_workers=0)
    return build_member(settings.member, extraction, backbone, images, progress=settings.output.progress)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def draw_pair(folder: Path, result: PairMatches, title: str, heatmaps: tuple[int, ...], name: str) -> None:
    """matches<name>.png (lines coloured by peak similarity, numbered by --heatmap index, ground truth as crosses
    where known) and heatmap<name>_<i>.png for each --heatmap i the pair has."""
    from semcorr.viz import figures, viz2d  # matplotlib loads only here

    pair, fs, peak = result.pair, result.features, result.peak
    src, trg = load_image(pair.src), load_image(pair.trg)
    colors, norm = viz2d.score_colors(peak)
    truth = pair.trg_kps if result.has_truth else None
    shown = f"{title}: {len(peak)} matches ({result.points}); numbers are --heatmap indices" + (
        "; cyan crosses: the pairs file's target keypoints" if truth is not None else ""
    )
    fig = figures.draw_matches(src, trg, pair.src_kps, result.pred, colors=colors, gt_xy=truth, title=shown)
    viz2d.label_points(fig.axes[0], pair.src_kps, [str(i) for i in range(len(peak))])
    viz2d.add_colorbar(fig, fig.axes[1], norm, "peak cosine similarity")
    viz2d.save_plot(fig, folder / f"matches{name}.png")
    for i in (i for i in heatmaps if i < len(peak)):
        heat, extent = figures.heatmap_in_pixels(
            result.similarity[i].float().cpu().numpy(), fs.geometries[pair.trg.key], fs.prep.patch_size
        )  # bilinear between patch centres, as the explorer draws it
        fig = figures.draw_similarity(
            src, trg, pair.src_kps[i], heat, extent, pred_xy=result.pred[i], gt_xy=pair.trg_kps[i],
            title=f"point {i}: similarity {peak[i]:.3f}",
        )  # fmt: skip
        viz2d.save_plot(fig, folder / f"heatmap{name}_{i}.png")


def draw_features(folder: Path, features: FeatureSet, images: list[ImageRef]) -> None:
    """features_pca.png: the images' features, their first three principal components computed jointly, as RGB."""
    from semcorr.viz import figures, viz2d  # matplotlib loads only here

    viz2d.save_plot(figures.draw_feature_pca(features, images), folder / "features_pca.png")


def matches_record(results: list[PairMatches], model: str, match: MatchSettings) -> dict:
    """matches.json: per pair, each match's source point, predicted target point, peak cosine similarity, and its
    ground truth where the pairs file gives one."""
    pairs = [
        {
            "pair_id": r.pair.pair_id,
            "source": {"path": r.pair.src.path, "size": list(r.pair.src.size)},
            "target": {"path": r.pair.trg.path, "size": list(r.pair.trg.size)},
            "points": r.points,
            "matches": match_entries(r),
        }
        for r in results
    ]
    return {
        "model": model,
        "matcher": labels.matcher_text(vars(match)),
        "coordinates": COORDINATES_TEXT,
        "pairs": pairs,
    }


def match_entries(result: PairMatches) -> list[dict]:
    """One pair's matches: index, id, source, predicted target, peak similarity, truth (None where unknown)."""

    def point(xy: np.ndarray) -> list[float] | None:
        return [float(v) for v in xy] if np.isfinite(xy).all() else None

    pair = result.pair
    rows = zip(pair.kp_ids, pair.src_kps, result.pred, result.peak, pair.trg_kps, strict=True)
    return [
        {"point": i, "id": kp, "source": point(s), "target": point(t), "similarity": float(p), "truth": point(g)}
        for i, (kp, s, t, p, g) in enumerate(rows)
    ]


def matches_table(record: dict) -> pd.DataFrame:
    """matches.csv: matches.json's matches, one row each (pixels; truth empty where unknown)."""
    rows = []
    for pair in record["pairs"]:
        for m in pair["matches"]:
            truth = m["truth"] or [np.nan, np.nan]
            rows.append({"pair_id": pair["pair_id"], "point": m["point"], "id": m["id"],
                         "source_x": m["source"][0], "source_y": m["source"][1],
                         "target_x": m["target"][0], "target_y": m["target"][1], "similarity": m["similarity"],
                         "truth_x": truth[0], "truth_y": truth[1]})  # fmt: skip
    return pd.DataFrame(rows)


def match_pairs(settings: EvalSettings, choice: PairSettings) -> list[PairRecord]:
    """The pairs to match: every pair of the pairs file (--pairs), or the two images --src and --trg."""
    if settings.data is not None:
        return load_pairs(settings.data).pairs
    return [image_pair(choice.src, choice.trg)]


def run_match(settings: EvalSettings, choice: PairSettings) -> Path:
    """Load the backbone, match every pair, write a new results folder of kind "match", print the matches."""
    context = start_run(settings.output)
    pairs = match_pairs(settings, choice)
    backbone = create_backbone(settings.member.backbone)
    images = pair_images(pairs)
    member, resolved = extract(images, settings, backbone)
    results = [match_points(pair, member, settings.match, choice) for pair in pairs]
    most = max(len(r.pred) for r in results)
    bad = [i for i in choice.heatmaps if not 0 <= i < most]
    if bad:
        raise ValueError(f"--heatmap {bad}: there are only {most} points (indices 0..{most - 1})")
    config = run_record(
        "match", settings, resolved={"members": [resolved]}, context=context, device=backbone.device, pair=choice
    )
    names = [Path(settings.data.root).stem] if settings.data else [Path(choice.src).stem, Path(choice.trg).stem]
    title = f"{backbone.name}, {labels.matcher_text(vars(settings.match))}"
    record = matches_record(results, backbone.name, settings.match)

    def write(folder: Path) -> None:
        for result in results:
            name = "" if len(results) == 1 else f"_{safe_name(result.pair.pair_id)}"
            draw_pair(folder, result, title, choice.heatmaps, name)
        draw_features(folder, member.features, images)
        folders.write_run(folder, "match", config, matches=record, match_table=matches_table(record))

    parts = [*labels.folder_parts(config), *names]
    folder = folders.write_new_run(settings.output.output_dir, parts, context.started, write)
    print(summary.match_summary(config, record))
    print(f"results: {folder}")
    return folder
