"""The scenario of GeoAware-SC's golden predictions (tests/fixtures/geoaware_goldens/).

A small SPair-71k test split of two real categories (cat and chair, so that GeoAware-SC's left-right and
geometry-aware tables apply) and a small PF-Pascal test split, of textured images in several shapes: even
and odd padding on the 840 canvas, portrait, landscape and square, and mirror images whose keypoints are
relabelled through the left-right table. Masks for --flip-align mask in the layout GeoAware-SC's
preprocess_mask_sam.py writes (the 960 canvas, white inside the object's box). A tiny random DINOv2 whose
features skip the final norm, saved as a self-contained checkpoint.

benchmarks/make_geoaware_goldens.py builds it, runs GeoAware-SC's own functions on it and writes the goldens;
tests/test_protocol_geoaware.py builds it again and runs `--protocol geoaware` on it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from dataset_factory import FakeImage, FakePair, make_pf_pascal, make_spair
from model_factory import TINY
from PIL import Image

GOLDEN_DIR = Path(__file__).parent / "fixtures" / "geoaware_goldens"
KEYPOINT_GROUPS = json.loads((Path(__file__).parents[1] / "SPair71k" / "keypoint_groups.json").read_text())
MASK_CANVAS = 960  # preprocess_mask_sam.py's ANNO_SIZE
CANVAS = 840
WEIGHT_SEED = 7
# run -> dataset, our flags beside --protocol geoaware, and the reference's flags over its yaml for that dataset
RUNS = {
    "spair_window": ("spair", [], {"ADAPT_FLIP": False}),
    "spair_argmax": ("spair", ["--matcher", "argmax"], {"ADAPT_FLIP": False, "SOFT_EVAL": False}),
    "spair_gaussian": (
        "spair", ["--matcher", "geoaware-gaussian", "--sigma", "5"], {"ADAPT_FLIP": False, "SOFT_EVAL_WINDOW": -5}
    ),
    "spair_flip_mutual_nn": ("spair", ["--flip-align", "mutual-nn"], {"MUTUAL_NN": True}),
    "spair_flip_mask": ("spair", ["--flip-align", "mask"], {}),
    "pf-pascal_window": ("pf-pascal", [], {"LOAD": None}),
}  # fmt: skip
YAMLS = {"spair": "configs/eval_zero_shot_spair.yaml", "pf-pascal": "configs/eval_pascal.yaml"}
# category -> images: name, size (W, H), azimuth bin, the image it mirrors (None: its own texture)
SPAIR_IMAGES = {
    "cat": [
        ("cat_a", (150, 100), 1, None),  # landscape, even padding (560 rows)
        ("cat_b", (150, 100), 6, "cat_a"),  # its mirror image
        ("cat_c", (81, 120), 2, None),  # portrait, odd padding (567 columns)
        ("cat_d", (120, 81), 5, None),  # landscape, odd padding
        ("cat_e", (110, 110), 0, None),  # square
    ],
    "chair": [
        ("chair_f", (96, 128), 3, None),  # portrait, even padding (630 columns)
        ("chair_g", (96, 128), 4, "chair_f"),  # its mirror image
        ("chair_h", (140, 100), 7, None),
    ],
}
SPAIR_PAIRS = [
    ("cat_a", "cat_b"), ("cat_b", "cat_a"), ("cat_c", "cat_d"), ("cat_d", "cat_c"), ("cat_a", "cat_c"),
    ("cat_e", "cat_a"), ("cat_d", "cat_e"), ("chair_f", "chair_g"), ("chair_g", "chair_h"), ("chair_h", "chair_f"),
]  # fmt: skip
PASCAL_IMAGES = {"car": [("2008_000001", (130, 97)), ("2008_000002", (90, 121))],
                 "bird": [("2008_000003", (117, 117)), ("2008_000004", (140, 95))]}  # fmt: skip
SLOTS = {"cat": 15, "chair": 14}
PASCAL_KEYPOINTS = 8


def texture(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour texture (so that random-weight features tell places apart)."""
    w, h = size
    coarse = (rng.random((h // 6 + 1, w // 6 + 1, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))


def mirror_slot(category: str) -> dict[int, int]:
    """Each slot's left-right partner (itself on the axis), from SPair71k/keypoint_groups.json."""
    partner = {}
    for group in KEYPOINT_GROUPS["mirror"][category]:
        a, b = group if isinstance(group, list) else (group, group)
        partner |= {a: b, b: a}
    return partner


def spair_images(seed: int = 3) -> dict[str, FakeImage]:
    """The SPair images: keypoints at random (a few slots hidden, never at x = 0); a mirror image has the
    mirrored pixels and each keypoint at the mirrored place of its partner."""
    rng = np.random.default_rng(seed)
    images: dict[str, FakeImage] = {}
    for category, entries in SPAIR_IMAGES.items():
        for name, (w, h), azimuth, mirrors in entries:
            if mirrors is None:
                pixels = texture((w, h), rng)
                slots = [s for s in range(SLOTS[category]) if rng.random() > 0.2]
                kps = {s: (float(rng.integers(1, w - 1)), float(rng.integers(1, h - 1))) for s in slots}
            else:
                source = images[mirrors]
                pixels = np.asarray(source.pixels)[:, ::-1]
                partner = mirror_slot(category)
                kps = {partner.get(s, s): (w - 1 - x, y) for s, (x, y) in source.kps.items()}
            pixels = Image.fromarray(np.ascontiguousarray(pixels))
            images[name] = FakeImage(name, category, (w, h), kps, pixels=pixels, azimuth=azimuth)
    return images


def pascal_images(seed: int = 4) -> dict[str, FakeImage]:
    """The PF-Pascal images, every keypoint visible (so that each image's keypoint list is the same in all
    of its pairs, as GeoAware-SC's per-pair CSV reading needs for one list per image)."""
    rng = np.random.default_rng(seed)
    images = {}
    for category, entries in PASCAL_IMAGES.items():
        for name, (w, h) in entries:
            kps = {k: (float(rng.integers(1, w - 2)), float(rng.integers(1, h - 2))) for k in range(PASCAL_KEYPOINTS)}
            images[name] = FakeImage(name, category, (w, h), kps, pixels=Image.fromarray(texture((w, h), rng)))
    return images


def pascal_pairs(images: dict[str, FakeImage]) -> list[tuple[str, str]]:
    """Both orders of each class's two images."""
    out = []
    for entries in PASCAL_IMAGES.values():
        (a, _), (b, _) = entries
        out += [(a, b), (b, a)]
    return out


def build_spair(root: Path) -> Path:
    images = spair_images()
    pairs = [FakePair(images[s], images[t], "test") for s, t in SPAIR_PAIRS]
    return make_spair(root / "SPair-71k", pairs, layouts=("large",))


def build_pf_pascal(root: Path) -> Path:
    images = pascal_images()
    return make_pf_pascal(root / "pf_pascal", [FakePair(images[s], images[t], "test") for s, t in pascal_pairs(images)])


def canvas_box_mask(image: FakeImage) -> np.ndarray:
    """A 960x960 mask, white inside the image's box on the 960 canvas (what SAM gives for a box prompt,
    roughly)."""
    w, h = image.size
    scale = MASK_CANVAS / max(w, h)
    ox = (MASK_CANVAS - round(MASK_CANVAS * w / h)) // 2 if w < h else 0
    oy = (MASK_CANVAS - round(MASK_CANVAS * h / w)) // 2 if h < w else 0
    x1, y1, x2, y2 = image.box()
    mask = np.zeros((MASK_CANVAS, MASK_CANVAS), np.uint8)
    mask[int(y1 * scale) + oy : int(y2 * scale) + oy + 1, int(x1 * scale) + ox : int(x2 * scale) + ox + 1] = 255
    return mask


def masks() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each SPair image's mask and its mirror (np.flip of the canvas mask, as preprocess_mask_sam.py writes)."""
    return {name: (m, np.ascontiguousarray(m[:, ::-1])) for name, m in
            ((name, canvas_box_mask(image)) for name, image in spair_images().items())}  # fmt: skip


def write_masks(folder: Path) -> Path:
    """The masks as preprocess_mask_sam.py lays them out: <folder>/<category>/<stem>_mask[_flip].png."""
    images = spair_images()
    for name, (mask, flipped) in masks().items():
        out = folder / images[name].category
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(out / f"{name}_mask.png")
        Image.fromarray(flipped).save(out / f"{name}_mask_flip.png")
    return folder


def tiny_dinov2(folder: Path) -> Path:
    """A tiny random DINOv2 (patch 14) whose features are the last block's raw output, as a checkpoint."""
    from models import create_backbone, save_finetuned

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(WEIGHT_SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bb = create_backbone("dinov2", weights="random", device="cpu", final_norm=False, **TINY["dinov2"])
    return save_finetuned(bb, folder / "tiny_dinov2_no_final_norm.pt", {})


def weights_digest(path: Path) -> str:
    """sha256 of the checkpoint's tensors (not of the file, whose bytes depend on the torch version)."""
    digest = hashlib.sha256()
    for key, value in sorted(torch.load(path, weights_only=True)["state_dict"].items()):
        digest.update(key.encode())
        digest.update(value.float().numpy().tobytes())
    return digest.hexdigest()
