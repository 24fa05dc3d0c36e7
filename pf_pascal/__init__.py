"""PF-Pascal loader: `trn`, `val` and `test` pairs as published (train 2,940 / val 308 / test 299).

On disk (root = pf_pascal/):

    PF-dataset-PASCAL/JPEGImages/<voc id>.jpg
    PF-dataset-PASCAL/Annotations/<class>/<voc id>.mat     kps (N x 2, NaN rows = missing), bbox
    trn_pairs.csv (or train_pairs.csv), val_pairs.csv, test_pairs.csv

Pair CSVs have the header `source_image,target_image,class` plus `flip` (trn, val) or
`XA,YA,XB,YB` (test); `class` is the 1-based index into the 20 VOC classes (CLASSES).

- Keypoints: from the CSV when it has `XA,YA,XB,YB` (test: `;`-separated lists, ids "0".."N-1" by
  position, 2,414 keypoints in all); otherwise from the two images' `.mat` files, keeping the rows
  where neither is NaN (ids: the row, i.e. the class's keypoint index).
- Boxes: `bbox` of each image's `.mat` file. Without an Annotations/ folder the test split still
  loads (boxes None, said in PairSet.notes).
- `flip` goes to `flags["flip"]` as is: a training augmentation hint, nothing is flipped here.
- Coordinates: the CSV and `.mat` values are MATLAB 1-based pixel coordinates; 1 is subtracted from
  keypoints and boxes to get this project's 0-based pixel centres (`--no-pf-shift`, the
  original project's protocol, keeps them as stored). Public loaders (NCNet, DHPF, CATs,
  GeoAware-SC) use the values unchanged, i.e. 1 px right and down of the annotated pixel; at
  alpha = 0.1 of a 300-500 px image that is far below the PCK threshold, but it matters for drawing
  and for the feature grid. Images with an EXIF orientation get keypoints and boxes turned with it.
- Image paths in the CSVs are relative to root (`PF-dataset-PASCAL/JPEGImages/<file>`); copies
  without that folder (`root/JPEGImages/<file>`, as in DHPF's PF-PASCAL) are found too.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import scipy.io

from semcorr.config.settings import DataSettings
from semcorr.data.images import ImageRef, image_ref, orient_box, orient_points, stored_size
from semcorr.data.pairs import (
    DatasetError,
    PairRecord,
    PairSet,
    box_tuple,
    check_split,
    collect_pairs,
    first_existing,
    missing_root_error,
    open_csv,
    pair_id_from_row,
)

NAME = "pf-pascal"
DATA_DIR = "PF-dataset-PASCAL"
CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
CSV_NAMES = {"trn": ("trn_pairs.csv", "train_pairs.csv"), "val": ("val_pairs.csv",), "test": ("test_pairs.csv",)}
KEYPOINT_COLUMNS = ("XA", "YA", "XB", "YB")
EXPECTED_LAYOUT = """\
  pf_pascal/
    PF-dataset-PASCAL/JPEGImages/<voc id>.jpg
    PF-dataset-PASCAL/Annotations/<class>/<voc id>.mat
    trn_pairs.csv (or train_pairs.csv), val_pairs.csv, test_pairs.csv
"""

Annotation = tuple[np.ndarray, tuple[float, float, float, float]]  # kps (N, 2) 1-based, bbox


def load(root: Path, data: DataSettings) -> PairSet:
    """The pairs of `data.split`. `data.pf_shift` False keeps the stored 1-based coordinates (the original
    project's protocol)."""
    split = data.split
    check_split(NAME, split, CSV_NAMES)
    candidates = [folder / name for folder in (root, root / DATA_DIR) for name in CSV_NAMES[split]]
    csv_path = next((path for path in candidates if path.is_file()), None)
    if csv_path is None:
        raise missing_root_error(NAME, root, EXPECTED_LAYOUT, candidates)
    header, rows = _read_csv(csv_path)
    with_csv_kps = set(KEYPOINT_COLUMNS) <= set(header)
    ann_dirs = [root / DATA_DIR / "Annotations", root / "Annotations"]
    ann_dir = next((d for d in ann_dirs if d.is_dir()), None)
    if ann_dir is None and not with_csv_kps:
        raise DatasetError(
            f"the keypoints of the PF-Pascal {split} pairs come from the .mat annotations, but there is no "
            f"{' or '.join(map(str, ann_dirs))}\nExpected layout:\n{EXPECTED_LAYOUT}"
        )
    uneven: list[str] = []
    records = _records(
        root, csv_path, rows, ann_dir=ann_dir, with_csv_kps=with_csv_kps, shift=int(data.pf_shift), uneven=uneven
    )
    pairset = collect_pairs(
        NAME, split, root, records, limit=data.limit, clamp=data.clamp_keypoints, pck_norm=data.pck_norm
    )
    if uneven:
        pairset.notes.append(
            f"{len(uneven)} pairs have .mat keypoint lists of different lengths (first: {uneven[0]}); "
            "compared over the rows both have"
        )
    if ann_dir is None:
        pairset.notes.append(f"no Annotations/ folder under {root}: bounding boxes are None")
    return pairset


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open_csv(path) as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        rows = list(reader)
    missing = [c for c in ("source_image", "target_image", "class") if c not in header]
    if missing:
        raise DatasetError(
            f"{path}: malformed pair list, missing column(s) {', '.join(missing)}; expected the header "
            "source_image,target_image,class,flip (trn, val) or source_image,target_image,class,XA,YA,XB,YB (test)"
        )
    return header, rows


def _records(
    root: Path,
    csv_path: Path,
    rows: list[dict[str, str]],
    *,
    ann_dir: Path | None,
    with_csv_kps: bool,
    shift: int,
    uneven: list[str],
) -> Iterator[PairRecord]:
    """Pair records in CSV order; pairs whose .mat files differ in keypoint count go to `uneven`."""
    images: dict[str, ImageRef] = {}
    annotations: dict[Path, Annotation] = {}
    for number, row in enumerate(rows, 1):
        where = f"{csv_path}, row {number}"
        if None in row or None in row.values():
            raise DatasetError(f"{where}: the row has a different number of fields than the header")
        category = _category(row["class"], where)
        src, trg = (_image(root, row[col], where, images) for col in ("source_image", "target_image"))
        src_ann = trg_ann = None
        if ann_dir is not None:
            src_ann, trg_ann = (
                _annotation(ann_dir / category / f"{PurePosixPath(ref.key).name}.mat", annotations)
                for ref in (src, trg)
            )
        if with_csv_kps:
            src_kps, trg_kps = _csv_keypoints(row, where)
            kp_ids = [str(i) for i in range(len(src_kps))]
        else:
            src_kps, trg_kps, kp_ids = _common_keypoints(src_ann[0], trg_ann[0])
            if len(src_ann[0]) != len(trg_ann[0]):
                uneven.append(where)
        yield PairRecord(
            pair_id=pair_id_from_row(number, src, trg),
            dataset=NAME,
            category=category,
            src=src,
            trg=trg,
            src_kps=orient_points(src_kps - shift, src.orientation, stored_size(src)),
            trg_kps=orient_points(trg_kps - shift, trg.orientation, stored_size(trg)),
            kp_ids=kp_ids,
            src_bbox=_oriented_box(src_ann, src, shift),
            trg_bbox=_oriented_box(trg_ann, trg, shift),
            flags={"flip": _int(row["flip"], "flip", where)} if row.get("flip") not in (None, "") else {},
        )


def _category(value: str, where: str) -> str:
    index = _int(value, "class", where)
    if not 1 <= index <= len(CLASSES):
        raise DatasetError(f"{where}: class {value!r} is not a 1-based VOC class index (1..{len(CLASSES)})")
    return CLASSES[index - 1]


def _int(value: str, column: str, where: str) -> int:
    try:
        number = float(value)
        if number.is_integer():
            return int(number)
    except (TypeError, ValueError):
        pass
    raise DatasetError(f"{where}: column {column} must be an integer, got {value!r}")


def _image(root: Path, listed: str, where: str, images: dict[str, ImageRef]) -> ImageRef:
    listed_path = PurePosixPath(listed.strip().replace("\\", "/"))
    key = f"{NAME}/{listed_path.stem}"
    if key not in images:
        path = first_existing(
            [
                root / listed_path,
                root / DATA_DIR / "JPEGImages" / listed_path.name,
                root / "JPEGImages" / listed_path.name,
            ],
            f"image {listed!r} of {where}",
        )
        images[key] = image_ref(key, path)
    return images[key]


def _annotation(path: Path, cache: dict[Path, Annotation]) -> Annotation:
    if path not in cache:
        if not path.is_file():
            raise DatasetError(f"annotation not found: {path} (expected Annotations/<class>/<image id>.mat)")
        try:
            mat = scipy.io.loadmat(str(path))
        except (OSError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
            raise DatasetError(f"cannot read annotation {path}: {exc}") from exc
        if "kps" not in mat or "bbox" not in mat:
            raise DatasetError(f"{path}: malformed annotation, expected arrays 'kps' (N x 2) and 'bbox' (1 x 4)")
        kps, bbox = (_numbers(mat[field], field, path) for field in ("kps", "bbox"))
        kps = kps.reshape(0, 2) if kps.size == 0 else kps
        bbox = bbox.ravel()
        if kps.ndim != 2 or kps.shape[1] != 2 or bbox.size != 4:
            raise DatasetError(
                f"{path}: malformed annotation, 'kps' must be N x 2 and 'bbox' have 4 values, "
                f"got {kps.shape} and {bbox.size}"
            )
        cache[path] = (kps, box_tuple(bbox, "bbox"))
    return cache[path]


def _numbers(value: object, field: str, path: Path) -> np.ndarray:
    """A .mat field as a float64 array; DatasetError naming the file and the field if it holds no numbers."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: malformed annotation, field {field!r} must hold numbers") from None


def _csv_keypoints(row: dict[str, str], where: str) -> tuple[np.ndarray, np.ndarray]:
    values = {}
    for column in KEYPOINT_COLUMNS:
        try:
            values[column] = [float(v) for v in (row[column] or "").split(";") if v.strip()]
        except ValueError:
            raise DatasetError(f"{where}: column {column} must be ';'-separated numbers, got {row[column]!r}") from None
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1:
        counts = ", ".join(f"{c}: {len(v)}" for c, v in values.items())
        raise DatasetError(f"{where}: XA, YA, XB, YB must have the same number of values ({counts})")
    coords = {c: np.array(v, dtype=np.float32) for c, v in values.items()}
    if not all(np.isfinite(v).all() for v in coords.values()):
        raise DatasetError(f"{where}: keypoint coordinates contain NaN or infinite values")
    return np.stack([coords["XA"], coords["YA"]], 1), np.stack([coords["XB"], coords["YB"]], 1)


def _common_keypoints(src: np.ndarray, trg: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows annotated (not NaN) in both images; a row index is the class's keypoint id."""
    rows = min(len(src), len(trg))
    both = ~(np.isnan(src[:rows]).any(axis=1) | np.isnan(trg[:rows]).any(axis=1))
    index = np.flatnonzero(both)
    return src[index].astype(np.float32), trg[index].astype(np.float32), [str(i) for i in index]


def _oriented_box(annotation: Annotation | None, ref: ImageRef, shift: int) -> tuple[float, float, float, float] | None:
    if annotation is None:
        return None
    box = tuple(v - shift for v in annotation[1])
    return orient_box(box, ref.orientation, stored_size(ref))
