"""Tiny datasets written at test time in the exact on-disk formats of SPair-71k, SPair-U, PF-Pascal,
PF-Willow, AP-10K and custom pairs files, from a description of images and pairs.

    images = fake_images("cat", 3, size=(48, 36), num_kps=5)
    root = make_spair(tmp_path / "SPair-71k", fake_pairs(images, split="test"))
    pairset = load_pairs("spair", root=root, split="test")
    # pairset.pairs[i] matches pairs[i].expected() (PF-Pascal test: expected(positional_ids=True))

A FakeImage describes the image as `pairs.load_image` returns it: size (W, H) and keypoints in
0-based pixel centres. The writers convert to each format's own conventions (MATLAB 1-based
coordinates for PF-Pascal and PF-Willow, stored pixels + EXIF tag for `orientation` != 1). Unless
`pixels` is given, an image is a smooth colour ramp with a 3x3 square of colour `KP_COLOURS[id]`
centred on each keypoint, so tests can check that image and keypoints agree.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

EXIF_ORIENTATION_TAG = 0x0112
# PIL operation that undoes each EXIF orientation (exif_transpose applies the inverse of these).
UNDO_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
KP_COLOURS = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 128, 0), (128, 0, 255), (0, 128, 64), (128, 64, 0), (64, 0, 128), (255, 255, 255),
]  # fmt: skip
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
SPAIR_FLAGS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion", "mirror")


@dataclass
class FakeImage:
    """One image as loaded: (W, H), keypoint id -> (x, y) 0-based (absent = not visible)."""

    name: str
    category: str
    size: tuple[int, int] = (48, 36)
    kps: dict[int, tuple[float, float]] = field(default_factory=dict)
    bbox: tuple[float, float, float, float] | None = None  # default: around the keypoints (or the image: see box)
    orientation: int = 1  # EXIF orientation of the file written (not for SPair)
    pixels: Image.Image | None = None  # content instead of the colour ramp with markers
    azimuth: int = 0  # SPair's viewpoint bin (0-7, ImageAnnotation azimuth_id)

    def box(self) -> tuple[float, float, float, float]:
        if self.bbox is not None:
            return self.bbox
        xy = np.array(list(self.kps.values()) or [(0.0, 0.0)])
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        if (hi <= lo).any():  # no keypoints, or a box without width or height around them: the whole image
            return (0.0, 0.0, self.size[0] - 1.0, self.size[1] - 1.0)
        return (*map(float, lo), *map(float, hi))

    def stored_size(self) -> tuple[int, int]:
        w, h = self.size
        return (h, w) if self.orientation >= 5 else (w, h)

    def stored_point(self, x: float, y: float) -> tuple[float, float]:
        """Where (x, y) of the loaded image lies on the stored (un-rotated) pixels."""
        w1, h1 = self.size[0] - 1, self.size[1] - 1
        return {
            1: (x, y), 2: (w1 - x, y), 3: (w1 - x, h1 - y), 4: (x, h1 - y),
            5: (y, x), 6: (y, w1 - x), 7: (h1 - y, w1 - x), 8: (h1 - y, x),
        }[self.orientation]  # fmt: skip

    def stored_kps(self) -> dict[int, tuple[float, float]]:
        return {i: self.stored_point(*xy) for i, xy in self.kps.items()}

    def stored_box(self) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = self.box()
        (ax, ay), (bx, by) = self.stored_point(x1, y1), self.stored_point(x2, y2)
        return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


@dataclass
class FakePair:
    src: FakeImage
    trg: FakeImage
    split: str = "test"
    flags: dict[str, int] = field(default_factory=dict)

    def common_ids(self) -> list[int]:
        return sorted(set(self.src.kps) & set(self.trg.kps))

    def expected(self, positional_ids: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(src_kps, trg_kps, kp_ids) a loader should return: keypoints visible in both, by id."""
        ids = self.common_ids()
        src = np.array([self.src.kps[i] for i in ids], dtype=np.float32).reshape(-1, 2)
        trg = np.array([self.trg.kps[i] for i in ids], dtype=np.float32).reshape(-1, 2)
        return src, trg, [str(n if positional_ids else i) for n, i in enumerate(ids)]


def fake_images(
    category: str,
    count: int,
    size: tuple[int, int] = (48, 36),
    num_kps: int = 5,
    seed: int = 0,
    missing: int = 0,
) -> list[FakeImage]:
    """`count` images with `num_kps` integer keypoints at random, `missing` of them left out per image."""
    rng = np.random.default_rng(seed)
    images = []
    for n in range(count):
        xs = rng.integers(2, size[0] - 2, num_kps)
        ys = rng.integers(2, size[1] - 2, num_kps)
        hidden = set(rng.choice(num_kps, missing, replace=False).tolist()) if missing else set()
        kps = {i: (float(xs[i]), float(ys[i])) for i in range(num_kps) if i not in hidden}
        images.append(FakeImage(f"{category[:3]}_{seed:02d}{n:03d}", category, size, kps))
    return images


def fake_pairs(images: list[FakeImage], split: str = "test") -> list[FakePair]:
    """All ordered pairs of different images."""
    return [FakePair(a, b, split) for a in images for b in images if a is not b]


def render(image: FakeImage) -> Image.Image:
    """The loaded (display) content: a colour ramp with a 3x3 marker of KP_COLOURS[id] per keypoint."""
    if image.pixels is not None:
        assert image.pixels.size == image.size, "pixels must have the FakeImage's size"
        return image.pixels.convert("RGB")
    w, h = image.size
    u, v = np.meshgrid(np.linspace(40, 120, w), np.linspace(40, 120, h))
    rgb = np.stack([u, v, (u + v) / 2], axis=-1).astype(np.uint8)
    for i, (x, y) in image.kps.items():
        cx, cy = round(x), round(y)
        rgb[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2] = KP_COLOURS[i % len(KP_COLOURS)]
    return Image.fromarray(rgb)


def write_image(path: Path, image: FakeImage) -> Path:
    """Write the image file: stored pixels plus an EXIF orientation tag when orientation != 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = render(image)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    if image.orientation != 1:
        pixels = pixels.transpose(UNDO_ORIENTATION[image.orientation])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = image.orientation
        options["exif"] = exif
    pixels.save(path, **options)
    return path


def unique_images(pairs: list[FakePair]) -> list[FakeImage]:
    seen: dict[tuple[str, str], FakeImage] = {}
    for pair in pairs:
        for image in (pair.src, pair.trg):
            seen.setdefault((image.category, image.name), image)
    return list(seen.values())


# ---- SPair-71k ---------------------------------------------------------------------------------


def spair_pair_name(number: int, pair: FakePair) -> str:
    return f"{number:06d}-{pair.src.name}-{pair.trg.name}:{pair.src.category}"


def make_spair(
    root: Path,
    pairs: list[FakePair] | None = None,
    layouts: tuple[str, ...] = ("large", "small"),
    windows_names: bool = False,
) -> Path:
    """SPair-71k at `root` (the folder holding JPEGImages/ ...). Layout `large` lists every pair of
    a split, `small` every other one. `windows_names` writes annotation files with '_' for ':'."""
    pairs = default_pairs("spair") if pairs is None else pairs
    for image in unique_images(pairs):
        assert image.orientation == 1, "SPair-71k images carry no EXIF orientation"
        write_image(root / "JPEGImages" / image.category / f"{image.name}.jpg", image)
        n = 1 + max(image.kps, default=-1)
        kps = {str(i): list(image.kps[i]) if i in image.kps else None for i in range(n)}
        _write_json(root / "ImageAnnotation" / image.category / f"{image.name}.json", {
            "filename": f"{image.name}.jpg", "image_width": image.size[0], "image_height": image.size[1],
            "image_depth": 3, "category": image.category, "pose": "Unspecified", "truncated": 0,
            "occluded": 0, "difficult": 0, "bndbox": list(image.box()), "azimuth_id": image.azimuth, "kps": kps,
        })  # fmt: skip
    for split in ("trn", "val", "test"):
        names = []
        for number, pair in enumerate([p for p in pairs if p.split == split], 1):
            name = spair_pair_name(number, pair)
            names.append(name)
            file_name = name.replace(":", "_") if windows_names else name
            _write_json(root / "PairAnnotation" / split / f"{file_name}.json", _spair_pair(number, name, pair))
        for layout in layouts:
            listed = names if layout == "large" else names[::2]
            path = root / "Layout" / layout / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{n}\n" for n in listed))
    return root


def _spair_pair(number: int, name: str, pair: FakePair) -> dict:
    src, trg, ids = pair.expected()
    return {
        "pair_id": number, "filename": name, "src_imname": f"{pair.src.name}.jpg",
        "trg_imname": f"{pair.trg.name}.jpg", "category": pair.src.category,
        "src_imsize": [*pair.src.size, 3], "trg_imsize": [*pair.trg.size, 3],
        "src_bndbox": list(pair.src.box()), "trg_bndbox": list(pair.trg.box()),
        "src_pose": "Unspecified", "trg_pose": "Unspecified",
        "src_kps": src.tolist(), "trg_kps": trg.tolist(), "kps_ids": ids,
        **{flag: pair.flags.get(flag, 0) for flag in SPAIR_FLAGS},
    }  # fmt: skip


# ---- SPair-U -----------------------------------------------------------------------------------

SPAIR_U_SLOTS = 30  # every ExtraImageAnnotation's kps has "0".."29", null where not visible (Jamais Vu reads all 30)
SPAIR_U_SIZES = ((420, 315), (315, 420), (210, 210), (840, 560), (210, 105))  # 840-canvas scales of 2, 4 and 1


def make_spair_u(root: Path, pairs: list[FakePair], windows_names: bool = False) -> Path:
    """SPair-U's annotations in the SPair-71k folder `root`: ExtraImageAnnotation/<category>/<imname>.json (each
    image's keypoints in 30 slots) and ExtraPairAnnotation/test/<pair name>.json (SPair-71k's pair format), with
    the images where they are not there yet (make_spair writes SPair-71k's own files)."""
    for image in unique_images(pairs):
        path = root / "JPEGImages" / image.category / f"{image.name}.jpg"
        if not path.exists():
            write_image(path, image)
        kps = {str(i): list(image.kps[i]) if i in image.kps else None for i in range(SPAIR_U_SLOTS)}
        _write_json(root / "ExtraImageAnnotation" / image.category / f"{image.name}.json", {
            "filename": f"{image.name}.jpg", "image_width": image.size[0], "image_height": image.size[1],
            "category": image.category, "bndbox": list(image.box()), "kps": kps,
        })  # fmt: skip
    for number, pair in enumerate(pairs, 1):
        name = spair_pair_name(number, pair)
        file_name = name.replace(":", "_") if windows_names else name
        _write_json(root / "ExtraPairAnnotation" / "test" / f"{file_name}.json", _spair_pair(number, name, pair))
    return root


def synthetic_spair_u(seed: int = 0) -> list[FakePair]:
    """SPair-U test pairs on which each rule of Jamais Vu's loader and metrics has a case: three categories, their
    files named out of order; slots beyond 9 (ids sort as numbers); keypoints visible in the source only (cat, dog;
    in chair every image shows every slot, so the reference's KAP is right there as it stands); image sizes whose
    840 canvas is an exact scale (2, 4, 1) with and without padding; integer keypoints on distinct canvas patches
    of 14 px within each image, two of them neighbours; boxes whose sides are no multiple of 5 (no patch corner lies exactly at
    alpha * L)."""
    rng = np.random.default_rng(seed)
    slots = {"dog": [4, 5, 9, 13, 21, 22], "cat": [0, 3, 7, 11, 12, 20, 25], "chair": [1, 2, 10, 17, 29]}
    pairs = []
    for c, (category, pool) in enumerate(slots.items()):
        images = []
        for n in range(4):
            shown = pool if category == "chair" else sorted(rng.choice(pool, len(pool) - 2, replace=False).tolist())
            images.append(_spair_u_image(f"{category}_{n:02d}", category, SPAIR_U_SIZES[(c + n) % 5], shown, rng))
        order = rng.permutation(12)[:6]
        pairs += [[FakePair(a, b, "test") for a in images for b in images if a is not b][i] for i in order]
    return pairs


def _spair_u_image(name: str, category: str, size: tuple[int, int], shown: list[int], rng) -> FakeImage:
    """An image with integer keypoints in slots `shown`, each on its own patch of the 840 canvas (the first two on
    neighbouring patches: a prediction between them can be within a threshold of both), and a box."""
    w, h = size
    scale = 840 // max(w, h)
    offset = ((840 - w * scale) // 2, (840 - h * scale) // 2)
    step = -(-14 // scale)  # one canvas patch to the right
    x, y = int(rng.integers(3, w - 3 - step)), int(rng.integers(3, h - 3))
    kps: dict[int, tuple[float, float]] = {shown[0]: (float(x), float(y)), shown[1]: (float(x + step), float(y))}
    while len(kps) < len(shown):
        x, y = int(rng.integers(3, w - 3)), int(rng.integers(3, h - 3))
        patch = ((x * scale + offset[0]) // 14, (y * scale + offset[1]) // 14)
        if all(((a * scale + offset[0]) // 14, (b * scale + offset[1]) // 14) != patch for a, b in kps.values()):
            kps[shown[len(kps)]] = (float(x), float(y))
    xy = np.array(list(kps.values()))
    x1, y1 = np.maximum(xy.min(axis=0) - rng.integers(1, 4, 2), 0)
    x2, y2 = np.minimum(xy.max(axis=0) + rng.integers(1, 4, 2), (w - 1, h - 1))
    x1, y1 = x1 - ((x2 - x1) % 5 == 0) * (x1 > 0), y1 - ((y2 - y1) % 5 == 0) * (y1 > 0)
    return FakeImage(name, category, size, kps, bbox=tuple(float(v) for v in (x1, y1, x2, y2)))


# ---- PF-Pascal ---------------------------------------------------------------------------------


def make_pf_pascal(
    root: Path,
    pairs: list[FakePair] | None = None,
    trn_csv: str = "trn_pairs.csv",
    annotations: bool = True,
) -> Path:
    """PF-Pascal at `root` (holding PF-dataset-PASCAL/ and the pair CSVs); categories must be VOC
    classes. The test CSV carries the common keypoints, trn/val CSVs a `flip` column (pair.flags)."""
    pairs = default_pairs("pf-pascal") if pairs is None else pairs
    data = root / "PF-dataset-PASCAL"
    images = unique_images(pairs)
    rows_per_class = {
        i.category: 1 + max(max(j.kps, default=-1) for j in images if j.category == i.category) for i in images
    }
    for image in images:
        write_image(data / "JPEGImages" / f"{image.name}.jpg", image)
        if annotations:
            kps = np.full((rows_per_class[image.category], 2), np.nan)
            for i, xy in image.stored_kps().items():
                kps[i] = np.array(xy) + 1  # MATLAB 1-based
            bbox = np.array([image.stored_box()]) + 1
            path = data / "Annotations" / image.category / f"{image.name}.mat"
            path.parent.mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(str(path), {"kps": kps, "bbox": bbox})
    for split, file_name in (("trn", trn_csv), ("val", "val_pairs.csv"), ("test", "test_pairs.csv")):
        header = ["source_image", "target_image", "class"] + (["XA", "YA", "XB", "YB"] if split == "test" else ["flip"])
        rows = []
        for pair in (p for p in pairs if p.split == split):
            row = [f"PF-dataset-PASCAL/JPEGImages/{i.name}.jpg" for i in (pair.src, pair.trg)]
            row.append(str(VOC_CLASSES.index(pair.src.category) + 1))
            if split == "test":
                for image in (pair.src, pair.trg):
                    stored = image.stored_kps()
                    for axis in (0, 1):
                        row.append(";".join(repr(stored[i][axis] + 1) for i in pair.common_ids()))
            else:
                row.append(str(pair.flags.get("flip", 0)))
            rows.append(row)
        _write_csv(root / file_name, header, rows)
    return root


# ---- PF-Willow ---------------------------------------------------------------------------------


def make_pf_willow(
    root: Path,
    pairs: list[FakePair] | None = None,
    path_prefix: str = "PF-dataset",
    image_dir: str = "PF-dataset",
) -> Path:
    """PF-Willow at `root`: images in `root/image_dir/<class>/<name>.png`, test_pairs.csv listing
    them as `path_prefix/<class>/<name>.png`. Every image must have the same keypoint ids."""
    pairs = default_pairs("pf-willow") if pairs is None else pairs
    ids = sorted(pairs[0].src.kps)
    for image in unique_images(pairs):
        assert sorted(image.kps) == ids, "PF-Willow images all have the same keypoints"
        write_image(root / image_dir / image.category / f"{image.name}.png", image)
    n = range(1, len(ids) + 1)
    header = ["imageA", "imageB"] + [f"{c}{s}{i}" for s in "AB" for c in "XY" for i in n]
    rows = []
    for pair in pairs:
        row = ["/".join(filter(None, (path_prefix, i.category, f"{i.name}.png"))) for i in (pair.src, pair.trg)]
        for image in (pair.src, pair.trg):
            stored = image.stored_kps()
            row += [repr(stored[i][axis] + 1) for axis in (0, 1) for i in ids]  # MATLAB 1-based
        rows.append(row)
    _write_csv(root / "test_pairs.csv", header, rows)
    return root


# ---- AP-10K -----------------------------------------------------------------------------------

AP10K_KEYPOINTS = (
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow", "left_front_paw",
    "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee", "left_back_paw", "right_hip",
    "right_knee", "right_back_paw",
)  # fmt: skip


@dataclass
class FakeAnimal:
    """One AP-10K image and its animal: keypoint id (0..16) -> (x, y, visibility 1 or 2) of the loaded image."""

    image_id: int
    family: str
    species: str
    kps: dict[int, tuple[float, float, int]] = field(default_factory=dict)
    size: tuple[int, int] = (48, 36)
    bbox: tuple[float, float, float, float] | None = None  # COCO x, y, w, h; default: around the keypoints
    split: str = "train"  # the annotation file it is in
    num_keypoints: int | None = None  # the stored field (default: the labelled keypoints)
    iscrowd: int = 0
    orientation: int = 1

    @property
    def stem(self) -> str:
        return f"{self.image_id:012d}"

    def image(self) -> FakeImage:
        kps = {i: (x, y) for i, (x, y, _) in self.kps.items()}
        return FakeImage(self.stem, self.species, self.size, kps, orientation=self.orientation)

    def coco_bbox(self) -> tuple[float, float, float, float]:
        if self.bbox is not None:
            return self.bbox
        x1, y1, x2, y2 = self.image().box()
        return (x1, y1, x2 - x1, y2 - y1)

    def annotation(self, category_id: int) -> dict:
        """Its COCO annotation, on the stored pixels."""
        image = self.image()
        keypoints = [0.0] * 3 * len(AP10K_KEYPOINTS)
        for i, (x, y, v) in self.kps.items():
            keypoints[3 * i : 3 * i + 3] = [*image.stored_point(x, y), v]
        x, y, w, h = self.coco_bbox()
        (ax, ay), (bx, by) = image.stored_point(x, y), image.stored_point(x + w, y + h)
        labelled = len(self.kps) if self.num_keypoints is None else self.num_keypoints
        return {
            "id": 10_000_000 + self.image_id, "image_id": self.image_id, "category_id": category_id,
            "bbox": [min(ax, bx), min(ay, by), abs(bx - ax), abs(by - ay)], "area": w * h,
            "iscrowd": self.iscrowd, "num_keypoints": labelled, "keypoints": keypoints,
        }  # fmt: skip


def ap10k_files(animals: list[FakeAnimal]) -> dict[str, dict]:
    """The content of ap10k-{train,val,test}-split1.json: each animal's image and annotation in its file;
    categories numbered in (family, species) order, listed in every file."""
    kinds = sorted({(a.family, a.species) for a in animals})
    ids = {kind: n for n, kind in enumerate(kinds, 1)}
    categories = [{"id": ids[(f, s)], "name": s, "supercategory": f, "keypoints": list(AP10K_KEYPOINTS),
                   "skeleton": []} for f, s in kinds]  # fmt: skip
    files = {split: {"info": {"description": "AP-10k"}, "images": [], "annotations": [], "categories": categories}
             for split in ("train", "val", "test")}  # fmt: skip
    for a in animals:
        w, h = a.image().stored_size()
        files[a.split]["images"].append({"license": 1, "id": a.image_id, "file_name": f"{a.stem}.jpg", "width": w,
                                         "height": h, "background": 1})  # fmt: skip
        files[a.split]["annotations"].append(a.annotation(ids[(a.family, a.species)]))
    return files


def make_ap10k(
    root: Path,
    animals: list[FakeAnimal] = (),
    crowd: tuple[int, ...] = (),
    files: dict[str, dict] | None = None,
    images: bool = True,
) -> Path:
    """AP-10K as released at `root` (annotations/, data/) with GeoAware-SC's crowd list `crowd` (image ids)
    in it; `files`: the annotation files' content instead of ap10k_files(animals)."""
    for split, content in (files or ap10k_files(animals)).items():
        _write_json(root / "annotations" / f"ap10k-{split}-split1.json", content)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for animal in animals if images else ():
        write_image(root / "data" / f"{animal.stem}.jpg", animal.image())
    (root / "ap-10k_is_crowd.txt").write_text("".join(f"{i:012d}\n" for i in crowd))
    return root


def fake_animals(family: str, species: str, ids: list[int], rng: np.random.Generator) -> list[FakeAnimal]:
    """Animals of images `ids` with random sizes (landscape, portrait, square), files and labelled keypoints
    (each with probability 0.8, one in ten of visibility 1)."""
    animals = []
    for image_id in ids:
        w, h = (int(v) for v in rng.choice([(64, 40), (40, 64), (48, 48), (72, 50)]))
        labelled = np.flatnonzero(rng.random(len(AP10K_KEYPOINTS)) < 0.8)
        kps = {int(i): (float(rng.integers(1, w - 1)), float(rng.integers(1, h - 1)), 1 if rng.random() < 0.1 else 2)
               for i in labelled}  # fmt: skip
        split = str(rng.choice(["train", "val", "test"], p=[0.7, 0.1, 0.2]))
        animals.append(FakeAnimal(image_id, family, species, kps, (w, h), split=split))
    return animals


def synthetic_ap10k(seed: int = 0) -> tuple[dict[str, dict], tuple[int, ...]]:
    """An AP-10K annotation set (the three files' content) and crowd list on which every rule of GeoAware-SC's
    benchmark has a case: a species with more training images than its 50-per-image pair cap allows, the caps
    of the cross sets reached, families of one species, a species whose images are all left out, images with
    two animals (in one file, and across files), annotations of unknown images and categories, crowd-listed
    images, `iscrowd` without the list, stored `num_keypoints` disagreeing with the keypoints, visibility 1."""
    rng = np.random.default_rng(seed)
    counts = {("Felidae", "cat"): 185, ("Felidae", "king cheetah"): 13, ("Felidae", "lion"): 42,
              ("Canidae", "dog"): 55, ("Canidae", "fox"): 53, ("Canidae", "wolf"): 51, ("Bovidae", "antelope"): 9,
              ("Ursidae", "black bear"): 7, ("Ursidae", "polar bear"): 4, ("Cervidae", "deer"): 12}  # fmt: skip
    ids = iter(rng.choice(np.arange(1, 90_000), sum(counts.values()), replace=False).tolist())
    animals = {kind: fake_animals(*kind, [next(ids) for _ in range(count)], rng) for kind, count in counts.items()}
    cats, dogs, bears = animals[("Felidae", "cat")], animals[("Canidae", "dog")], animals[("Ursidae", "polar bear")]
    for few in animals[("Cervidae", "deer")][:4]:  # 3 or 4 keypoints: few pairs share three
        few.kps = dict(list(few.kps.items())[: 3 + few.image_id % 2])
    cats[5].num_keypoints, cats[6].num_keypoints = 2, 5  # the stored field decides, not the keypoints
    cats[6].kps = dict(list(cats[6].kps.items())[:2])
    bears[0].num_keypoints = bears[1].num_keypoints = 1
    cats[7].iscrowd = 1  # COCO's field is not read
    crowd = tuple(a.image_id for a in (*cats[8:11], *bears[2:4], dogs[3]))
    dogs[13].split = "val"
    files = ap10k_files([a for group in animals.values() for a in group])
    category = {(c["supercategory"], c["name"]): c["id"] for c in files["train"]["categories"]}
    cat, dog = category[("Felidae", "cat")], category[("Canidae", "dog")]
    # a second animal in an image: after its first in the same file (the first is kept), or in a file read
    # before the image's own (files are read train, test, val: the test file's is kept for a val image)
    files[cats[12].split]["annotations"].append({**dogs[12].annotation(dog), "image_id": cats[12].image_id})
    files["test"]["annotations"].insert(0, {**cats[13].annotation(cat), "image_id": dogs[13].image_id})
    files["val"]["annotations"].append({**cats[14].annotation(999), "image_id": 95_001})  # an unknown category
    files["train"]["images"].append({"id": 95_001, "file_name": "000000095001.jpg", "width": 40, "height": 40})
    files["test"]["annotations"].append({**cats[15].annotation(cat), "image_id": 95_002})  # an unknown image
    return files, crowd


# ---- custom pairs ------------------------------------------------------------------------------


def make_custom(folder: Path, pairs: list[FakePair], fmt: str = "json", keypoints: bool = True) -> Path:
    """A custom pairs file (`pairs.json` or `pairs.csv`) in `folder`, images in folder/images/."""
    entries = []
    for pair in pairs:
        for image in (pair.src, pair.trg):
            write_image(folder / "images" / f"{image.name}.png", image)
        entry = {
            "source": f"images/{pair.src.name}.png",
            "target": f"images/{pair.trg.name}.png",
            "category": pair.src.category,
        }
        src, trg, ids = pair.expected()
        if keypoints:
            entry.update(source_kps=src.tolist(), target_kps=trg.tolist(), kp_ids=ids, target_bbox=list(pair.trg.box()))
        entries.append(entry)
    if fmt == "json":
        return _write_json(folder / "pairs.json", {"pairs": entries})
    header = ["source", "target", "category"] + (
        ["source_kps", "target_kps", "kp_ids", "target_bbox"] if keypoints else []
    )
    rows = []
    for e in entries:
        row = [e["source"], e["target"], e["category"]]
        if keypoints:
            row += ["; ".join(f"{x} {y}" for x, y in e[k]) for k in ("source_kps", "target_kps")]
            row += ["; ".join(e["kp_ids"]), " ".join(map(str, e["target_bbox"]))]
        rows.append(row)
    return _write_csv(folder / "pairs.csv", header, rows)


# ---- defaults and writers ----------------------------------------------------------------------


def default_pairs(dataset: str) -> list[FakePair]:
    """Two categories x 3 images, every ordered pair in each split the dataset has."""
    categories, num_kps, missing = {
        "spair": (("cat", "dog"), 6, 1),
        "pf-pascal": (("cat", "dog"), 6, 1),
        "pf-willow": (("car(G)", "duck(S)"), 10, 0),
    }[dataset]
    splits = ("test",) if dataset == "pf-willow" else ("trn", "val", "test")
    pairs = []
    for s, split in enumerate(splits):
        for c, category in enumerate(categories):
            images = fake_images(category, 3, num_kps=num_kps, seed=10 * s + c, missing=missing)
            pairs += fake_pairs(images, split)
    return pairs


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
