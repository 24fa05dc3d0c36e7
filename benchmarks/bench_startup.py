"""What a whole evaluation process spends beyond its backbone passes, on a set so small that the rest is what shows.

    python benchmarks/bench_startup.py                      # 40 pairs over 5 images, ViT-B/14 at 518 px, CPU
    python benchmarks/bench_startup.py --device cuda

Runs `python evaluate.py` on the set (random weights saved as a checkpoint, so that its file is hashed and the
feature cache is used) from a cold and then a warm cache, each in a new process, and prints: the process's wall
time, the backbone's own time for the 5 images (one batched pass, measured here), the rest, and how the run
splits it (start-up before the run: interpreter, imports, argument parsing; reading the cache; matching; the
results folder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helper_functions import preprocess_image  # noqa: E402
from models import create_backbone, save_finetuned  # noqa: E402
from semcorr.data.geometry import Preprocess  # noqa: E402


def write_pairs(folder: Path, images: int, pairs: int, rng: np.random.Generator) -> Path:
    """`images` random JPEGs and a custom pairs file of `pairs` pairs among them, 10 keypoints each."""
    names = []
    for i in range(images):
        w, h = int(rng.integers(300, 501)), int(rng.integers(250, 501))
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(folder / f"{i}.jpg", quality=90)
        names.append((f"{i}.jpg", (w, h)))
    entries = []
    for k in range(pairs):
        (src, ssize), (trg, tsize) = (names[j] for j in rng.choice(images, 2, replace=False))
        entries.append({"source": src, "target": trg, "pair_id": str(k),
                        "source_kps": (rng.uniform(0, 1, (10, 2)) * (np.array(ssize) - 1)).tolist(),
                        "target_kps": (rng.uniform(0, 1, (10, 2)) * (np.array(tsize) - 1)).tolist(),
                        "target_bbox": [0, 0, tsize[0] - 1, tsize[1] - 1]})  # fmt: skip
    path = folder / "pairs.json"
    path.write_text(json.dumps(entries))
    return path


def backbone_seconds(checkpoint: Path, folder: Path, images: int, size: int, device: str) -> float:
    """One batched forward pass of the images, preprocessed beforehand (the best of 3)."""
    backbone = create_backbone(checkpoint=str(checkpoint), device=device)
    prep = Preprocess.create(size, backbone.patch_size, "squash")
    batch = torch.stack([preprocess_image(Image.open(folder / f"{i}.jpg").convert("RGB"), prep) for i in range(images)])
    batch = batch.to(backbone.device)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            t0 = time.perf_counter()
            backbone(batch)
            if backbone.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dinov2")
    ap.add_argument("--image-size", type=int, default=518)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pairs = write_pairs(folder, args.images, args.pairs, np.random.default_rng(0))
        checkpoint = folder / "random.pt"
        save_finetuned(create_backbone(args.model, weights="random"), checkpoint, {"note": "random weights"})
        forward = backbone_seconds(checkpoint, folder, args.images, args.image_size, args.device)
        command = [sys.executable, str(ROOT / "evaluate.py"), "--checkpoint", str(checkpoint), "--dataset", "custom",
                   "--data-root", str(pairs), "--image-size", str(args.image_size), "--device", args.device,
                   "--cache-dir", str(folder / "cache"), "--output-dir", str(folder / "results"), "--num-workers",
                   "0", "--quiet"]  # fmt: skip
        print(f"{args.pairs} pairs over {args.images} images, {args.model} at {args.image_size} px on {args.device}; "
              f"backbone alone (one batched pass): {forward:.2f} s")  # fmt: skip
        for cache in ("cold", "warm"):
            t0 = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            run = max((folder / "results").iterdir(), key=lambda p: p.stat().st_mtime)
            t = json.loads((run / "metrics.json").read_text())["timings"]
            backbone = forward if cache == "cold" else 0.0
            rest = wall - t["startup_s"] - t["extraction_s"] - t["cache_read_s"] - t["matching_s"]
            print(
                f"{cache} cache: process {wall:.2f} s, beyond the backbone {wall - backbone:.2f} s = start-up "
                f"{t['startup_s']:.2f} s + features beyond the backbone {t['extraction_s'] - backbone:.2f} s + cache "
                f"read {t['cache_read_s']:.2f} s + matching and PCK {t['matching_s']:.2f} s + the rest (weights, "
                f"folder, exit) {rest:.2f} s"
            )


if __name__ == "__main__":
    main()
