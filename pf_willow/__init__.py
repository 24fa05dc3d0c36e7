"""PF-Willow loader: the 900 `test` pairs of `test_pairs.csv`, 10 keypoints each.

On disk (root = pf_willow/):

    PF-dataset/<class>/<name>.png       classes car(G) car(M) car(S) duck(S) motorbike(G) ...
    test_pairs.csv

The CSV header is `imageA,imageB,XA1..XA10,YA1..YA10,XB1..XB10,YB1..YB10` (source x, source y,
target x, target y); the number of keypoints is read from the header. Keypoint ids are "0".."9"
(the position: every image of a class has the same 10 keypoints in the same order). The category
is the class folder in the image path (`PF-dataset/car(G)/Cars_006a.png` -> `car(G)`); source and
target must agree. There are no boxes (trg_bbox None): PCK uses the keypoints' or the image's extent.

Coordinates are MATLAB 1-based (the pairs come from the .mat annotations of the PF dataset); 1 is
subtracted to get this project's 0-based pixel centres (`--no-pf-shift`, the original
project's protocol, keeps them as stored). Public loaders (NCNet, DHPF, CATs,
GeoAware-SC) use them unchanged, 1 px right and down; PCK thresholds are far larger than that.
Images with an EXIF orientation get their keypoints turned with it.

Image paths: the published CSV lists `PF-dataset/<class>/<file>` relative to root. Copies that keep
the class folders directly under root (DHPF's PF-WILLOW) and CSVs listing `<class>/<file>` are found
too (tried: root/<listed>, root/PF-dataset/<class>/<file>, root/<class>/<file>).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from semcorr.config.settings import DataSettings
from semcorr.data.images import ImageRef, image_ref, orient_points, stored_size
from semcorr.data.pairs import (
    DatasetError,
    PairRecord,
    PairSet,
    check_split,
    collect_pairs,
    first_existing,
    missing_root_error,
    open_csv,
    pair_id_from_row,
)

NAME = "pf-willow"
DATA_DIR = "PF-dataset"
SPLITS = ("test",)
COORD_COLUMN = re.compile(r"^([XY])([AB])(\d+)$")
EXPECTED_LAYOUT = """\
  pf_willow/
    PF-dataset/<class>/<name>.png      (class: car(G), duck(S), winebottle(wC), ...)
    test_pairs.csv
"""


def load(root: Path, data: DataSettings) -> PairSet:
    """The test pairs. `data.pf_shift` False keeps the stored 1-based coordinates (the original project's
    protocol)."""
    split = data.split
    check_split(NAME, split, SPLITS)
    candidates = [root / "test_pairs.csv", root / DATA_DIR / "test_pairs.csv"]
    csv_path = next((path for path in candidates if path.is_file()), None)
    if csv_path is None:
        raise missing_root_error(NAME, root, EXPECTED_LAYOUT, candidates)
    with open_csv(csv_path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = list(reader)
    columns = _coordinate_columns(header, csv_path)
    records = _records(root, csv_path, rows, columns, int(data.pf_shift))
    return collect_pairs(
        NAME, split, root, records, limit=data.limit, clamp=data.clamp_keypoints, pck_norm=data.pck_norm
    )


def _coordinate_columns(header: list[str], path: Path) -> dict[str, list[int]]:
    """Column indices of XA, YA, XB, YB, each in keypoint order."""
    found: dict[str, dict[int, int]] = {"XA": {}, "YA": {}, "XB": {}, "YB": {}}
    for index, name in enumerate(header):
        match = COORD_COLUMN.match(name)
        if match:
            found[match[1] + match[2]][int(match[3])] = index
    numbers = {tuple(sorted(cols)) for cols in found.values()}
    first = min((i for cols in found.values() for i in cols.values()), default=0)
    if len(numbers) != 1 or not next(iter(numbers)) or first < 2:  # two image columns come first
        raise DatasetError(
            f"{path}: malformed pair list; expected the header imageA,imageB,XA1..XAn,YA1..YAn,XB1..XBn,YB1..YBn, "
            f"got {','.join(header[:6])}..."
        )
    return {name: [cols[n] for n in sorted(cols)] for name, cols in found.items()}


def _records(
    root: Path, csv_path: Path, rows: list[list[str]], columns: dict[str, list[int]], shift: int
) -> Iterator[PairRecord]:
    images: dict[str, ImageRef] = {}
    width = 2 + sum(len(c) for c in columns.values())
    for number, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{csv_path}, row {number}"
        if len(row) != width:
            raise DatasetError(f"{where}: {len(row)} fields, the header has {width}")
        (src, src_class), (trg, trg_class) = (_image(root, row[i], where, images) for i in (0, 1))
        if src_class != trg_class:
            raise DatasetError(f"{where}: source class {src_class!r} and target class {trg_class!r} differ")
        xy = {name: _numbers(row, cols, where) for name, cols in columns.items()}
        src_kps = np.stack([xy["XA"], xy["YA"]], axis=1) - shift
        trg_kps = np.stack([xy["XB"], xy["YB"]], axis=1) - shift
        yield PairRecord(
            pair_id=pair_id_from_row(number, src, trg),
            dataset=NAME,
            category=src_class,
            src=src,
            trg=trg,
            src_kps=orient_points(src_kps, src.orientation, stored_size(src)),
            trg_kps=orient_points(trg_kps, trg.orientation, stored_size(trg)),
            kp_ids=[str(i) for i in range(len(src_kps))],
        )


def _image(root: Path, listed: str, where: str, images: dict[str, ImageRef]) -> tuple[ImageRef, str]:
    listed_path = PurePosixPath(listed.strip().replace("\\", "/"))
    if len(listed_path.parts) < 2:
        raise DatasetError(f"{where}: image path {listed!r} has no class folder (expected PF-dataset/<class>/<file>)")
    category = listed_path.parent.name
    key = f"{NAME}/{category}/{listed_path.stem}"
    if key not in images:
        tail = PurePosixPath(category, listed_path.name)
        path = first_existing([root / listed_path, root / DATA_DIR / tail, root / tail], f"image {listed!r} of {where}")
        images[key] = image_ref(key, path)
    return images[key], category


def _numbers(row: list[str], cols: list[int], where: str) -> np.ndarray:
    try:
        values = np.array([float(row[i]) for i in cols], dtype=np.float32)
    except ValueError:
        raise DatasetError(f"{where}: keypoint coordinates must be numbers") from None
    if not np.isfinite(values).all():
        raise DatasetError(f"{where}: keypoint coordinates contain NaN or infinite values")
    return values
