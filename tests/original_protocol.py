"""The scenario of the original project's golden predictions (tests/fixtures/original_goldens/).

Small SPair-71k and PF-Pascal sets of textured images, and random ViT-B weights in Meta's official
layout, built the same way (deterministically, with the suite's factories) by
benchmarks/make_original_goldens.py, which runs the original project's code on them, and by
tests/test_protocol_original.py, which runs `--protocol original` on them and compares.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from dataset_factory import FakeImage, fake_pairs, make_pf_pascal, make_spair
from model_factory import write_official_checkpoint
from PIL import Image

GOLDEN_DIR = Path(__file__).parent / "fixtures" / "original_goldens"
THRESHOLDS = (0.05, 0.1, 0.2)
WEIGHT_SEEDS = {"dinov2_vitb14": 1, "dinov3_vitb16": 2, "sam_vit_b": 3}
# run name -> model, dataset, matcher, window K, temperature T (the original's settings for that model)
RUNS = {
    "dinov2_spair_argmax": ("dinov2_vitb14", "spair", "argmax", None, None),
    "dinov2_spair_wsoftargmax": ("dinov2_vitb14", "spair", "wsoftargmax", 5, 0.2),
    "dinov2_pf-pascal_argmax": ("dinov2_vitb14", "pf-pascal", "argmax", None, None),
    "dinov3_spair_argmax": ("dinov3_vitb16", "spair", "argmax", None, None),
    "sam_spair_argmax": ("sam_vit_b", "spair", "argmax", None, None),
}
SIZES = [(120, 90), (96, 128), (140, 100), (110, 110)]


def textured_images(category: str, count: int, seed: int, num_kps: int = 12) -> list[FakeImage]:
    """`count` images of a smooth random texture (so that random-weight features tell places apart),
    with integer keypoints inside, 2 of them left out per image."""
    rng = np.random.default_rng(seed)
    images = []
    for n in range(count):
        w, h = SIZES[n % len(SIZES)]
        coarse = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
        pixels = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        xs, ys = rng.integers(1, w - 1, num_kps), rng.integers(1, h - 1, num_kps)
        hidden = set(rng.choice(num_kps, 2, replace=False).tolist())
        kps = {i: (float(xs[i]), float(ys[i])) for i in range(num_kps) if i not in hidden}
        images.append(FakeImage(f"{category[:3]}_{seed:02d}{n:03d}", category, (w, h), kps, pixels=pixels))
    return images


def build_spair(root: Path) -> Path:
    """SPair-71k test: 2 categories x 4 images, every ordered pair (24 pairs)."""
    pairs = [p for c, cat in enumerate(("cat", "dog")) for p in fake_pairs(textured_images(cat, 4, 10 + c), "test")]
    return make_spair(root / "SPair-71k", pairs, layouts=("large",))


def build_pf_pascal(root: Path) -> Path:
    """PF-Pascal test: 2 VOC classes x 4 images, every ordered pair (24 pairs)."""
    pairs = [p for c, cat in enumerate(("car", "bird")) for p in fake_pairs(textured_images(cat, 4, 20 + c), "test")]
    return make_pf_pascal(root / "pf_pascal", pairs)


def write_weights(folder: Path, name: str) -> Path:
    """Random ViT-B weights of `name` in Meta's official layout, under the official file name."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_official_checkpoint(folder, name, seed=WEIGHT_SEEDS[name])


def weights_digest(path: Path) -> str:
    """sha256 of the tensors of a checkpoint (not of the file, whose bytes depend on the torch version)."""
    digest = hashlib.sha256()
    for key, value in sorted(torch.load(path, weights_only=True).items()):
        digest.update(key.encode())
        digest.update(value.float().numpy().tobytes())
    return digest.hexdigest()
