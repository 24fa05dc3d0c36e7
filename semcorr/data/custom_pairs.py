"""Custom image pairs: a small CSV or JSON file listing your own pairs, keypoints optional.

JSON (`*.json`): a list of pairs, or {"pairs": [...]}. One pair:

    {"source": "images/cat1.jpg",        required; relative to the pairs file's folder, or absolute
     "target": "images/cat2.jpg",        required
     "category": "cat",                  optional, default "custom"
     "source_kps": [[x, y], ...],        optional; with "target_kps", same length and order
     "target_kps": [[x, y], ...],
     "kp_ids": ["nose", "left ear"],     optional, default "0".."N-1"
     "source_bbox": [x1, y1, x2, y2],    optional
     "target_bbox": [x1, y1, x2, y2],    optional; needed for PCK normalised by the target box
     "pair_id": "cats-1"}                optional, default "<pair number>-<source>-<target>"

CSV (`*.csv`): a header row with the same names (only `source,target` required). In a cell,
keypoints are written `x y; x y; ...`, kp_ids `a; b; ...`, a box `x1 y1 x2 y2`; an empty cell
means absent:

    source,target,category,source_kps,target_kps
    images/cat1.jpg,images/cat2.jpg,cat,10 20; 30 40,12 22; 33 41
    images/dog1.jpg,images/dog2.jpg,dog,,

Coordinates are pixels of the image as viewers show it (EXIF orientation applied), 0-based with
integer values at pixel centres: (0, 0) is the centre of the top-left pixel. Keypoints outside the
image are clamped into it (counted in PairSet.notes). Pairs without keypoints are kept with N = 0:
they can be matched and drawn, and give no PCK. Unknown fields are an error (catches typos).
Both formats are read as UTF-8 (a spreadsheet's byte-order mark is fine). The split name is
only a label here.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

from semcorr.config.settings import DataSettings
from semcorr.data.images import ImageRef, image_ref
from semcorr.data.pairs import (
    DatasetError,
    PairRecord,
    PairSet,
    box_tuple,
    collect_pairs,
    keypoint_ids,
    open_csv,
    points_array,
    text_value,
)

NAME = "custom"
FIELDS = (
    "source", "target", "category", "source_kps", "target_kps", "kp_ids", "source_bbox", "target_bbox", "pair_id",
)  # fmt: skip
THRESHOLD_FIELDS = {"bbox": "target_bbox", "image": "target", "kpbox": "target_kps"}  # the field that gives L
FORMAT_HINT = (
    'A custom pairs file is a .json list of {"source": ..., "target": ..., optional "source_kps", '
    '"target_kps", ...} or a .csv with the header source,target[,category,source_kps,target_kps,...]; '
    "see semcorr/data/custom_pairs.py."
)


def load(root: Path, data: DataSettings) -> PairSet:
    """The pairs listed in the file `root`; `data.split` only labels them (custom keypoints are 0-based:
    `data.pf_shift` changes nothing)."""
    if not root.is_file():
        raise DatasetError(f"custom pairs file not found: {root}\n{FORMAT_HINT}")
    readers = {".json": _read_json, ".csv": _read_csv}
    if root.suffix.lower() not in readers:
        raise DatasetError(f"{root}: custom pairs must be a .json or .csv file\n{FORMAT_HINT}")
    entries = readers[root.suffix.lower()](root)
    records = _records(root, entries)
    return collect_pairs(
        NAME, data.split, root, records, limit=data.limit, keep_empty=True, clamp=data.clamp_keypoints,
        pck_norm=data.pck_norm, threshold_fields=THRESHOLD_FIELDS,
    )  # fmt: skip


def count_target_boxes(path: Path) -> tuple[int, int]:
    """(pairs that give a target_bbox, pairs) of a pairs file, reading no image (for choosing the PCK threshold)."""
    readers = {".json": _read_json, ".csv": _read_csv}
    if not path.is_file() or path.suffix.lower() not in readers:
        raise DatasetError(f"not a custom pairs file: {path}")
    entries = readers[path.suffix.lower()](path)
    return sum(entry.get("target_bbox") is not None for entry in entries), len(entries)


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read custom pairs {path}: {exc}") from None
    entries = data.get("pairs") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DatasetError(f'{path}: expected a list of pair objects (or {{"pairs": [...]}})\n{FORMAT_HINT}')
    return entries


def _read_csv(path: Path) -> list[dict]:
    try:
        with open_csv(path) as f:
            rows = list(csv.DictReader(f))
    except DatasetError:
        raise
    except (OSError, ValueError, csv.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise DatasetError(f"cannot read custom pairs {path}: {exc}\n{FORMAT_HINT}") from None
    entries = []
    for number, row in enumerate(rows, 1):
        if None in row or None in row.values():
            raise DatasetError(f"{path}, pair {number}: the row has a different number of fields than the header")
        entry = {key.strip(): value.strip() for key, value in row.items() if value.strip()}
        for key in ("source_kps", "target_kps"):
            if key in entry:
                entry[key] = [point.split() for point in entry[key].split(";") if point.strip()]
        for key in ("source_bbox", "target_bbox"):
            if key in entry:
                entry[key] = entry[key].split()
        if "kp_ids" in entry:
            entry["kp_ids"] = [i.strip() for i in entry["kp_ids"].split(";")]
        entries.append(entry)
    return entries


def _records(path: Path, entries: list[dict]) -> Iterator[PairRecord]:
    images: dict[str, ImageRef] = {}
    pair_ids: set[str] = set()
    for number, entry in enumerate(entries, 1):
        where = f"{path}, pair {number}"
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            raise DatasetError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
        if not entry.get("source") or not entry.get("target"):
            raise DatasetError(f"{where}: 'source' and 'target' image paths are required")
        try:
            src, trg = (_image(path.parent, text_value(entry[k], k), where, images) for k in ("source", "target"))
            record = _record(entry, number, src, trg)
        except DatasetError:
            raise
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: {exc}") from None
        if record.pair_id in pair_ids:
            raise DatasetError(f"{where}: pair_id {record.pair_id!r} is used twice")
        pair_ids.add(record.pair_id)
        yield record


def _record(entry: dict, number: int, src: ImageRef, trg: ImageRef) -> PairRecord:
    if ("source_kps" in entry) != ("target_kps" in entry):
        raise ValueError("give both source_kps and target_kps, or neither")
    src_kps = points_array(entry.get("source_kps", []), "source_kps")
    trg_kps = points_array(entry.get("target_kps", []), "target_kps")
    if len(src_kps) != len(trg_kps):
        raise ValueError(f"source_kps has {len(src_kps)} points but target_kps has {len(trg_kps)}")
    kp_ids = keypoint_ids(entry["kp_ids"], "kp_ids") if "kp_ids" in entry else [str(i) for i in range(len(src_kps))]
    if len(kp_ids) != len(src_kps):
        raise ValueError(f"kp_ids has {len(kp_ids)} ids for {len(src_kps)} keypoints")
    src_name, trg_name = (Path(ref.path).stem for ref in (src, trg))
    return PairRecord(
        pair_id=text_value(entry.get("pair_id", f"{number:04d}-{src_name}-{trg_name}"), "pair_id"),
        dataset=NAME,
        category=text_value(entry.get("category", NAME), "category"),
        src=src,
        trg=trg,
        src_kps=src_kps,
        trg_kps=trg_kps,
        kp_ids=kp_ids,
        src_bbox=_optional_box(entry, "source_bbox"),
        trg_bbox=_optional_box(entry, "target_bbox"),
    )


def _image(folder: Path, listed: str, where: str, images: dict[str, ImageRef]) -> ImageRef:
    path = (folder / Path(listed).expanduser()).resolve()
    if str(path) not in images:
        if not path.is_file():
            raise DatasetError(f"{where}: image not found: {path} (paths are relative to {folder})")
        key = f"{NAME}/{Path(os.path.relpath(path, folder.resolve())).as_posix()}"
        images[str(path)] = image_ref(key, path)
    return images[str(path)]


def _optional_box(entry: dict, key: str) -> tuple[float, float, float, float] | None:
    return None if entry.get(key) is None else box_tuple(entry[key], key)
