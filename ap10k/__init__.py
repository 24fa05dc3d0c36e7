"""AP-10K correspondence loader: GeoAware-SC's benchmark on the official AP-10K release, three layouts.

On disk (root = ap10k/ap-10k/, the release as its ap-10k.zip unpacks):

    annotations/ap10k-{train,val,test}-split{1,2,3}.json     COCO style; split 1 is read
    data/<12-digit image id>.jpg
    ap-10k_is_crowd.txt          GeoAware-SC's list of images with several animals (here or one folder up)
    pair_lists.json              the pair lists, built here on first use (ap10k/pair_lists.py)

Layouts and their splits: `intra-species` (trn, val, test; category: the species), `cross-species`
(val, test; two species of one family; category: the family) and `cross-family` (val, test; two
families; category "all"). The lists are built by GeoAware-SC's rules (ap10k/pair_lists.py) and kept in
pair_lists.json with the sha256 of the annotation files and the crowd list they were built from; they
are built again when those change.

Each pair holds the keypoints labelled (visibility 1 or 2) in both images (and apart, for KAP, those labelled in
the source only), ids "0".."16" (AP-10K's 17 keypoints: eyes, nose, neck, root of tail, then shoulder, elbow, paw
of the front legs and hip, knee, paw of the back legs, left before right), in annotated pixels as they are (as GeoAware-SC uses them).
GeoAware-SC's loader halves the visibility and then multiplies x, y and visibility by it, which moves a
keypoint of visibility 1 to half its coordinates; here it keeps its place. Boxes are the COCO `bbox`
(x, y, w, h) as (x, y, x + w, y + h): the PCK threshold is alpha times its larger side, as GeoAware-SC's
(`--pck-norm bbox`). Image sizes are the annotated ones; an image with an EXIF orientation gets its
keypoints and box turned with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ap10k.pair_lists import ANNOTATION_FILES, Animal, build_pair_lists, read_animals, read_crowd_list
from semcorr.config.settings import DataSettings
from semcorr.data.images import ImageRef, image_ref, orient_box, orient_points, stored_size
from semcorr.data.pairs import DatasetError, PairRecord, PairSet, check_split, collect_pairs, missing_root_error
from semcorr.storage.files import file_sha256, write_json

NAME = "ap10k"
# layout (config/settings.py:LAYOUTS) -> its splits
SPLITS = {"intra-species": ("trn", "val", "test"), "cross-species": ("val", "test"), "cross-family": ("val", "test")}
CROWD_LIST = "ap-10k_is_crowd.txt"
GEOAWARE_COMMIT = "99fd6b6a37d22aa2fabe75e7f48a3eaba51cfb72"
CROWD_LIST_URL = f"https://raw.githubusercontent.com/Junyi42/GeoAware-SC/{GEOAWARE_COMMIT}/data/{CROWD_LIST}"
PAIR_LISTS = "pair_lists.json"
PAIR_LISTS_FORMAT = 1  # raised when the builder changes: kept lists of another format are built again
EXPECTED_LAYOUT = """\
  ap-10k/
    annotations/ap10k-{train,val,test}-split1.json
    data/<image id>.jpg
    ap-10k_is_crowd.txt   (GeoAware-SC's crowd list; or in the folder above)
"""


def load(root: Path, data: DataSettings) -> PairSet:
    """The pairs of `data.split` in layout `data.layout`, built from the annotations on first use."""
    layout, split = data.layout, data.split
    if layout not in SPLITS:
        raise DatasetError(f"AP-10K has no layout {layout!r}: choose one of {', '.join(SPLITS)}")
    check_split(f"{NAME} {layout}", split, SPLITS[layout])
    needed = [root / "annotations" / name for name in ANNOTATION_FILES] + [root / "data"]
    missing = [path for path in needed if not path.exists()]
    if missing:
        raise missing_root_error(NAME, root, EXPECTED_LAYOUT, missing)
    animals = read_animals(root / "annotations")
    lists, note = kept_pair_lists(root, animals)
    records = _records(root, lists["pairs"][layout][split], animals)
    pairset = collect_pairs(
        NAME, split, root, records, limit=data.limit, clamp=data.clamp_keypoints, pck_norm=data.pck_norm
    )
    pairset.notes[:0] = [note] if note else []
    return pairset


def crowd_list_path(root: Path) -> Path:
    """GeoAware-SC's crowd list: in `root` or the folder above it (where GeoAware-SC and download.py put it)."""
    candidates = [root / CROWD_LIST, root.parent / CROWD_LIST]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise DatasetError(
            f"AP-10K's pair lists need GeoAware-SC's crowd list {CROWD_LIST}, not found at {candidates[0]} or "
            f"{candidates[1]}: `python download.py --datasets ap10k` fetches it, or get it from {CROWD_LIST_URL} "
            "and put it there."
        )
    return found


def kept_pair_lists(root: Path, animals: dict[str, Animal]) -> tuple[dict, str | None]:
    """The pair lists of the dataset at `root`: read from pair_lists.json when it was built from these
    annotation files and crowd list, else built and kept there; and a note of what was done (None: read)."""
    crowd = crowd_list_path(root)
    inputs = {name: file_sha256(root / "annotations" / name) for name in ANNOTATION_FILES}
    inputs[CROWD_LIST] = file_sha256(crowd)
    path = root / PAIR_LISTS
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None
    if isinstance(kept, dict) and kept.get("format") == PAIR_LISTS_FORMAT and kept.get("inputs") == inputs:
        return kept, None
    start = time.perf_counter()
    lists = {"format": PAIR_LISTS_FORMAT, "inputs": inputs, **build_pair_lists(animals, read_crowd_list(crowd))}
    built = f"AP-10K pair lists built in {time.perf_counter() - start:.1f} s"
    if kept is not None:
        built += f" again ({path} was built from other annotations or by another version)"
    try:
        write_json(path, lists)
    except OSError as exc:
        return lists, f"{built}; not kept: cannot write {path} ({exc.strerror or exc})"
    return lists, f"{built}, kept in {path}"


def _records(root: Path, names: list[str], animals: dict[str, Animal]) -> Iterator[PairRecord]:
    images: dict[str, ImageRef] = {}
    for name in names:
        pair, _, category = name.rpartition(":")
        src, trg = (animals[stem] for stem in pair.split("-"))
        shared = np.flatnonzero((src.keypoints[:, 2] > 0) & (trg.keypoints[:, 2] > 0))
        only = np.flatnonzero((src.keypoints[:, 2] > 0) & (trg.keypoints[:, 2] == 0))  # KAP scores them too
        src_ref, trg_ref = _image(root, src, images), _image(root, trg, images)
        yield PairRecord(
            pair_id=name,
            dataset=NAME,
            category=category,
            src=src_ref,
            trg=trg_ref,
            src_kps=_keypoints(src, shared, src_ref),
            trg_kps=_keypoints(trg, shared, trg_ref),
            kp_ids=[str(i) for i in shared],
            src_only_ids=[str(i) for i in only],
            src_only_kps=_keypoints(src, only, src_ref),
            src_bbox=_box(src, src_ref),
            trg_bbox=_box(trg, trg_ref),
        )


def _image(root: Path, animal: Animal, images: dict[str, ImageRef]) -> ImageRef:
    """The image of `animal`, its size as annotated; its EXIF orientation from the file's header."""
    key = f"{NAME}/{animal.stem}"
    if key not in images:
        path = root / "data" / animal.file_name
        ref = image_ref(key, path)
        if stored_size(ref) != animal.size:  # a resized copy: load_image says so, --rescale-annotations scales
            ref = ImageRef(key, str(path), animal.size)
        images[key] = ref
    return images[key]


def _keypoints(animal: Animal, ids: np.ndarray, ref: ImageRef) -> np.ndarray:
    points = animal.keypoints[ids, :2].astype(np.float32)
    return orient_points(points, ref.orientation, stored_size(ref))


def _box(animal: Animal, ref: ImageRef) -> tuple[float, float, float, float] | None:
    x, y, w, h = animal.bbox
    return orient_box((x, y, x + w, y + h), ref.orientation, stored_size(ref))
