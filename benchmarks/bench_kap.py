"""What KAP costs beside PCK, on a synthetic set shaped like SPair-U / SPair-71k test (--kap).

    python benchmarks/bench_kap.py                  # CPU
    python benchmarks/bench_kap.py --device cuda

Random unit features (768 channels, fp16 as the feature cache holds them) on the 37 x 37 grid of a ViT-B/14 at 518
(the default protocol) and the 60 x 60 grid of GeoAware-SC's 840 canvas; about 10 keypoints a pair visible in both
images and 2 in the source only. Prints, per grid: matching + PCK (with PCK-dagger) as an evaluation runs them, and
KAP (semcorr/engine/kap.py's pass over every source-visible keypoint's map, then pck.kap's average precisions), in
seconds and as a share of matching + PCK. Extraction, which dominates a cold run, is left out: KAP adds nothing there.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_evaluation import CATEGORIES, sync, synthetic_pairs

import pck
from helper_functions import FeatureSet
from semcorr.cli.resolve import concrete_device
from semcorr.config.settings import MatchSettings
from semcorr.data.geometry import Preprocess, image_geometry
from semcorr.data.images import ImageRef
from semcorr.engine.kap import kap_samples
from semcorr.engine.matching import predict_keypoints
from semcorr.engine.members import Member

ALPHAS = (0.01, 0.05, 0.1)


def with_source_only(pairs: list, count: int, rng: np.random.Generator) -> list:
    """The pairs, each with `count` more source keypoints seen in the source only."""
    ids = [f"x{i}" for i in range(count)]
    points = [(rng.uniform(0, 1, (count, 2)) * (np.array(p.src.size) - 1)).astype(np.float32) for p in pairs]
    return [dataclasses.replace(p, src_only_ids=ids, src_only_kps=xy) for p, xy in zip(pairs, points, strict=True)]


def time_grid(pairs: list, images: list[ImageRef], side: int, patch: int, device: torch.device) -> tuple[float, float]:
    """Seconds of matching + PCK (argmax), and of KAP, on a side x side patch grid."""
    prep = Preprocess.create(side * patch, patch, "squash")
    feats = F.normalize(torch.randn(len(images), 768, *prep.grid, device=device), dim=1).half()
    fs = FeatureSet(
        feats, {r.key: i for i, r in enumerate(images)}, prep, {r.key: image_geometry(r.size, prep) for r in images}, {}
    )
    sync(device)
    t0 = time.perf_counter()
    pred = predict_keypoints(pairs, [Member(fs)], MatchSettings("argmax"), progress=False)
    pck.summarize(pck.keypoint_table(pairs, pred, list(ALPHAS), "bbox", strict=True))
    sync(device)
    t1 = time.perf_counter()
    pck.kap(kap_samples(pairs, [Member(fs)], descriptor="nearest", alphas=ALPHAS, norm="bbox", progress=False))
    sync(device)
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=481)
    ap.add_argument("--pairs", type=int, default=12234)
    ap.add_argument("--keypoints", type=int, default=10)
    ap.add_argument("--source-only", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = torch.device(concrete_device(args.device))
    rng = np.random.default_rng(0)
    sizes = rng.integers(250, 501, (args.images, 2))
    images = [
        ImageRef(f"bench/{i % CATEGORIES}/{i:04d}", f"{i}.jpg", (int(w), int(h))) for i, (w, h) in enumerate(sizes)
    ]
    pairs = with_source_only(synthetic_pairs(images, args.pairs, args.keypoints, rng), args.source_only, rng)
    mutual = sum(p.num_keypoints for p in pairs)
    print(
        f"synthetic set: {len(pairs)} pairs, {len(images)} images, {mutual} keypoints in both images and "
        f"{len(pairs) * args.source_only} in the source only; {device}"
    )
    for side, patch in ((37, 14), (60, 14)):
        pck_s, kap_s = time_grid(pairs, images, side, patch, device)
        print(
            f"{side}x{side} grid: matching + PCK (and PCK-dagger) {pck_s:6.2f} s, KAP {kap_s:6.2f} s "
            f"({kap_s / pck_s:.2f}x matching + PCK)"
        )


if __name__ == "__main__":
    main()
