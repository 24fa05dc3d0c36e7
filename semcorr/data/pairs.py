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
- A pair's keypoint ids are unique (a PairRecord with an id twice is a ValueError).
- A pair whose PCK threshold length L (`threshold_lengths`) is not a positive length at most
  `MAX_THRESHOLD_RATIO` times its target image's longer side (a box of no width or height, an inverted or
  absurd box, keypoints at one point) never enters a PCK mean: the official datasets skip it, counted in
  `PairSet.skipped[BAD_THRESHOLD]` with a note naming the first; a custom pairs file is refused, naming the
  file, the pair and the field (collect_pairs' `threshold_fields`).
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

from semcorr.config.settings import PCK_NORMS
from semcorr.data.images import ImageRef

NO_KEYPOINTS = "no keypoints"  # the skip reason of a pair without ground-truth keypoints
BAD_THRESHOLD = "no usable PCK threshold length"  # the skip reason of a pair whose L cannot be
MAX_THRESHOLD_RATIO = 2.0  # L is at most this many times the target image's longer side

# SPair-71k's difficulty flags (pair annotations) and the names of their levels, as the devkit names them, and one
# computed from its image annotations
DIFFICULTY_LEVELS = {
    "viewpoint_variation": ("easy", "medium", "hard"),
    "scale_variation": ("easy", "medium", "hard"),
    "truncation": ("none", "source", "target", "both"),
    "occlusion": ("none", "source", "target", "both"),
    "azimuth_difference": ("0", "1", "2", "3", "4"),  # of the images' viewpoint bins (ImageAnnotation; GeoAware-SC)
}


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

    def __post_init__(self) -> None:
        check_unique(self.kp_ids, "kp_ids")

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
    pck_norm: str,
    limit: int | None = None,
    keep_empty: bool = False,
    clamp: bool = True,
    threshold_fields: dict[str, str] | None = None,
) -> PairSet:
    """Gather records into a PairSet: skip (and count) pairs with no keypoints unless `keep_empty`,
    stop after `limit` kept pairs (records are read lazily), clamp keypoints into their images
    (`clamp` False: count them only, as the original project used them unclamped), and keep no pair whose
    threshold length under `pck_norm` (the run's, DataSettings.pck_norm: every loader passes it) cannot be
    (threshold_problems): skipped and counted, or, with `threshold_fields` (norm -> the file's field that gives
    L), refused naming the file, the pair and the field."""
    pairset = PairSet(dataset=dataset, split=split, root=str(root), pairs=[])
    records = iter(records if limit != 0 else ())
    clamped_pairs, bad = 0, []
    while limit is None or len(pairset.pairs) < limit:
        batch = _take(records, None if limit is None else limit - len(pairset.pairs), pairset, keep_empty)
        if not batch:
            break
        moved = [clamp_keypoints(batch, side, apply=clamp) for side in ("src", "trg")]
        problems = threshold_problems(batch, pck_norm)
        if problems and threshold_fields is not None:
            i, problem = next(iter(problems.items()))
            raise DatasetError(
                f"{root}, pair {batch[i].pair_id}: {threshold_fields[pck_norm]} gives no usable PCK threshold length "
                f"L (--pck-norm {pck_norm}): {problem}. Fix {threshold_fields[pck_norm]}, or choose another --pck-norm"
            )
        bad += [(batch[i].pair_id, problem) for i, problem in problems.items()]
        kept = [i for i in range(len(batch)) if i not in problems]
        pairset.clamped_keypoints += sum(side.get(i, 0) for side in moved for i in kept)
        clamped_pairs += sum(any(i in side for side in moved) for i in kept)
        pairset.pairs += [batch[i] for i in kept]
    if pairset.clamped_keypoints:
        what = "clamped" if clamp else "kept unclamped (--no-clamp-keypoints)"
        pairset.notes.append(
            f"{pairset.clamped_keypoints} keypoints lie outside their image [0, W-1] x [0, H-1]: {what} "
            f"({clamped_pairs} pairs)"
        )
    if bad:
        pairset.skipped[BAD_THRESHOLD] = len(bad)
        pairset.notes.append(
            f"{len(bad)} pairs skipped: no usable PCK threshold length L (--pck-norm {pck_norm}), which must be a "
            f"positive length at most {MAX_THRESHOLD_RATIO:g}x the target image's longer side; first: pair "
            f"{bad[0][0]}: {bad[0][1]}"
        )
    return pairset


def _take(records: Iterator[PairRecord], n: int | None, pairset: PairSet, keep_empty: bool) -> list[PairRecord]:
    """The next `n` records (all with None) with keypoints (or any, `keep_empty`); those without are counted."""
    batch = []
    for record in records:
        if record.num_keypoints == 0 and not keep_empty:
            pairset.skipped[NO_KEYPOINTS] = pairset.skipped.get(NO_KEYPOINTS, 0) + 1
            continue
        batch.append(record)
        if n is not None and len(batch) >= n:
            break
    return batch


def threshold_lengths(pairs: list[PairRecord], norm: str) -> np.ndarray:
    """The length L that alpha multiplies, per pair (float64; NaN for a pair without target keypoints under kpbox):
    bbox the target box's longer side, image the target image's longer side, kpbox the longer side of the box
    the target keypoints span."""
    if norm == "bbox":
        missing = next((p for p in pairs if p.trg_bbox is None), None)
        if missing is not None:
            raise ValueError(
                f"pck-norm 'bbox' needs a target bounding box, but pair {missing.pair_id} of {missing.dataset} has "
                "none: use --pck-norm image or kpbox."
            )
        boxes = np.array([p.trg_bbox for p in pairs], dtype=np.float64).reshape(-1, 4)
        return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if norm == "image":
        return np.array([max(p.trg.size) for p in pairs], dtype=np.float64).reshape(-1)
    if norm == "kpbox":
        counts = np.array([len(p.trg_kps) for p in pairs])
        lengths = np.full(len(pairs), np.nan)
        if counts.sum():
            kps = np.concatenate([p.trg_kps for p in pairs]).astype(np.float64)
            starts = (np.cumsum(counts) - counts)[counts > 0]
            span = np.maximum.reduceat(kps, starts) - np.minimum.reduceat(kps, starts)
            lengths[counts > 0] = span.max(axis=1)
        return lengths
    raise ValueError(f"pck-norm must be one of {PCK_NORMS}, got {norm!r}")


def threshold_problems(pairs: list[PairRecord], norm: str) -> dict[int, str]:
    """{index: what is wrong} for the pairs with keypoints whose threshold length L cannot be: not a positive finite
    length at most MAX_THRESHOLD_RATIO x the target image's longer side, or (bbox) from a box without positive
    width and height. Pairs without a target box under bbox are left to the scoring's error."""
    rows = [i for i, p in enumerate(pairs) if p.num_keypoints > 0 and (norm != "bbox" or p.trg_bbox is not None)]
    if not rows:
        return {}
    chosen = [pairs[i] for i in rows]
    lengths = threshold_lengths(chosen, norm)
    sides = np.array([max(p.trg.size) for p in chosen], dtype=np.float64)
    bad = ~np.isfinite(lengths) | (lengths <= 0) | (lengths > MAX_THRESHOLD_RATIO * sides)
    if norm == "bbox":
        boxes = np.array([p.trg_bbox for p in chosen], dtype=np.float64)
        bad |= (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    return {rows[j]: _threshold_problem(chosen[j], norm, lengths[j]) for j in np.flatnonzero(bad).tolist()}


def _threshold_problem(pair: PairRecord, norm: str, length: float) -> str:
    """What makes one pair's threshold length L unusable, in words."""
    side = max(pair.trg.size)
    if norm == "bbox":
        x1, y1, x2, y2 = pair.trg_bbox
        shape = f"the target box [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if not np.isfinite(length):
            return f"{shape} holds NaN or infinite values"
        if x2 < x1 or y2 < y1:
            return f"{shape} is inverted (x2 < x1 or y2 < y1)"
        if x2 == x1 or y2 == y1:
            return f"{shape} has no width or no height"
        return (
            f"{shape} gives L = {length:g} px, over {MAX_THRESHOLD_RATIO:g}x the target image's longer side ({side} px)"
        )
    if norm == "kpbox":
        if not length > 0:
            return f"its {pair.num_keypoints} target keypoint(s) span no length (one keypoint, or all at one point)"
        return f"its target keypoints span L = {length:g} px, over {MAX_THRESHOLD_RATIO:g}x the target image's longer side ({side} px)"
    return f"L = {length:g} px for a target image of {pair.trg.size[0]}x{pair.trg.size[1]} px"


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


def check_unique(ids: list[str], what: str) -> None:
    """ValueError naming `what` when a keypoint id is given twice (the keypoint would count twice in PCK)."""
    if len(set(ids)) < len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(
            f"{what}: keypoint id(s) {', '.join(map(repr, twice))} given more than once; each id names one keypoint "
            "of the pair"
        )


def keypoint_ids(values: object, what: str) -> list[str]:
    """A list of keypoint ids (text or whole numbers) as text, each once; ValueError naming `what` if not."""
    if not isinstance(values, list | tuple) or not all(_is_label(v) for v in values):
        raise ValueError(f"{what} must be a list of ids (text or whole numbers), got {values!r}")
    ids = [str(v) for v in values]
    check_unique(ids, what)
    return ids


def text_value(value: object, what: str) -> str:
    """A label (category, pair id, path) as text; ValueError naming `what` if it is a list, an object or a flag."""
    if not _is_label(value):
        raise ValueError(f"{what} must be text, got {value!r}")
    return str(value)


def _is_label(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


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
