"""The pair record shared by every dataset, and the helpers the loaders share (semcorr/data/datasets.py
finds a dataset's loader by name).

Conventions, the same for every loader (SPair71k/, pf_pascal/, pf_willow/, semcorr/data/custom_pairs.py):

- Keypoints are float32 (N, 2) arrays of (x, y) in original image pixels. Integer coordinates are
  pixel centres: (0, 0) is the centre of the top-left pixel, (W-1, H-1) that of the bottom-right one.
  Datasets annotated in MATLAB's 1-based convention are shifted by -1 in their loader.
- Bounding boxes are (x1, y1, x2, y2) in the same coordinates (not clamped), or None.
- `ImageRef.size` is (W, H) of the image as `images.load_image` returns it, i.e. after EXIF orientation;
  keypoints and boxes refer to that image too (loaders turn annotations made on the stored pixels
  with the file's EXIF orientation).
- Keypoints outside [0, W-1] x [0, H-1] are clamped into it; how many is counted in
  `PairSet.clamped_keypoints` and said in `PairSet.notes`.
- Pairs without any keypoint are left out of `PairSet.pairs` and counted in
  `PairSet.skipped["no keypoints"]` (custom pairs are kept: they can still be matched and drawn).
- Anything missing or malformed raises `DatasetError` naming the file and what was expected.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

import numpy as np

from semcorr.data.images import ImageRef

NO_KEYPOINTS = "no keypoints"  # the skip reason of a pair without ground-truth keypoints


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and how to fix it."""


@dataclass
class PairRecord:
    """Plain data for one image pair; keypoints are (N, 2) float32 (x, y) in original pixels.

    Pixel convention: integer coordinates are pixel centres, (0, 0) is the centre of the top-left
    pixel. Bounding boxes are (x1, y1, x2, y2) in the same coordinates, or None.
    """

    pair_id: str
    dataset: str
    category: str
    src: ImageRef
    trg: ImageRef
    src_kps: np.ndarray
    trg_kps: np.ndarray
    kp_ids: list[str]
    src_bbox: tuple[float, float, float, float] | None = None
    trg_bbox: tuple[float, float, float, float] | None = None
    flags: dict[str, int] = field(default_factory=dict)
    kp_mirror: list[str] | None = None  # each keypoint's left-right partner id (its own id: on the mirror axis)
    kp_flags: dict[str, list[bool]] = field(default_factory=dict)  # per keypoint (e.g. "geo_aware"), in kp_ids order
    # keypoints visible in the source image only (not in the target), (M, 2) like src_kps: what KAP scores beside
    # the pair's own keypoints (engine/kap.py); empty where the loader knows none (or cannot, as its notes say)
    src_only_ids: list[str] = field(default_factory=list)
    src_only_kps: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    @property
    def num_keypoints(self) -> int:
        return len(self.kp_ids)


def mirror_partners(pair: PairRecord) -> tuple[np.ndarray, np.ndarray]:
    """Each keypoint's left-right partner among the pair's keypoints, as an index (its own where it lies on the
    mirror axis, or where its partner is not among them), and whether it has its partner there (a keypoint on
    the axis has): GeoAware-SC's permutation of visible groups, and the keypoints that take a flipped match."""
    if pair.kp_mirror is None:
        raise DatasetError(f"pair {pair.pair_id} of {pair.dataset} has no left-right keypoint partners")
    index = {kp: i for i, kp in enumerate(pair.kp_ids)}
    partner = [index.get(kp, -1) for kp in pair.kp_mirror]
    has = np.array([i >= 0 for i in partner], dtype=bool)
    return np.where(has, partner, np.arange(len(partner))), has


@dataclass
class PairSet:
    """The pairs of one dataset split plus what was skipped or fixed while reading it."""

    dataset: str
    split: str
    root: str
    pairs: list[PairRecord]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> number of pairs
    notes: list[str] = field(default_factory=list)  # e.g. "clamped 3 keypoints outside image"
    clamped_keypoints: int = 0  # keypoints moved into their image (kept, see notes)

    def unique_images(self) -> list[ImageRef]:
        """Each image of the pairs once, in first-seen order."""
        seen: dict[str, ImageRef] = {}
        for pair in self.pairs:
            seen.setdefault(pair.src.key, pair.src)
            seen.setdefault(pair.trg.key, pair.trg)
        return list(seen.values())

    def summary(self) -> str:
        """One line: pairs, images, keypoints, and what was skipped or clamped."""
        kps = sum(p.num_keypoints for p in self.pairs)
        text = (
            f"{self.dataset} {self.split}: {len(self.pairs)} pairs, {len(self.unique_images())} images, {kps} keypoints"
        )
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} ({why})" for why, n in self.skipped.items())
        return "; ".join([text, *self.notes])


def missing_root_error(name: str, root: Path, layout: str, missing: list[Path] | None = None) -> DatasetError:
    """The error for a dataset that is not there (`missing`: the files looked for), with the
    expected layout and the download command."""
    tried = "".join(f"\n  no {path}" for path in missing or [])
    return DatasetError(
        f"{name} not found at {root}{tried}\nExpected layout:\n{layout.rstrip()}\n"
        f"Download it with:  python download.py --datasets {name}\n"
        "or point --data-root (root=...) at the folder that holds it."
    )


@contextmanager
def open_csv(path: Path) -> Iterator[TextIO]:
    """A CSV file opened for the csv module: UTF-8 (with or without a byte-order mark) or UTF-16 with
    its mark (a spreadsheet's "Unicode text"). Text in neither raises a DatasetError naming the file."""
    with open(path, "rb") as f:
        utf16 = f.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    try:
        with path.open(newline="", encoding="utf-16" if utf16 else "utf-8-sig") as f:
            yield f
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"cannot read {path}: not UTF-8 or UTF-16 text ({exc.reason}); save it as UTF-8 CSV"
        ) from None


def check_split(name: str, split: str, splits: Iterable[str]) -> None:
    splits = tuple(splits)
    if split not in splits:
        raise DatasetError(f"{name} has no split {split!r}: choose one of {', '.join(splits)}")


def first_existing(candidates: Iterable[Path], what: str) -> Path:
    """The first candidate path that exists; else a DatasetError listing every path tried."""
    candidates = list(dict.fromkeys(candidates))
    for path in candidates:
        if path.exists():
            return path
    raise DatasetError(f"{what} not found; tried:\n" + "\n".join(f"  {p}" for p in candidates))


# ---- keypoints ---------------------------------------------------------------------------------


def collect_pairs(
    dataset: str,
    split: str,
    root: str | Path,
    records: Iterable[PairRecord],
    *,
    limit: int | None = None,
    keep_empty: bool = False,
    clamp: bool = True,
) -> PairSet:
    """Gather records into a PairSet: skip (and count) pairs with no keypoints unless `keep_empty`,
    stop after `limit` kept pairs (records are read lazily), clamp keypoints into their images
    (`clamp` False: count them only, as the original project used them unclamped)."""
    pairset = PairSet(dataset=dataset, split=split, root=str(root), pairs=[])
    for record in records if limit != 0 else ():
        if record.num_keypoints == 0 and not keep_empty:
            pairset.skipped[NO_KEYPOINTS] = pairset.skipped.get(NO_KEYPOINTS, 0) + 1
            continue
        pairset.pairs.append(record)
        if limit is not None and len(pairset.pairs) >= limit:
            break
    moved_pairs: set[int] = set()
    for side in ("src", "trg"):
        moved = clamp_keypoints(pairset.pairs, side, apply=clamp)
        pairset.clamped_keypoints += sum(moved.values())
        moved_pairs.update(moved)
    if pairset.clamped_keypoints:
        what = "clamped" if clamp else "kept unclamped (--no-clamp-keypoints)"
        pairset.notes.append(
            f"{pairset.clamped_keypoints} keypoints lie outside their image [0, W-1] x [0, H-1]: {what} "
            f"({len(moved_pairs)} pairs)"
        )
    return pairset


def clamp_keypoints(records: list[PairRecord], side: str, apply: bool = True) -> dict[int, int]:
    """Clamp the `side` ("src" or "trg") keypoints of every record into [0, W-1] x [0, H-1], in
    one vectorised pass; returns {record index: keypoints outside} for the records that have some
    (`apply` False: only counts them, the keypoints stay as they are)."""
    kps = [getattr(r, f"{side}_kps") for r in records]
    offsets = np.cumsum([0] + [len(k) for k in kps])
    if offsets[-1] == 0:
        return {}
    flat = np.concatenate(kps)
    sizes = np.array([getattr(r, side).size for r in records], dtype=np.float32)
    clamped = np.minimum(np.maximum(flat, 0), np.repeat(sizes - 1, np.diff(offsets), axis=0))
    moved_rows = np.flatnonzero((clamped != flat).any(axis=1))
    owners = np.searchsorted(offsets, moved_rows, side="right") - 1
    moved = {}
    for i in np.unique(owners).tolist():
        if apply:
            setattr(records[i], f"{side}_kps", clamped[offsets[i] : offsets[i + 1]].copy())
        moved[i] = int((owners == i).sum())
    return moved


def pair_id_from_row(number: int, src: ImageRef, trg: ImageRef) -> str:
    """`<row number>-<source name>-<target name>`, unique even where a pair list repeats a pair."""
    return f"{number:04d}-{PurePosixPath(src.key).name}-{PurePosixPath(trg.key).name}"


def box_tuple(values, what: str) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) floats from four values; ValueError naming `what` if not four."""
    if len(values) != 4:
        raise ValueError(f"{what} must be [x1, y1, x2, y2], got {values}")
    x1, y1, x2, y2 = (float(v) for v in values)
    return (x1, y1, x2, y2)


def points_array(values, what: str) -> np.ndarray:
    """An (N, 2) float32 array from nested [[x, y], ...] values; ValueError naming `what` if not."""
    kps = np.asarray(values if len(values) else np.zeros((0, 2)), dtype=np.float32)
    if kps.ndim != 2 or kps.shape[1] != 2:
        raise ValueError(f"{what} must be a list of [x, y] pairs, got shape {kps.shape}")
    if not np.isfinite(kps).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return kps
