"""Speed of the evaluation engine on a synthetic set shaped like SPair-71k test.

    python benchmarks/bench_evaluation.py                       # CPU, random ViT-B/14 at 112 px
    python benchmarks/bench_evaluation.py --device cuda --image-size 518

Prints:
  - total evaluation time / (unique images x one batched forward pass, timed before and after the
    evaluation and averaged, since a shared machine drifts): overhead beyond the backbone;
  - matching + PCK time for all pairs on 37x37 and 60x60 grids (--grids), for argmax and both soft-argmax matchers;
  - a re-run with the disk cache warm (the median of --warm-runs; its backbone calls must be 0);
  - the original project's way (two forward passes per pair, one keypoint at a time), timed on a
    sample of pairs and extrapolated, as a ratio to this engine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pck
from helper_functions import FeatureSet, preprocess_image
from models import create_backbone, save_finetuned
from semcorr.cli.resolve import resolve
from semcorr.config.settings import MatchSettings
from semcorr.data.geometry import Preprocess, image_geometry
from semcorr.data.images import ImageRef, load_image
from semcorr.data.pairs import PairRecord, PairSet
from semcorr.engine.evaluation import evaluate, load_backbones
from semcorr.engine.matching import predict_keypoints
from semcorr.engine.members import Member
from semcorr.storage import files

CATEGORIES = 18


def synthetic_images(folder: Path, n: int, rng: np.random.Generator) -> list[ImageRef]:
    """n smooth random JPEGs of SPair-like sizes (about 500 x 375)."""
    refs = []
    for i in range(n):
        w, h = int(rng.integers(300, 501)), int(rng.integers(250, 501))
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
        path = folder / f"{i:04d}.jpg"
        img.save(path, quality=90)
        refs.append(ImageRef(f"bench/{i % CATEGORIES}/{i:04d}", str(path), (w, h)))
    return refs


def synthetic_pairs(images: list[ImageRef], n: int, kps: int, rng: np.random.Generator) -> list[PairRecord]:
    """n pairs within categories, about `kps` keypoints each, with a target box."""
    by_cat = [[im for im in images if im.key.split("/")[1] == str(c)] for c in range(CATEGORIES)]
    pairs = []
    for i in range(n):
        cat = by_cat[i % CATEGORIES]
        src, trg = (cat[j] for j in rng.choice(len(cat), 2, replace=False))
        k = int(rng.integers(max(1, kps - 5), kps + 6))

        def points(ref: ImageRef, count: int = k) -> np.ndarray:
            return (rng.uniform(0, 1, (count, 2)) * (np.array(ref.size) - 1)).astype(np.float32)

        w, h = trg.size
        pairs.append(
            PairRecord(
                f"{i:06d}",
                "bench",
                str(i % CATEGORIES),
                src,
                trg,
                points(src),
                points(trg),
                [str(j) for j in range(k)],
                trg_bbox=(0.1 * w, 0.1 * h, 0.9 * w, 0.8 * h),
            )
        )
    return pairs


def synthetic_parser(description: str, model: str, image_size: int, images: int, pairs: int) -> argparse.ArgumentParser:
    """Arguments of a benchmark on a synthetic set: its size and how features are extracted."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default=model)
    ap.add_argument("--image-size", type=int, default=image_size)
    ap.add_argument("--images", type=int, default=images)
    ap.add_argument("--pairs", type=int, default=pairs)
    ap.add_argument("--keypoints", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    return ap


def synthetic_set(folder: Path, args: argparse.Namespace, split: str) -> tuple[list[ImageRef], PairSet]:
    """The images and pairs that `args` describe, written under `folder` (seeded: the same every run)."""
    if args.images < 2 * CATEGORIES:
        sys.exit(f"--images must be at least {2 * CATEGORIES}: pairs are drawn within {CATEGORIES} categories")
    rng = np.random.default_rng(0)
    (folder / "img").mkdir()
    images = synthetic_images(folder / "img", args.images, rng)
    return images, PairSet("bench", split, str(folder), synthetic_pairs(images, args.pairs, args.keypoints, rng))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_only(backbone, images: list[ImageRef], prep: Preprocess, batch_size: int) -> float:
    """Unique images x one batched forward pass, inputs already preprocessed: the floor to compare with."""
    batch = torch.stack([preprocess_image(load_image(r.path), prep) for r in images])
    with torch.inference_mode():
        backbone(batch[:2].to(backbone.device))  # warm-up
        sync(backbone.device)
        t0 = time.perf_counter()
        for i in range(0, len(batch), batch_size):
            backbone(batch[i : i + batch_size].to(backbone.device))
        sync(backbone.device)
    return time.perf_counter() - t0


MATCHERS = {"argmax": MatchSettings("argmax"), "wsoftargmax": MatchSettings("wsoftargmax", 5, 0.1),
            "geoaware-softargmax": MatchSettings("geoaware-softargmax", 11, 0.02)}  # fmt: skip


def time_matching(pairs: list[PairRecord], images: list[ImageRef], device: torch.device, grid: int, dim: int = 768):
    """Matching + PCK for all pairs on a grid x grid patch grid (random unit fp16 features), for each matcher."""
    prep = Preprocess.create(grid * 14, 14, "squash")
    feats = F.normalize(torch.randn(len(images), dim, *prep.grid, device=device, dtype=torch.float16), dim=1)
    fs = FeatureSet(
        feats, {r.key: i for i, r in enumerate(images)}, prep, {r.key: image_geometry(r.size, prep) for r in images}, {}
    )
    out = {}
    for name, match in MATCHERS.items():
        sync(device)
        t0 = time.perf_counter()
        pred = predict_keypoints(pairs, [Member(fs)], match, progress=False)
        pck.summarize(pck.keypoint_table(pairs, pred, [0.05, 0.1, 0.2], "bbox"))
        sync(device)
        out[name] = time.perf_counter() - t0
    return out


def time_original_way(backbone, pairs: list[PairRecord], prep: Preprocess, sample: int) -> float:
    """Seconds per pair the original project's way: both images through the backbone for every pair,
    then one keypoint at a time (similarity, argmax, back to pixels)."""
    p = prep.patch_size
    t0 = time.perf_counter()
    with torch.inference_mode():
        for pair in pairs[:sample]:
            fs = backbone(preprocess_image(load_image(pair.src.path), prep)[None].to(backbone.device))[0]
            ft = backbone(preprocess_image(load_image(pair.trg.path), prep)[None].to(backbone.device))[0]
            gs, gt = image_geometry(pair.src.size, prep), image_geometry(pair.trg.size, prep)
            for xy in pair.src_kps:
                u = gs.to_input(xy)
                d = fs[:, int((u[1] + 0.5) // p), int((u[0] + 0.5) // p)]
                sim = F.cosine_similarity(d[:, None, None], ft, dim=0)
                y, x = divmod(int(sim.argmax()), sim.shape[1])
                gt.to_original(np.array([(x + 0.5) * p - 0.5, (y + 0.5) * p - 0.5]))
    sync(backbone.device)
    return (time.perf_counter() - t0) / sample


def main() -> None:
    ap = synthetic_parser(__doc__.splitlines()[0], "dinov2", image_size=112, images=481, pairs=12234)
    ap.add_argument("--original-sample", type=int, default=20, help="pairs timed the original way")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the warm run's N costliest calls")
    ap.add_argument("--warm-runs", type=int, default=5, help="warm-cache re-runs timed (the median is printed)")
    ap.add_argument("--grids", type=int, nargs="+", default=[37, 60], help="patch grids matching is timed on")
    args = ap.parse_args()
    torch.manual_seed(0)
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, pairset = synthetic_set(tmp, args, "test")
        pairs = pairset.pairs
        random_bb = create_backbone(args.model, weights="random")
        save_finetuned(random_bb, tmp / "weights.pt", {"note": "random weights for benchmarking"})
        settings = resolve(
            "evaluation",
            {"checkpoint": str(tmp / "weights.pt"), "image_size": (args.image_size,), "pck_norm": "bbox",
             "batch_size": args.batch_size, "num_workers": args.num_workers, "device": args.device,
             "cache_dir": str(tmp / "cache"), "output_dir": str(tmp / "results"), "quiet": True},
        )  # fmt: skip
        (backbone,) = load_backbones(settings)
        calls = []
        backbone.register_forward_pre_hook(lambda *_: calls.append(1))
        device = backbone.device
        prep = Preprocess.create(args.image_size, backbone.patch_size, "squash")
        n_kps = sum(p.num_keypoints for p in pairs)
        print(
            f"synthetic set: {len(pairs)} pairs, {len(images)} images, {n_kps} keypoints; "
            f"{backbone.name} (random weights) at {prep.height}x{prep.width} on {device}"
        )

        t_forward = time_forward_only(backbone, images, prep, args.batch_size)
        t0 = time.perf_counter()
        cold = json.loads((evaluate(settings, pairset, backbone) / "metrics.json").read_text())["timings"]
        t_total = time.perf_counter() - t0
        t_forward = (t_forward + time_forward_only(backbone, images, prep, args.batch_size)) / 2  # before and after
        calls.clear()
        t_warm, warm = [], []
        for run in range(args.warm_runs):
            files._DIGESTS.clear()  # a re-run is a new process: it hashes the images again
            profiler = cProfile.Profile() if args.profile and run == 0 else None
            t0 = time.perf_counter()
            with profiler or contextlib.nullcontext():
                warm.append(json.loads((evaluate(settings, pairset, backbone) / "metrics.json").read_text())["timings"])
            t_warm.append(time.perf_counter() - t0)
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
        warm_calls = len(calls)
        t_match = {grid: time_matching(pairs, images, device, grid) for grid in args.grids}
        per_pair = time_original_way(backbone, pairs, prep, args.original_sample)

    t_original = per_pair * len(pairs)
    print()
    print(f"backbone only (unique images x one batched pass): {t_forward:8.2f} s   (mean of a pass before and after)")
    print(
        f"full evaluation, cold cache:                      {t_total:8.2f} s   ratio {t_total / t_forward:.2f} "
        "(target <= 1.1)"
    )
    print(
        f"  of which: features {cold['extraction_s']:.2f} s, matching + PCK {cold['matching_s']:.2f} s, "
        f"the rest (weights hash, results files) {t_total - cold['extraction_s'] - cold['matching_s']:.2f} s"
    )
    median = len(t_warm) // 2
    order = sorted(range(len(t_warm)), key=t_warm.__getitem__)
    print(
        f"full evaluation, warm cache:                      {t_warm[order[median]]:8.2f} s   median of "
        f"{len(t_warm)} ({min(t_warm):.2f} to {max(t_warm):.2f} s); backbone calls {warm_calls} (target 0); reading "
        f"the cache (image hashes included) {warm[order[median]]['cache_read_s']:.2f} s"
    )
    for grid, by_matcher in t_match.items():
        for matcher, seconds in by_matcher.items():
            print(f"matching + PCK, {grid}x{grid} grid, {matcher:<19}:  {seconds:8.2f} s")
    print(
        f"original way (2 passes per pair, per keypoint):   {t_original:8.2f} s   extrapolated from "
        f"{args.original_sample} pairs; {t_original / t_total:.1f}x slower than this engine"
    )


if __name__ == "__main__":
    main()
