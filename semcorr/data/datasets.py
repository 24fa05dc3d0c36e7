"""Datasets by name: where each is looked for, the module that loads it, and `load_pairs`.

A loader is a module with

    load(root: Path, data: DataSettings) -> PairSet

that reads `data.split` (and `data.layout`, one of the dataset's config/settings.py:LAYOUTS, `data.limit`,
`data.pf_shift`, `data.clamp_keypoints` where they apply) from the dataset at `root` and builds PairRecords
with pairs.collect_pairs (given `data.pck_norm`: pairs whose PCK threshold length cannot be are skipped and
counted there).
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from semcorr.config.settings import LAYOUTS, REPO_ROOT, DataSettings, dataset_layout
from semcorr.data.images import image_ref
from semcorr.data.pairs import DatasetError, PairSet, clamp_keypoints

# Where each dataset is looked for (and where download.py puts it) unless --data-root says otherwise.
DEFAULT_ROOTS: dict[str, Path] = {
    "spair": REPO_ROOT / "SPair71k" / "SPair-71k",  # holds JPEGImages/, PairAnnotation/, Layout/, ...
    "pf-pascal": REPO_ROOT / "pf_pascal",  # holds PF-dataset-PASCAL/ and {trn,val,test}_pairs.csv
    "pf-willow": REPO_ROOT / "pf_willow",  # holds PF-dataset/ and test_pairs.csv
    "ap10k": REPO_ROOT / "ap10k" / "ap-10k",  # the official release: annotations/, data/
    "spair-u": REPO_ROOT / "SPair71k" / "SPair-71k",  # SPair-71k's folder, with SPair-U's Extra*Annotation/ in it
}

# Dataset name -> the module with its `load(root, data)` (imported when needed).
LOADERS: dict[str, str] = {
    "spair": "SPair71k",
    "pf-pascal": "pf_pascal",
    "pf-willow": "pf_willow",
    "ap10k": "ap10k",
    "spair-u": "spair_u",
    "custom": "semcorr.data.custom_pairs",
}
ONE_BASED_DATASETS = ("pf-pascal", "pf-willow")  # the datasets stored in 1-based coordinates (--pf-shift)
SPLIT_ALIASES = {"train": "trn"}


def load_pairs(data: DataSettings | str, **fields) -> PairSet:
    """The pairs that `data` names (or dataset `data` with DataSettings `fields`, e.g.
    load_pairs("custom", root="pairs.json")).

    root None: DEFAULT_ROOTS[dataset]; for "custom" it is the pairs file. `limit` keeps the first
    pairs in file order. `rescale_annotations`: images whose file has another size than their
    annotation says are scaled to the file (else decoding them fails).
    """
    data = DataSettings(dataset=data, **fields) if isinstance(data, str) else replace(data, **fields)
    if data.dataset not in LOADERS:
        raise DatasetError(f"unknown dataset {data.dataset!r}: choose one of {', '.join(LOADERS)}")
    if data.limit is not None and data.limit < 0:
        raise DatasetError(f"limit must be >= 0 or None, got {data.limit}")
    root = Path(data.root).expanduser() if data.root is not None else default_root(data.dataset)
    split = SPLIT_ALIASES.get(data.split.lower(), data.split.lower())
    data = replace(data, split=split, layout=dataset_layout(data.dataset, data.layout))
    pairset = importlib.import_module(LOADERS[data.dataset]).load(root, data)
    if not pairset.pairs and not pairset.skipped and data.limit != 0:
        where = f"layout {data.layout}, " if data.dataset in LAYOUTS else ""
        raise DatasetError(f"no pairs in {root} ({data.dataset} {where}split {data.split}): its pair list is empty")
    return rescale_to_files(pairset, data.clamp_keypoints) if data.rescale_annotations else pairset


def default_root(dataset: str) -> Path:
    """Where `dataset` is looked for without --data-root."""
    if dataset not in DEFAULT_ROOTS:
        raise DatasetError(
            f"the {dataset!r} dataset has no default location: pass the pairs file as root "
            "(e.g. --data-root my_pairs.json; format in semcorr/data/custom_pairs.py)"
        )
    return DEFAULT_ROOTS[dataset]


def rescale_to_files(pairset: PairSet, clamp: bool = True) -> PairSet:
    """Annotations scaled to image files of another size than the annotations give (a resized copy of
    a dataset): keypoints and boxes map by the ratio of the sizes, pixel centre to pixel centre; then
    keypoints outside the files' pixels are clamped (`clamp`) and counted, as the loaders do."""
    annotated = {ref.key: ref.size for ref in pairset.unique_images()}
    files = {ref.key: image_ref(ref.key, ref.path) for ref in pairset.unique_images()}
    resized = {key: files[key].size for key, size in annotated.items() if files[key].size != size}
    for pair in pairset.pairs:
        for side in ("src", "trg"):
            ref = getattr(pair, side)
            if ref.key not in resized:
                continue
            scale = np.array(files[ref.key].size, dtype=np.float64) / np.array(ref.size)
            kps = getattr(pair, f"{side}_kps")
            setattr(pair, f"{side}_kps", ((kps + 0.5) * scale - 0.5).astype(np.float32))
            if side == "src":
                pair.src_only_kps = ((pair.src_only_kps + 0.5) * scale - 0.5).astype(np.float32)
            box = getattr(pair, f"{side}_bbox")
            if box is not None:
                corners = (np.array(box, dtype=np.float64).reshape(2, 2) + 0.5) * scale - 0.5
                setattr(pair, f"{side}_bbox", tuple(float(v) for v in corners.ravel()))
            setattr(pair, side, files[ref.key])
    if resized:
        key = next(iter(resized))
        (w, h), (fw, fh) = annotated[key], resized[key]
        pairset.notes.append(
            f"annotations of {len(resized)} images rescaled to their files (--rescale-annotations), "
            f"e.g. {key}: {w}x{h} -> {fw}x{fh}"
        )
        moved = sum(sum(clamp_keypoints(pairset.pairs, side, apply=clamp).values()) for side in ("src", "trg"))
        if moved:
            pairset.clamped_keypoints += moved
            pairset.notes.append(
                f"{moved} rescaled keypoints lie outside their image: {'clamped' if clamp else 'kept'}"
            )
    return pairset
