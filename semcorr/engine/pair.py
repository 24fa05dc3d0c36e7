"""Matching two images of the user's own: given points, a grid of points, or mutual nearest neighbours,
through the same engine as the evaluations; and the files that show the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helper_functions import FeatureSet
from models import Backbone
from semcorr.config.settings import EvalSettings, PairSettings
from semcorr.data.geometry import patch_to_input
from semcorr.data.images import ImageRef, image_ref, load_image
from semcorr.data.pairs import PairRecord
from semcorr.engine.evaluation import load_backbones
from semcorr.engine.matching import predict_keypoints, source_descriptors, target_similarity
from semcorr.engine.members import build_member
from semcorr.report import labels
from semcorr.runs import folders
from semcorr.runs.record import run_record, start_run

COORDINATES_TEXT = "pixels (x, y), 0-based, integer values at pixel centres, EXIF orientation applied"


@dataclass
class PairMatches:
    """Matches of one image pair: the points as a PairRecord, predictions and similarity maps."""

    pair: PairRecord
    pred: np.ndarray  # (k, 2) target pixels
    similarity: torch.Tensor  # (k, h, w) on the feature grid
    features: FeatureSet
    points: str  # how the source points were chosen

    @property
    def peak(self) -> np.ndarray:
        return self.similarity.flatten(1).amax(dim=1).cpu().numpy()


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
    images = image_pair(src, trg)
    refs = [images.src, images.trg]
    member, resolved = build_member(
        settings.member, settings.extract, backbone, refs, progress=settings.output.progress
    )
    if points is not None:
        check_inside(points, refs[0].size)
        how = "given"
    elif mutual:
        points = mutual_nearest_points(member.features, refs[0], refs[1], mutual)
        how = f"mutual nearest neighbours (at most {mutual})"
    else:
        points = grid_points(refs[0].size, grid)
        how = f"{grid} x {grid} grid"
    pair = PairRecord(
        "pair",
        "custom",
        "custom",
        refs[0],
        refs[1],
        points.astype(np.float32),
        np.full_like(points, np.nan, dtype=np.float32),
        [str(i) for i in range(len(points))],
    )
    pred = predict_keypoints([pair], [member], settings.match, progress=False)
    descs = [source_descriptors(member.features, [pair], settings.match.descriptor)]
    ks = torch.arange(len(points), device=member.features.feats.device)
    similarity = target_similarity([member], descs, ks, refs[1].key)
    return PairMatches(pair, pred, similarity, member.features, how), resolved


def write_outputs(
    folder: Path, result: PairMatches, backbone: Backbone, settings: EvalSettings, heatmaps: tuple[int, ...]
) -> dict:
    """matches.json, matches.png and the heatmaps of the chosen points into `folder`; returns matches.json."""
    from semcorr.viz import figures, viz2d  # matplotlib loads only here

    pair, fs = result.pair, result.features
    src, trg = load_image(pair.src), load_image(pair.trg)
    peak = result.peak
    title = (
        f"{backbone.name}, {settings.match.matcher}: {len(peak)} matches ({result.points}); numbers are --heatmap ids"
    )
    colors, norm = viz2d.score_colors(peak)
    fig = figures.draw_matches(src, trg, pair.src_kps, result.pred, colors=colors, title=title)
    viz2d.label_points(fig.axes[0], pair.src_kps, pair.kp_ids)
    viz2d.add_colorbar(fig, fig.axes[1], norm, "peak cosine similarity")
    viz2d.save_plot(fig, folder / folders.PICTURES["match"])
    for i in heatmaps:
        heat, extent = figures.heatmap_in_pixels(
            result.similarity[i].float().cpu().numpy(), fs.geometries[pair.trg.key], fs.prep.patch_size
        )  # bilinear between patch centres, as the explorer draws it
        fig = figures.draw_similarity(
            src,
            trg,
            pair.src_kps[i],
            heat,
            extent,
            pred_xy=result.pred[i],
            title=f"point {i}: similarity {peak[i]:.3f}",
        )
        viz2d.save_plot(fig, folder / f"heatmap_{i}.png")
    return {
        "source": {"path": pair.src.path, "size": list(pair.src.size)},
        "target": {"path": pair.trg.path, "size": list(pair.trg.size)},
        "model": backbone.name,
        "matcher": settings.match.matcher,
        "points": result.points,
        "coordinates": COORDINATES_TEXT,
        "matches": [
            {"id": kp, "source": [float(v) for v in s], "target": [float(v) for v in t], "similarity": float(p)}
            for kp, s, t, p in zip(pair.kp_ids, pair.src_kps, result.pred, peak, strict=True)
        ],
    }


def run_match(settings: EvalSettings, pair: PairSettings) -> Path:
    """Load the backbone, match the two images, write a new results folder of kind "match"."""
    context = start_run(settings.output)
    (backbone,) = load_backbones(settings)
    points = np.asarray(pair.points, dtype=np.float32) if pair.points is not None else None
    result, resolved = match_pair(
        settings, backbone, pair.src, pair.trg, points=points, grid=pair.grid, mutual=pair.mutual
    )
    bad = [i for i in pair.heatmaps if not 0 <= i < len(result.pred)]
    if bad:
        raise ValueError(
            f"--heatmap {bad}: there are only {len(result.pred)} points (indices 0..{len(result.pred) - 1})"
        )
    config = run_record(
        "match", settings, resolved={"members": [resolved]}, context=context, device=backbone.device, pair=pair
    )
    parts = [*labels.folder_parts(config), Path(pair.src).stem, Path(pair.trg).stem]
    folder = folders.new_run_dir(settings.output.output_dir, parts, context.started)
    report = write_outputs(folder, result, backbone, settings, pair.heatmaps)
    folders.write_run(folder, "match", config, matches=report)
    print(f"{len(result.pred)} matches ({result.points}) -> {folder}")
    return folder
