"""Results folders for the report and analysis tests: two evaluations (argmax, soft-argmax) by the real
engine over a colour-coded SPair-71k set whose pairs carry difficulty flags, a hand-made run whose
PCK per difficulty level is known by hand, and runs with a chosen number of correct keypoints per pair
(counted_run: comparisons whose difference and bootstrap interval are known)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from dataset_factory import FakeImage, FakePair, make_spair
from synthetic import BOXES, colour_backbone, colour_config, render_object

from semcorr.config.settings import (
    BackboneSettings,
    DataSettings,
    EvalSettings,
    MatchSettings,
    MemberSettings,
    as_record,
)
from semcorr.data.datasets import load_pairs
from semcorr.engine.evaluation import evaluate
from semcorr.runs import folders
from semcorr.runs.metrics import meaning

FLAG_LEVELS = {"viewpoint_variation": 3, "scale_variation": 3, "truncation": 4, "occlusion": 4}


def colour_spair(root: Path, categories=("cat", "dog"), images: int = 4, kps: int = 8, seed: int = 0) -> Path:
    """SPair-71k on disk: per category, `images` colour-coded objects (synthetic.py) with `kps` keypoint
    ids at fixed object coordinates (2 hidden per image), every ordered pair, random difficulty flags."""
    rng = np.random.default_rng(seed)
    pairs = []
    for c, category in enumerate(categories):
        uv = rng.uniform(0.1, 0.9, (kps, 2))
        fakes = []
        for i in range(images):
            size, box = (200 + 10 * i, 160 - 5 * i), np.array(BOXES[i], float)
            xy = box[:2] + uv * (box[2:] - box[:2]) - 0.5
            hidden = set(rng.choice(kps, 2, replace=False).tolist())
            points = {k: (float(xy[k, 0]), float(xy[k, 1])) for k in range(kps) if k not in hidden}
            name = f"{category[:3]}{c}{i:02d}"
            fakes.append(
                FakeImage(name, category, size, points, tuple(box - 0.5), pixels=render_object(size, BOXES[i]))
            )
        for src in fakes:
            for trg in fakes:
                if src is not trg:
                    flags = {flag: int(rng.integers(0, n)) for flag, n in FLAG_LEVELS.items()}
                    pairs.append(FakePair(src, trg, "test", flags))
    return make_spair(root, pairs)


def spair_runs(tmp: Path) -> list[Path]:
    """Two evaluations of the same 24 SPair-71k pairs: argmax, and soft-argmax K3 T0.1."""
    pairset = load_pairs("spair", root=colour_spair(tmp / "SPair-71k"), split="test")
    backbone = colour_backbone(tmp)
    return [
        evaluate(
            colour_config(tmp, dataset="spair", match=MatchSettings(m, 3, 0.1), thresholds=(0.05, 0.1, 0.2)),
            pairset,
            backbone,
        )
        for m in ("argmax", "wsoftargmax")
    ]


# pair: (flags viewpoint, scale, truncation, occlusion; correct@0.1 of its keypoints)
HAND_PAIRS = {
    "p1": ((0, 0, 0, 0), [True, False]),
    "p2": ((0, 1, 1, 2), [True]),
    "p3": ((2, 1, 3, 2), [False, False, True]),
    "p4": ((2, 2, 3, 3), [False, False]),
}


def hand_run(folder: Path) -> Path:
    """A results folder written with folders.write_run from HAND_PAIRS (L = 100, distance 5 or 50)."""
    keypoints = pd.DataFrame(
        [
            {"pair_id": pid, "category": "cat", "kp_id": str(k), "distance": 5.0 if ok else 50.0, "norm_L": 100.0,
             "correct@0.1": ok}
            for pid, (_, correct) in HAND_PAIRS.items()
            for k, ok in enumerate(correct)
        ]
    )  # fmt: skip
    pairs = pd.DataFrame(
        [
            {"pair_id": pid, "category": "cat", **dict(zip(FLAG_LEVELS, flags, strict=True)), "mirror": 0}
            for pid, (flags, _) in HAND_PAIRS.items()
        ]
    )
    return write_hand_run(folder, keypoints, pairs)


def counted_run(folder: Path, correct: list[int], keypoints: list[int]) -> Path:
    """A results folder of len(correct) SPair-71k pairs p00, p01, ... (categories cat, dog, cat, ...; pair i at
    level i % levels of each difficulty flag): pair i has keypoints[i] keypoints, its first correct[i] correct at
    alpha 0.1 (distance 5, else 50; L = 100). Runs written with the same pair count are comparable."""
    rows, pairs = [], []
    for i, (hits, n) in enumerate(zip(correct, keypoints, strict=True)):
        pair = {"pair_id": f"p{i:02d}", "category": ("cat", "dog")[i % 2]}
        rows += [{**pair, "kp_id": str(k), "distance": 5.0 if k < hits else 50.0, "norm_L": 100.0,
                  "correct@0.1": k < hits} for k in range(n)]  # fmt: skip
        pairs.append({**pair, **{flag: i % levels for flag, levels in FLAG_LEVELS.items()}, "mirror": 0})
    return write_hand_run(folder, pd.DataFrame(rows), pd.DataFrame(pairs))


def write_hand_run(folder: Path, keypoints: pd.DataFrame, pairs: pd.DataFrame) -> Path:
    """An evaluation's results folder holding these tables: an argmax run on SPair-71k test, bbox threshold."""
    member = MemberSettings(BackboneSettings(model="hand"), (8, 8))
    settings = EvalSettings(members=(member,), data=DataSettings(dataset="spair", split="test"))
    resolved = {"model": "hand", "weights": "hand.pt", "weights_origin": "custom", "weight": 1.0, "image_size": [8, 8]}
    config = {
        "settings": as_record(settings),
        "resolved": {"members": [resolved], "pairs_fingerprint": f"hand-{len(pairs)}"},
    }
    metrics = {"protocol": meaning("spair", "test", "bbox"), "counts": {"pairs": len(pairs)}}
    folder.mkdir(parents=True, exist_ok=True)
    return folders.write_run(folder, "evaluation", config, metrics=metrics, per_pair=pairs, per_keypoint=keypoints)
