"""Match your own two images: predicted correspondences drawn to a PNG and written as JSON.

    python match_pair.py --src a.jpg --trg b.jpg --points "120,80;200,150" --model dinov2
    python match_pair.py --src a.jpg --trg b.jpg --model dinov3 --grid 6           # 6 x 6 points on the source
    python match_pair.py --src a.jpg --trg b.jpg --mutual 40 --heatmap 0 1         # 40 mutual nearest neighbours
    python match_pair.py --src a.jpg --trg b.jpg --checkpoint best.pt --params best_parameters.json

Points are pixels (x, y) of the source as image viewers show it (EXIF orientation applied), 0-based
with integer values at pixel centres. Without --points, a grid of points over the source is matched
(--grid, 8 x 8 by default), or with --mutual N its mutual nearest neighbours: source patches whose
most similar target patch has them as its most similar source patch, the N most similar of them.
The folder results/<time>_match_<model>_<src>_<trg>/ receives
  matches.png       the matches, coloured by their peak similarity (red lowest, green highest)
  matches.json      each match: source point, predicted target point and peak cosine similarity
  heatmap_<i>.png   for each --heatmap i: point i's similarity over the target image
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import viz2d
from cli import HelpFormatter, add_backbone_args, add_matcher_args, add_output_args, match_config, run_main
from evaluation import (
    EvalConfig,
    MatchConfig,
    build_member,
    load_model,
    predict_keypoints,
    source_descriptors,
    target_similarity,
)
from helper_functions import FeatureSet, patch_to_input
from models import Backbone
from pairs import ImageRef, PairRecord, PairSet, image_ref, load_image
from results import new_run_dir, write_json

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


def parse_points(text: str) -> np.ndarray:
    """'x,y;x,y' -> (N, 2) float32."""
    try:
        points = [[float(v) for v in item.split(",")] for item in text.split(";") if item.strip()]
    except ValueError:
        points = None
    if not points or any(len(p) != 2 for p in points) or not np.isfinite(points).all():
        raise ValueError(f"--points must look like 'x,y;x,y' (pixels of the source image), got {text!r}")
    return np.asarray(points, dtype=np.float32)


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


def check_inside(points: np.ndarray, size: tuple[int, int]) -> None:
    w, h = size
    outside = [f"({x:g}, {y:g})" for x, y in points if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5)]
    if outside:
        raise ValueError(f"--points {', '.join(outside)} lie outside the source image ({w} x {h} pixels)")


def match_pair(
    backbone: Backbone,
    src: str | Path,
    trg: str | Path,
    cfg: MatchConfig,
    points: np.ndarray | None = None,
    grid: int = 8,
    mutual: int | None = None,
    image_size: list[int] | None = None,
    resize: str | None = None,
    cache_dir: str | None = None,
) -> PairMatches:
    """Match `points` of image src in image trg (default: a grid x grid grid, or `mutual` nearest neighbours).

    image_size / resize None: those a fine-tuned checkpoint was trained with, else the backbone's
    default size and squash (as in evaluations)."""
    refs = [image_ref(f"{role}/{Path(path).name}", path) for role, path in (("src", src), ("trg", trg))]
    images = PairRecord(
        "images", "custom", "custom", refs[0], refs[1], np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), []
    )
    member, _ = build_member(
        backbone,
        PairSet("custom", "pair", "", [images]),
        image_size,
        resize,
        cache_dir,
        batch_size=2,
        num_workers=0,
        progress=False,
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
    pred = predict_keypoints([pair], [member], cfg, progress=False)
    descs = [source_descriptors(member.features, [pair], cfg.descriptor)]
    ks = torch.arange(len(points), device=member.features.feats.device)
    similarity = target_similarity([member], descs, ks, refs[1].key)
    return PairMatches(pair, pred, similarity, member.features, how)


def write_outputs(folder: Path, result: PairMatches, backbone: Backbone, cfg: MatchConfig, heatmaps: list[int]) -> dict:
    """matches.png, matches.json and the heatmaps of the chosen points into `folder`."""
    pair, fs = result.pair, result.features
    src, trg = load_image(pair.src), load_image(pair.trg)
    peak = result.peak
    title = f"{backbone.name}, {cfg.matcher}: {len(peak)} matches ({result.points})"
    viz2d.save_plot(
        viz2d.draw_matches(src, trg, pair.src_kps, result.pred, colors=viz2d.score_colors(peak), title=title),
        folder / "matches.png",
    )
    extent = viz2d.grid_extent(fs.geometries[pair.trg.key], fs.prep)
    for i in heatmaps:
        fig = viz2d.draw_similarity(
            src,
            trg,
            pair.src_kps[i],
            result.similarity[i].float().cpu().numpy(),
            extent,
            result.pred[i],
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
    write_json(folder / "matches.json", report)
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    g = p.add_argument_group("images")
    g.add_argument("--src", required=True, help="source image")
    g.add_argument("--trg", required=True, help="target image")
    g.add_argument("--points", help="source points 'x,y;x,y;...' in pixels (default: a grid)")
    g.add_argument("--grid", type=int, default=8, help="without --points: an N x N grid of source points")
    g.add_argument(
        "--mutual",
        type=int,
        metavar="N",
        help="without --points: the N most similar mutual nearest neighbours instead of a grid",
    )
    g.add_argument(
        "--heatmap",
        type=int,
        nargs="*",
        default=[],
        metavar="I",
        help="also draw the similarity map of these points (indices into the points)",
    )
    add_backbone_args(p, "optional")
    add_matcher_args(p)
    add_output_args(p, save_vis=False)
    return p


def main(argv: list[str] | None = None) -> Path:
    args = parser().parse_args(argv)
    cfg = match_config(args)
    points = parse_points(args.points) if args.points else None
    if args.points is None and args.grid < 1:
        raise ValueError(f"--grid must be >= 1, got {args.grid}")
    if args.mutual is not None and args.mutual < 1:
        raise ValueError(f"--mutual must be >= 1, got {args.mutual}")
    backbone = load_model(
        EvalConfig(
            model=args.model, weights=args.weights, checkpoint=args.checkpoint, layer=args.layer, device=args.device
        )
    )
    cache_dir = None if args.no_cache else args.cache_dir
    result = match_pair(
        backbone, args.src, args.trg, cfg, points, args.grid, args.mutual, args.image_size, args.resize, cache_dir
    )
    bad = [i for i in args.heatmap if not 0 <= i < len(result.pred)]
    if bad:
        raise ValueError(
            f"--heatmap {bad}: there are only {len(result.pred)} points (indices 0..{len(result.pred) - 1})"
        )
    folder = new_run_dir(args.output_dir, ["match", backbone.name, Path(args.src).stem, Path(args.trg).stem])
    write_outputs(folder, result, backbone, cfg, args.heatmap)
    print(f"{len(result.pred)} matches ({result.points}) -> {folder}")
    return folder


if __name__ == "__main__":
    run_main(main)
