"""Matching two images of the user's own: given points, a grid of points, or mutual nearest neighbours,
through the same engine as the evaluations; and the files that show the result."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import results
import viz2d
from evaluation import build_member, load_model, predict_keypoints, resolve, source_descriptors, target_similarity
from geometry import patch_to_input
from helper_functions import FeatureSet
from images import ImageRef, image_ref, load_image
from models import Backbone
from pairs import PairRecord, PairSet
from settings import EvalConfig, MatchConfig

COORDINATES = "pixels (x, y), 0-based, integer values at pixel centres, EXIF orientation applied"


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
    cfg: EvalConfig,
    backbone: Backbone,
    src: str | Path,
    trg: str | Path,
    *,
    points: np.ndarray | None = None,
    grid: int = 5,
    mutual: int | None = None,
) -> PairMatches:
    """Match `points` of image src in image trg (default: a grid x grid grid, or `mutual` nearest neighbours)
    with the extraction and matcher settings of a (resolved) config.

    cfg.image_size / resize None: those a fine-tuned checkpoint was trained with, else the backbone's
    default size and squash (as in evaluations)."""
    images = image_pair(src, trg)
    refs = [images.src, images.trg]
    member, _ = build_member(cfg, backbone, PairSet("custom", "pair", "", [images]))
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
    pred = predict_keypoints([pair], [member], cfg.match, progress=False)
    descs = [source_descriptors(member.features, [pair], cfg.match.descriptor)]
    ks = torch.arange(len(points), device=member.features.feats.device)
    similarity = target_similarity([member], descs, ks, refs[1].key)
    return PairMatches(pair, pred, similarity, member.features, how)


def write_outputs(
    folder: Path,
    result: PairMatches,
    backbone: Backbone,
    cfg: MatchConfig,
    *,
    heatmaps: list[int],
    args: dict,
    protocol: dict | None = None,
) -> dict:
    """config.json, matches.json, matches.png and the heatmaps of the chosen points into `folder`."""
    pair, fs = result.pair, result.features
    src, trg = load_image(pair.src), load_image(pair.trg)
    peak = result.peak
    title = f"{backbone.name}, {cfg.matcher}: {len(peak)} matches ({result.points}); numbers are --heatmap ids"
    colors, norm = viz2d.score_colors(peak)
    fig = viz2d.draw_matches(src, trg, pair.src_kps, result.pred, colors=colors, title=title)
    viz2d.label_points(fig.axes[0], pair.src_kps, pair.kp_ids)
    viz2d.add_colorbar(fig, fig.axes[1], norm, "peak cosine similarity")
    viz2d.save_plot(fig, folder / results.PICTURES["match"])
    extent = viz2d.grid_extent(fs.geometries[pair.trg.key], fs.prep)
    for i in heatmaps:
        fig = viz2d.draw_similarity(
            src,
            trg,
            pair.src_kps[i],
            result.similarity[i].float().cpu().numpy(),
            extent,
            pred_xy=result.pred[i],
            title=f"point {i}: similarity {peak[i]:.3f}",
        )
        viz2d.save_plot(fig, folder / f"heatmap_{i}.png")
    report = {
        "source": {"path": pair.src.path, "size": list(pair.src.size)},
        "target": {"path": pair.trg.path, "size": list(pair.trg.size)},
        "model": backbone.name,
        "weights": str(backbone.weights_path),
        "image_size": [fs.prep.height, fs.prep.width],
        "resize": fs.prep.resize,
        "matcher": asdict(cfg),
        "points": result.points,
        "coordinates": COORDINATES,
        "matches": [
            {"id": kp, "source": [float(v) for v in s], "target": [float(v) for v in t], "similarity": float(p)}
            for kp, s, t, p in zip(pair.kp_ids, pair.src_kps, result.pred, peak, strict=True)
        ],
    }
    resolved = {k: report[k] for k in ("model", "weights", "image_size", "resize")}
    config = {"args": args, "protocol": protocol, "resolved": resolved}
    results.write_run(folder, "match", {**config, "environment": results.environment(backbone.device)}, matches=report)
    return report


# EvalConfig fields that a match of two images uses (the rest describe a dataset)
MATCH_FIELDS = (
    "model", "weights", "checkpoint", "layer", "image_size", "resize", "match", "match_params", "batch_size",
    "num_workers", "device", "cache_dir", "output_dir", "progress", "protocol", "resample", "coordinates",
    "precision", "feature_dtype", "build",
)  # fmt: skip


def run_match(
    cfg: EvalConfig,
    *,
    src: str,
    trg: str,
    points: np.ndarray | None,
    grid: int,
    mutual: int | None,
    heatmaps: list[int],
) -> Path:
    """Load the backbone, match the two images, write a new results folder of kind "match"."""
    results.check_output_dir(cfg.output_dir)
    cfg, protocol = resolve(cfg)
    backbone = load_model(cfg)
    result = match_pair(cfg, backbone, src, trg, points=points, grid=grid, mutual=mutual)
    bad = [i for i in heatmaps if not 0 <= i < len(result.pred)]
    if bad:
        raise ValueError(
            f"--heatmap {bad}: there are only {len(result.pred)} points (indices 0..{len(result.pred) - 1})"
        )
    folder = results.new_run_dir(cfg.output_dir, ["match", backbone.name, Path(src).stem, Path(trg).stem])
    settings = {k: v for k, v in asdict(cfg).items() if k in MATCH_FIELDS}
    args = {**settings, "src": src, "trg": trg, "grid": grid, "mutual": mutual, "heatmaps": heatmaps}
    write_outputs(folder, result, backbone, cfg.match, heatmaps=heatmaps, args=args, protocol=protocol)
    print(f"{len(result.pred)} matches ({result.points}) -> {folder}")
    return folder
