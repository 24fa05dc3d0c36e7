"""Time to list SPair-71k's 53,340 large training pairs (annotations parsed once, no image opened).

    python benchmarks/bench_datasets.py

Builds SPair-71k's on-disk layout in a temporary folder from the real `Layout/large/trn.txt`
(kept gzipped in tests/fixtures): one pair annotation JSON per pair with about 10 keypoints, and
empty image files (listing must not open images). Then times `load_pairs("spair", split="trn")`.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semcorr.data.datasets import load_pairs  # noqa: E402
from SPair71k import read_layout  # noqa: E402

LAYOUT = REPO / "tests" / "fixtures" / "datasets" / "spair71k" / "Layout" / "large" / "trn.txt.gz"


def write_spair(root: Path, layout_text: str, rng: np.random.Generator) -> int:
    """SPair-71k's folders with a pair annotation per listed pair and empty image files."""
    layout = root / "Layout" / "large" / "trn.txt"
    layout.parent.mkdir(parents=True)
    layout.write_text(layout_text)
    ann_dir = root / "PairAnnotation" / "trn"
    ann_dir.mkdir(parents=True)
    names = read_layout(layout)
    for number, name in enumerate(names, 1):
        k = int(rng.integers(3, 18))
        kps = rng.integers(0, 370, (2, k, 2)).tolist()
        ann = {
            "pair_id": number, "filename": name.name, "category": name.category,
            "src_imname": f"{name.src}.jpg", "trg_imname": f"{name.trg}.jpg",
            "src_imsize": [500, 375, 3], "trg_imsize": [500, 375, 3],
            "src_bndbox": [10, 20, 400, 300], "trg_bndbox": [30, 10, 480, 360],
            "src_kps": kps[0], "trg_kps": kps[1], "kps_ids": [str(i) for i in range(k)],
            "mirror": 0, "viewpoint_variation": 1, "scale_variation": 0, "truncation": 0, "occlusion": 0,
        }  # fmt: skip
        (ann_dir / f"{name.name}.json").write_text(json.dumps(ann))
        for image in (name.src, name.trg):
            path = root / "JPEGImages" / name.category / f"{image}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return len(names)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "SPair-71k"
        t0 = time.perf_counter()
        n = write_spair(root, gzip.open(LAYOUT, "rt").read(), np.random.default_rng(0))
        print(f"wrote {n} pair annotations in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        pairset = load_pairs("spair", root=root, split="trn")
        seconds = time.perf_counter() - t0
        print(
            f"listed {len(pairset.pairs)} pairs over {len(pairset.unique_images())} images "
            f"in {seconds:.2f} s ({len(pairset.pairs) / seconds:,.0f} pairs/s)"
        )


if __name__ == "__main__":
    main()
