"""The real published pair lists (gzip copies in tests/fixtures/datasets/): names and counts as the
datasets define them, and the loaders reading them in full."""

import csv
import gzip
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import pf_pascal
from semcorr.data.datasets import load_pairs
from SPair71k import read_layout

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
SPAIR_CATEGORIES = {
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
}  # fmt: skip


def fixture_text(relative: str) -> str:
    return gzip.decompress((FIXTURES / f"{relative}.gz").read_bytes()).decode()


def spair_layout(tmp_path: Path, layout: str, split: str) -> Path:
    path = tmp_path / "SPair-71k" / "Layout" / layout / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fixture_text(f"spair71k/Layout/{layout}/{split}.txt"))
    return path


@pytest.mark.parametrize(
    ("layout", "split", "num_pairs", "num_files", "num_names"),
    [("large", "trn", 53_340, 997, 986), ("large", "val", 5_384, 322, 322),
     ("small", "trn", 10_652, 997, 986), ("small", "val", 1_070, 322, 322)],
)  # fmt: skip
def test_spair_layout_names_and_counts(tmp_path, layout, split, num_pairs, num_files, num_names):
    names = read_layout(spair_layout(tmp_path, layout, split))
    assert len(names) == len({n.name for n in names}) == num_pairs
    assert {n.category for n in names} == SPAIR_CATEGORIES
    files = {(n.category, image) for n in names for image in (n.src, n.trg)}
    assert len(files) == num_files  # an image is a category folder and a name together ...
    assert len({image for _, image in files}) == num_names  # ... some names are in two folders


def test_spair_small_layout_is_a_subset_of_large(tmp_path):
    for split in ("trn", "val"):
        small = {n.name for n in read_layout(spair_layout(tmp_path / "s", "small", split))}
        large = {n.name for n in read_layout(spair_layout(tmp_path / "l", "large", split))}
        assert small < large


def test_spair_loads_the_real_val_list_from_windows_named_annotations(tmp_path):
    """All 5,384 large val pairs, annotation files named with '_' (auto-detected).

    The listing speed is measured by benchmarks/bench_datasets.py, not here."""
    layout = spair_layout(tmp_path, "large", "val")
    root = layout.parents[2]
    ann_dir = root / "PairAnnotation" / "val"
    ann_dir.mkdir(parents=True)
    for number, name in enumerate(read_layout(layout), 1):
        kps = [[number % 7, 3], [5, 5]]
        ann = {
            "pair_id": number, "category": name.category, "src_imname": f"{name.src}.jpg",
            "trg_imname": f"{name.trg}.jpg", "src_imsize": [500, 375, 3], "trg_imsize": [500, 375, 3],
            "src_bndbox": [1, 2, 300, 200], "trg_bndbox": [3, 4, 100, 400], "src_kps": kps,
            "trg_kps": kps, "kps_ids": ["0", "4"], "mirror": 0, "viewpoint_variation": number % 3,
            "scale_variation": 0, "truncation": 0, "occlusion": 1,
        }  # fmt: skip
        (ann_dir / f"{name.name.replace(':', '_')}.json").write_text(json.dumps(ann))
        for image in (name.src, name.trg):
            path = root / "JPEGImages" / name.category / f"{image}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()  # listing pairs must not open images
    ps = load_pairs("spair", root=root, split="val")
    assert len(ps.pairs) == 5_384 and len(ps.unique_images()) == 322
    assert ps.pairs[0].pair_id == layout.read_text().split()[0]
    assert Counter(p.flags["viewpoint_variation"] for p in ps.pairs) == Counter(n % 3 for n in range(1, 5_385))
    assert ps.skipped == {} and ps.clamped_keypoints == 0


@pytest.mark.parametrize(("split", "num_pairs", "num_images"), [("trn", 2_940, 1_001), ("val", 308, 521)])
def test_pf_pascal_loads_the_real_pair_lists(tmp_path, split, num_pairs, num_images):
    """The published train_pairs.csv / val_pairs.csv with generated images and .mat annotations."""
    file_name = {"trn": "train_pairs.csv", "val": "val_pairs.csv"}[split]
    text = fixture_text(f"pf_pascal/{file_name}")
    (tmp_path / file_name).write_text(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 9, 9)).save(jpeg, "JPEG")
    kps = np.array([[3.0, 4.0], [np.nan, np.nan], [40.0, 30.0]])  # 1-based; row 1 missing
    (tmp_path / "PF-dataset-PASCAL" / "JPEGImages").mkdir(parents=True)
    for category in pf_pascal.CLASSES:
        (tmp_path / "PF-dataset-PASCAL" / "Annotations" / category).mkdir(parents=True)
    images = {(r[c], pf_pascal.CLASSES[int(r["class"]) - 1]) for r in rows for c in ("source_image", "target_image")}
    for image, category in images:
        (tmp_path / image).write_bytes(jpeg.getvalue())
        mat = tmp_path / "PF-dataset-PASCAL" / "Annotations" / category / f"{Path(image).stem}.mat"
        scipy.io.savemat(str(mat), {"kps": kps, "bbox": np.array([[2, 3, 40, 30]])})
    ps = load_pairs("pf-pascal", root=tmp_path, split=split)
    assert len(ps.pairs) == num_pairs and len(ps.unique_images()) == num_images
    assert len({p.pair_id for p in ps.pairs}) == num_pairs  # rows repeat in train: ids use the row
    assert Counter(p.category for p in ps.pairs) == Counter(pf_pascal.CLASSES[int(r["class"]) - 1] for r in rows)
    assert Counter(p.flags["flip"] for p in ps.pairs) == Counter(int(r["flip"]) for r in rows)
    pair = ps.pairs[0]
    assert pair.kp_ids == ["0", "2"] and pair.trg_bbox == (1.0, 2.0, 39.0, 29.0)
    np.testing.assert_array_equal(pair.src_kps, [[2, 3], [39, 29]])
    assert ps.clamped_keypoints == 0
