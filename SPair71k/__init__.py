"""SPair-71k loader: every split of `Layout/large` and `Layout/small`, read as the archive unpacks.

On disk (root = SPair71k/SPair-71k/):

    JPEGImages/<category>/<imname>.jpg
    PairAnnotation/{trn,val,test}/<pair name>.json
    Layout/{large,small}/{trn,val,test}.txt          one pair name per line

A pair name is `<6-digit id>-<src imname>-<trg imname>:<category>`; copies made on Windows use `_`
instead of `:` in the annotation file names (and maybe in the layout files). Both are found
automatically, and `pair_id` is always the official `:` form.

Everything comes from the pair annotation JSON, which is parsed once per pair; images are not
opened (sizes come from `src_imsize`/`trg_imsize` = [W, H, C]), only checked to exist:

- keypoints `src_kps`/`trg_kps` (only those visible in both, same order) with ids `kps_ids`:
  integer pixel indices, taken as 0-based pixel centres and used as they are (the dataset does not
  state an origin; public loaders read them unchanged). Any at x = W or y = H would be clamped and
  counted in PairSet.notes, which would reveal a 1-based origin,
- boxes `src_bndbox`/`trg_bndbox` = [x1, y1, x2, y2] as they are (VOC-style, they may reach W or H),
- flags `viewpoint_variation`, `scale_variation`, `truncation`, `occlusion`, `mirror`.

From the two images' ImageAnnotation (read once per image, when the folder is there; else a note says what
is missing): the flag `azimuth_difference`, min(|a - b|, 8 - |a - b|) of the images' `azimuth_id` (SPair's
8 viewpoint bins); and per keypoint, with keypoint_groups.json (GeoAware-SC's tables, in slot ids): its
left-right partner (`kp_mirror`, for --flip-align), and whether it is geometry-aware (`kp_flags["geo_aware"]`:
a member of a group of which at least 2 keypoints are visible in the target image and at least 1 in both,
GeoAware-SC's utils/eval_spair.py rule; a keypoint on its own never is); and the keypoints visible in the source
image only (`src_only_ids`/`src_only_kps`, the slots its `kps` holds that the target's does not: KAP scores them).

An image is identified by category and name together (`spair/<category>/<imname>`): a few file
names occur in two category folders (large test: 481 image files, 479 distinct names).
SPair images carry no EXIF orientation, so none is applied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcorr.config.settings import LAYOUTS, DataSettings
from semcorr.data.images import ImageRef
from semcorr.data.pairs import (
    DIFFICULTY_LEVELS,
    DatasetError,
    PairRecord,
    PairSet,
    box_tuple,
    check_split,
    collect_pairs,
    keypoint_ids,
    missing_root_error,
    points_array,
)

NAME = "spair"
SPLITS = ("trn", "val", "test")
FLAGS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion", "mirror")
EXPECTED_LAYOUT = """\
  SPair-71k/
    JPEGImages/<category>/<imname>.jpg
    ImageAnnotation/<category>/<imname>.json
    PairAnnotation/{trn,val,test}/<pair name>.json
    Layout/{large,small}/{trn,val,test}.txt
"""


@dataclass(frozen=True)
class PairName:
    """One line of a layout file: `<id>-<src>-<trg>:<category>` (or `_<category>`)."""

    name: str  # official form, with ':'
    src: str
    trg: str
    category: str

    def file_names(self) -> tuple[str, str]:
        """Annotation file names to look for: official, then the Windows copy with '_'."""
        body, category = self.name.rsplit(":", 1)
        return f"{self.name}.json", f"{body}_{category}.json"


def parse_pair_name(text: str) -> PairName:
    """Parse a pair name in either form; raises ValueError if it is not one."""
    if ":" in text:
        body, category = text.rsplit(":", 1)
    else:  # Windows copies: category names contain no '_'
        body, _, category = text.rpartition("_")
    parts = body.split("-")
    if len(parts) != 3 or not all(parts) or not category.isalpha():
        raise ValueError(f"not a pair name <id>-<src>-<trg>:<category>: {text!r}")
    return PairName(f"{body}:{category}", parts[1], parts[2], category)


def read_layout(path: Path) -> list[PairName]:
    """The pair names of one layout file, in order (blank lines ignored)."""
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):  # a byte-order mark is fine
        if line.strip():
            try:
                names.append(parse_pair_name(line.strip()))
            except ValueError as exc:
                raise DatasetError(f"{path}, line {number}: {exc}") from None
    return names


Images = dict[str, tuple[ImageRef, str]]  # image key -> the image, and the annotation file that gave its size
KEYPOINT_GROUPS = json.loads((Path(__file__).parent / "keypoint_groups.json").read_text())
AZIMUTH_BINS = 8


@dataclass(frozen=True)
class ImageInfo:
    """What a pair needs of an image's ImageAnnotation: its viewpoint bin and the keypoints visible in it."""

    azimuth: int
    points: dict[str, tuple[float, float]]  # slot id -> (x, y), the visible slots in ascending id order

    @property
    def visible(self) -> frozenset[str]:
        return frozenset(self.points)


def load(root: Path, data: DataSettings) -> PairSet:
    """The pairs of `data.split` in `Layout/<data.layout>`, keypoints and flags from the pair annotations
    (0-based already: `data.pf_shift` changes nothing here)."""
    split, layout = data.split, data.layout
    check_split(NAME, split, SPLITS)
    if layout not in LAYOUTS[NAME]:
        raise DatasetError(f"SPair-71k has no layout {layout!r}: choose one of {', '.join(LAYOUTS[NAME])}")
    layout_file = root / "Layout" / layout / f"{split}.txt"
    ann_dir = root / "PairAnnotation" / split
    missing = [path for path in (root / "JPEGImages", layout_file, ann_dir) if not path.exists()]
    if missing:
        raise missing_root_error(NAME, root, EXPECTED_LAYOUT, missing)
    names = read_layout(layout_file)
    with_images = (root / "ImageAnnotation").is_dir()
    records = _records(root, ann_dir, names, with_images)
    pairset = collect_pairs(
        NAME, split, root, records, limit=data.limit, clamp=data.clamp_keypoints, pck_norm=data.pck_norm
    )
    if not with_images:
        pairset.notes.append(
            f"no {root / 'ImageAnnotation'}: no azimuth difference, geometry-aware subset, left-right partners or "
            "source-only keypoints (KAP scores the keypoints visible in both images only)"
        )
    return pairset


def _records(root: Path, ann_dir: Path, names: list[PairName], with_images: bool) -> Iterator[PairRecord]:
    available = set(os.listdir(ann_dir))
    images: Images = {}
    infos: dict[str, ImageInfo] = {}
    checked: set[str] = set()
    for name in names:
        found = [f for f in name.file_names() if f in available]
        if not found:
            tried = " or ".join(str(ann_dir / f) for f in name.file_names())
            raise DatasetError(f"pair annotation of {name.name} not found: tried {tried}")
        path = os.path.join(ann_dir, found[0])
        record = check_images(_pair_record(path, name, str(root), images), path, checked)
        if with_images:
            src, trg = (_image_info(root, name.category, ref, infos) for ref in (record.src, record.trg))
            record = _with_groups(record, src, trg)
        yield record


def check_images(record: PairRecord, path: str, checked: set[str]) -> PairRecord:
    """The record, once its two image files are found (each checked once: `checked` holds the keys seen)."""
    for ref in (record.src, record.trg):
        if ref.key not in checked and not os.path.isfile(ref.path):
            raise DatasetError(f"image not found: {ref.path} (used by {path})")
        checked.add(ref.key)
    return record


def _pair_record(path: str, name: PairName, root: str, images: Images) -> PairRecord:
    ann = read_json(path, "pair annotation")
    with malformed(path, "pair annotation"):
        src_kps = points_array(ann["src_kps"], "src_kps")
        trg_kps = points_array(ann["trg_kps"], "trg_kps")
        kp_ids = keypoint_ids(ann["kps_ids"], "kps_ids")
        if not len(src_kps) == len(trg_kps) == len(kp_ids):
            raise ValueError(
                f"src_kps, trg_kps and kps_ids differ in length ({len(src_kps)}, {len(trg_kps)}, {len(kp_ids)})"
            )
        flags = {flag: difficulty_flag(ann, flag) for flag in FLAGS}
        return pair_record(ann, name, root, images, path, src_kps=src_kps, trg_kps=trg_kps, kp_ids=kp_ids, flags=flags)


def pair_record(
    ann: dict, name: PairName, root: str, images: Images, path: str, *, dataset: str = NAME, **keypoints
) -> PairRecord:
    """The PairRecord of pair annotation `ann` (file `path`; its category checked against its name, its images and
    boxes) with `keypoints` (and flags) given."""
    if ann["category"] != name.category:
        raise ValueError(f"category {ann['category']!r} but the pair name says {name.category!r}")
    return PairRecord(
        pair_id=name.name,
        dataset=dataset,
        category=name.category,
        src=_image(root, name.category, ann, "src", path, images),
        trg=_image(root, name.category, ann, "trg", path, images),
        src_bbox=box_tuple(ann["src_bndbox"], "src_bndbox"),
        trg_bbox=box_tuple(ann["trg_bndbox"], "trg_bndbox"),
        **keypoints,
    )


def read_json(path: str | Path, what: str) -> dict:
    """An annotation file's JSON; DatasetError naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path}: {exc}") from None
    with malformed(path, what):
        return json.loads(data)


@contextmanager
def malformed(path: str | Path, what: str) -> Iterator[None]:
    """Turns a missing field or a wrong value met while reading file `path` into one DatasetError naming it."""
    try:
        yield
    except DatasetError:
        raise
    except KeyError as exc:
        raise DatasetError(f"{path}: malformed {what}, missing field {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise DatasetError(f"{path}: malformed {what}: {exc}") from None


def _image(root: str, category: str, ann: dict, side: str, path: str, images: Images) -> ImageRef:
    """The ImageRef of the pair's `side` ("src" or "trg"); an image that two annotations give two sizes is an error."""
    imname, imsize = ann[f"{side}_imname"], ann[f"{side}_imsize"]
    key = f"{NAME}/{category}/{os.path.splitext(imname)[0]}"
    if len(imsize) < 2 or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 for v in imsize[:2]):
        raise ValueError(f"{side}_imsize of {imname} must be [W, H, C] in pixels, got {imsize}")
    size = (int(imsize[0]), int(imsize[1]))
    if key not in images:
        images[key] = (ImageRef(key, os.path.join(root, "JPEGImages", category, imname), size), path)
    ref, first = images[key]
    if ref.size != size:
        raise ValueError(
            f"{side}_imsize says {imname} is {size[0]}x{size[1]}, but {first} says {ref.size[0]}x{ref.size[1]}: "
            "one of the two annotations is wrong (a pair annotation of an edited copy?)"
        )
    return ref


def difficulty_flag(ann: dict, flag: str) -> int:
    """A difficulty flag of the annotation, one of its levels (pairs.DIFFICULTY_LEVELS; mirror: 0 or 1)."""
    levels = len(DIFFICULTY_LEVELS.get(flag, ("no", "yes")))
    value = ann[flag]
    if isinstance(value, bool) or not isinstance(value, int | float) or value not in range(levels):
        raise ValueError(f"field {flag} must be a level 0..{levels - 1}, got {value!r}")
    return int(value)


def _image_info(root: Path, category: str, ref: ImageRef, infos: dict[str, ImageInfo]) -> ImageInfo:
    """The ImageAnnotation of an image, read once."""
    if ref.key not in infos:
        path = root / "ImageAnnotation" / category / f"{Path(ref.path).stem}.json"
        ann = read_json(path, "image annotation")
        with malformed(path, "image annotation"):
            infos[ref.key] = ImageInfo(int(ann["azimuth_id"]), visible_points(ann["kps"]))
    return infos[ref.key]


def visible_points(kps: dict) -> dict[str, tuple[float, float]]:
    """An image annotation's `kps` ({slot: [x, y] or null}): the visible slots, in ascending slot order."""
    visible = sorted((slot for slot, xy in kps.items() if xy is not None), key=int)
    xy = points_array([kps[slot] for slot in visible], "kps")
    return {slot: (x, y) for slot, (x, y) in zip(visible, xy.tolist(), strict=True)}


def _with_groups(record: PairRecord, src: ImageInfo, trg: ImageInfo) -> PairRecord:
    """The pair with its azimuth difference, its keypoints' left-right partners and geometry-aware flags."""
    difference = abs(src.azimuth - trg.azimuth)
    record.flags["azimuth_difference"] = min(difference, AZIMUTH_BINS - difference)
    partner = {}
    for group in KEYPOINT_GROUPS["mirror"].get(record.category, []):
        if isinstance(group, list):
            a, b = map(str, group)
            partner |= {a: b, b: a}
    record.kp_mirror = [partner.get(kp, kp) for kp in record.kp_ids]
    both = set(record.kp_ids)
    geo_aware = set()
    for group in KEYPOINT_GROUPS["geo_aware"].get(record.category, []):
        members = {str(k) for k in group} if isinstance(group, list) else set()
        if len(members & trg.visible) >= 2 and members & both:
            geo_aware |= members & both
    record.kp_flags["geo_aware"] = [kp in geo_aware for kp in record.kp_ids]
    record.src_only_ids = [kp for kp in src.points if kp not in both]
    record.src_only_kps = np.array([src.points[kp] for kp in record.src_only_ids], np.float32).reshape(-1, 2)
    return record
