"""SPair-U loader (Jamais Vu, NeurIPS 2025): SPair-71k's test pairs labelled with new keypoints, none of which
SPair-71k's training pairs name, read as Jamais Vu's own loader reads them (github.com/VICO-UoE/JamaisVu,
utils/utils_dataset.py:load_spair_data with unseen_kps=True; pck_train.py --UNSEEN_KPS).

On disk (root = the SPair-71k folder, SPair71k/SPair-71k/, with the two folders of SPair-U.zip put in it, where
Jamais Vu's code reads them):

    JPEGImages/<category>/<imname>.jpg                SPair-71k's images
    ExtraPairAnnotation/test/<pair name>.json         SPair-U's pairs, in SPair-71k's pair annotation format
    ExtraImageAnnotation/<category>/<imname>.json     SPair-U's keypoints: `kps` {"0".."29": [x, y] or null}

Pairs: every file of ExtraPairAnnotation/test, by category and then by name (the reference's sorted glob of each
category, its categories sorted; it takes them from ImageAnnotation/, this loader from the pair names); copies
with `_` instead of `:` in the names are found too. From a pair file: the category (checked against the name), the
image names and sizes (`*_imsize`), the boxes (`*_bndbox`: the PCK threshold is alpha times the target box's
larger side, SPair-71k's `--pck-norm bbox`) and SPair-71k's difficulty flags where the file has them; its
keypoint fields are not read. The keypoints are the two images' ExtraImageAnnotation slots "0".."29" that hold a
point (the reference reads those 30; a point in another slot is an error here): a pair holds the slots visible in
both images, ids ascending, and those visible in the source only (`src_only_*`, which KAP scores). The slots are
SPair-U's own points: SPair-71k's left-right partners and geometry-aware groups name SPair-71k's slots and the
reference defines none for SPair-U, so --flip-align and the geometry-aware subset do not apply.

Images are SPair-71k's, with SPair-71k's keys (spair/<category>/<imname>): one feature cache entry serves both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from semcorr.config.settings import DataSettings
from semcorr.data.pairs import DatasetError, PairRecord, PairSet, check_split, collect_pairs
from SPair71k import (
    FLAGS,
    Images,
    PairName,
    check_images,
    difficulty_flag,
    malformed,
    pair_record,
    parse_pair_name,
    read_json,
    visible_points,
)

NAME = "spair-u"
SPLITS = ("test",)
SLOTS = tuple(str(slot) for slot in range(30))  # the reference reads kps["0"] .. kps["29"]
ANNOTATIONS_URL = "https://groups.inf.ed.ac.uk/hbilen-data/data/JamaisVuData/SPair-U.zip"
EXPECTED_LAYOUT = """\
  SPair-71k/
    JPEGImages/<category>/<imname>.jpg                (SPair-71k)
    ExtraPairAnnotation/test/<pair name>.json         (SPair-U)
    ExtraImageAnnotation/<category>/<imname>.json     (SPair-U)
"""


def load(root: Path, data: DataSettings) -> PairSet:
    """Every pair of SPair-U (split test), keypoints from its image annotations."""
    check_split(NAME, data.split, SPLITS)
    pair_dir = root / "ExtraPairAnnotation" / data.split
    missing = [path for path in (root / "JPEGImages", pair_dir, root / "ExtraImageAnnotation") if not path.exists()]
    if missing:
        tried = "".join(f"\n  no {path}" for path in missing)
        raise DatasetError(
            f"SPair-U not found at {root}{tried}\nExpected layout:\n{EXPECTED_LAYOUT.rstrip()}\n"
            f"Get SPair-71k with `python download.py --datasets spair`, and SPair-U's annotations from "
            f"{ANNOTATIONS_URL}: put its ExtraPairAnnotation/ and ExtraImageAnnotation/ folders in the SPair-71k "
            "folder (where Jamais Vu's code reads them), or point --data-root at the SPair-71k folder that has them."
        )
    names = sorted(_pair_names(pair_dir), key=lambda item: (item[1].category, item[0]))
    records = _records(root, pair_dir, names)
    return collect_pairs(
        NAME, data.split, root, records, limit=data.limit, clamp=data.clamp_keypoints, pck_norm=data.pck_norm
    )


def _pair_names(pair_dir: Path) -> Iterator[tuple[str, PairName]]:
    """(file name, pair name) of each pair annotation file."""
    for file_name in os.listdir(pair_dir):
        if file_name.endswith(".json"):
            try:
                yield file_name, parse_pair_name(file_name.removesuffix(".json"))
            except ValueError as exc:
                raise DatasetError(f"{pair_dir / file_name}: {exc}") from None


def _records(root: Path, pair_dir: Path, names: list[tuple[str, PairName]]) -> Iterator[PairRecord]:
    images: Images = {}
    points: dict[Path, dict[str, tuple[float, float]]] = {}
    checked: set[str] = set()
    for file_name, name in names:
        path = str(pair_dir / file_name)
        ann = read_json(path, "pair annotation")
        with malformed(path, "pair annotation"):
            src, trg = (_points(root, name.category, ann[f"{side}_imname"], points) for side in ("src", "trg"))
            both = [slot for slot in src if slot in trg]
            only = [slot for slot in src if slot not in trg]
            record = pair_record(
                ann, name, str(root), images, path, dataset=NAME,
                src_kps=_array(src, both), trg_kps=_array(trg, both), kp_ids=both,
                src_only_ids=only, src_only_kps=_array(src, only),
                flags={flag: difficulty_flag(ann, flag) for flag in FLAGS if flag in ann},
            )  # fmt: skip
        yield check_images(record, path, checked)


def _points(root: Path, category: str, imname: str, cache: dict) -> dict[str, tuple[float, float]]:
    """The visible slots of an image's ExtraImageAnnotation, read once."""
    path = root / "ExtraImageAnnotation" / category / f"{Path(imname).stem}.json"
    if path not in cache:
        ann = read_json(path, "SPair-U image annotation")
        with malformed(path, "SPair-U image annotation"):
            cache[path] = visible_points(ann["kps"])
            other = [slot for slot in cache[path] if slot not in SLOTS]
            if other:
                raise ValueError(f"points in slots {', '.join(other)}: SPair-U's are 0..29 (Jamais Vu reads those)")
    return cache[path]


def _array(points: dict[str, tuple[float, float]], slots: list[str]) -> np.ndarray:
    return np.array([points[slot] for slot in slots], np.float32).reshape(-1, 2)
