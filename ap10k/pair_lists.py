"""AP-10K's correspondence pair lists, built from the official annotations by the rules of GeoAware-SC's
prepare_ap10k.ipynb (github.com/Junyi42/GeoAware-SC, which made the benchmark), pair for pair.

Its rules (cells 0-5 of the notebook):

1. One animal per image: the annotations of split 1, files read train, test, val; the first annotation
   of each image is kept, merged with its image and filed under its family (`supercategory`) and
   species (`name`).
2. Per species, its images in file-name order: those on GeoAware-SC's crowd list
   (`ap-10k_is_crowd.txt`) and those whose stored `num_keypoints` is under 3 are left out; of the rest
   the last 30 are test, the 20 before them val, the others train.
3. A pair is possible when sum_k (v_src,k / 2) * (v_trg,k / 2) >= 3, v the visibility (0, 1 or 2):
   three keypoints labelled in both images, where one of visibility 1 counts a half (a quarter
   against another 1).
4. Each kind of set draws from its own random.Random(42) stream, in this order:
   - intra-species: splits trn, test, val; for each species its images shuffled, every two of the
     shuffled order (the earlier is the source), and of the possible ones min(50 x images, all) drawn
     for trn, all for test and val (drawn with sample() all the same: it orders them);
   - cross-species: splits val, test; each family of two species or more: for each two of its species
     (the earlier one gives the source) every source x target, with one random() per combination (the
     notebook meant to swap source and target with it but does not), pooled over the family; of the
     possible ones min(400 val, 900 test, all) drawn;
   - cross-family: splits test, val; for each two families (the earlier gives the source) every image
     of one x every image of the other; of the possible ones min(30 test, 20 val, all) drawn.
   A pair is named `<source>-<target>:<category>` (the images' 12-digit ids; the category is the
   species, the family, or "all").

Species and families are taken in sorted name order. The notebook walks the folders it wrote in the
order the file system lists them, which decides which images are test, val and train and where each
species meets the random stream; that order is not published (so neither are lists the toolkit could
match), and sorted order is the one that can be reproduced: these lists are the notebook's own on a
sorted listing (benchmarks/make_ap10k_goldens.py; tests/test_ap10k.py compares them pair for pair).
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcorr.data.pairs import DatasetError

ANNOTATION_FILES = ("ap10k-train-split1.json", "ap10k-test-split1.json", "ap10k-val-split1.json")  # read in order
SEED = 42
TEST_IMAGES, VAL_IMAGES = 30, 20  # per species
MIN_KEYPOINTS = 3  # an image's stored num_keypoints
MIN_SHARED = 3  # sum of the keypoints' (v_src / 2) * (v_trg / 2)
TRAIN_PAIRS_PER_IMAGE = 50
CROSS_SPECIES_PAIRS = {"val": 400, "test": 900}  # per family, drawn in this order
CROSS_FAMILY_PAIRS = {"test": 30, "val": 20}  # per two families, drawn in this order
INTRA_SPECIES_SPLITS = ("trn", "test", "val")  # drawn in this order


@dataclass(frozen=True)
class Animal:
    """The kept annotation of one image, as annotated."""

    stem: str  # the image id in 12 digits, as the notebook names it
    family: str
    species: str
    file_name: str  # in data/
    size: tuple[int, int]  # (W, H)
    keypoints: np.ndarray  # (17, 3): x, y, visibility 0 (not labelled), 1 or 2
    bbox: tuple[float, float, float, float]  # COCO: x, y, w, h
    num_keypoints: int  # as stored: the filter reads it, not the keypoints


def read_animals(folder: Path) -> dict[str, Animal]:
    """Each image's kept annotation, by stem (rule 1), from the annotation files in `folder`."""
    annotations, images, categories = [], {}, []
    for name in ANNOTATION_FILES:
        path = folder / name
        try:
            content = json.loads(path.read_text())
            annotations += [(path, a, a["image_id"]) for a in content["annotations"]]
            images |= {image["id"]: image for image in content["images"]}
            categories = categories or content.get("categories") or []
            species = {c["id"]: (c.get("supercategory"), c.get("name")) for c in categories}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: not an AP-10K annotation file ({type(exc).__name__}: {exc})") from None
    animals, seen = {}, set()
    for path, annotation, image_id in annotations:
        if image_id in seen:
            continue
        seen.add(image_id)
        family, kind = species.get(annotation.get("category_id"), (None, None))
        if image_id in images and family and kind:
            animal = _animal({**annotation, **images[image_id]}, family, kind, path)
            animals[animal.stem] = animal
    if len({a.keypoints.shape for a in animals.values()}) > 1:
        raise DatasetError(f"{folder}: the annotations give different numbers of keypoints; AP-10K gives 17 each")
    return animals


def _animal(merged: dict, family: str, species: str, path: Path) -> Animal:
    try:
        keypoints = np.asarray(merged["keypoints"], dtype=np.float64).reshape(-1, 3)
        x, y, w, h = (float(v) for v in merged["bbox"])
        return Animal(
            stem=str(merged["id"]).zfill(12),
            family=family,
            species=species,
            file_name=str(merged["file_name"]),
            size=(int(merged["width"]), int(merged["height"])),
            keypoints=keypoints,
            bbox=(x, y, w, h),
            num_keypoints=int(merged["num_keypoints"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"{path}: malformed annotation of image {merged.get('id')} ({type(exc).__name__}: {exc})"
        ) from None


def read_crowd_list(path: Path) -> set[str]:
    """The image stems on GeoAware-SC's crowd list (one 12-digit id a line)."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def species_splits(animals: dict[str, Animal], crowd: set[str]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(family, species) in sorted order -> its trn / val / test images (rule 2)."""
    members = defaultdict(list)
    for animal in animals.values():
        members[(animal.family, animal.species)].append(animal)
    splits = {}
    for key in sorted(members):
        kept = [a.stem for a in sorted(members[key], key=lambda a: f"{a.stem}.json")
                if a.stem not in crowd and a.num_keypoints >= MIN_KEYPOINTS]  # fmt: skip
        test = min(TEST_IMAGES, len(kept))
        val = min(VAL_IMAGES, len(kept) - test)
        train = len(kept) - test - val
        splits[key] = {"trn": kept[:train], "val": kept[train : train + val], "test": kept[train + val :]}
    return splits


def build_pair_lists(animals: dict[str, Animal], crowd: set[str]) -> dict:
    """{"splits": {"family/species": {split: stems}}, "pairs": {layout: {split: pair names}}}: every set
    of the benchmark, each list ordered by category, then name (the order the benchmark evaluates in)."""
    splits = species_splits(animals, crowd)
    weights = {stem: a.keypoints[:, 2] / 2 for stem, a in animals.items()}
    pairs = {
        "intra-species": _intra_species(splits, weights),
        "cross-species": _cross_species(splits, weights),
        "cross-family": _cross_family(splits, weights),
    }
    ordered = {layout: {split: sorted(names, key=lambda n: (n.rpartition(":")[2], n)) for split, names in sets.items()}
               for layout, sets in pairs.items()}  # fmt: skip
    return {"splits": {f"{f}/{s}": lists for (f, s), lists in splits.items()}, "pairs": ordered}


def _intra_species(splits: dict, weights: dict[str, np.ndarray]) -> dict[str, list[str]]:
    stream, sets = random.Random(SEED), {}
    for split in INTRA_SPECIES_SPLITS:
        names = []
        for (_, species), lists in splits.items():
            images = list(lists[split])
            stream.shuffle(images)
            src, trg = np.triu_indices(len(images), 1)  # itertools.combinations' order
            cap = TRAIN_PAIRS_PER_IMAGE * len(images) if split == "trn" else len(src)
            names += _drawn(stream, images, images, (src, trg), cap, species, weights)
        sets[split] = names
    return sets


def _cross_species(splits: dict, weights: dict[str, np.ndarray]) -> dict[str, list[str]]:
    stream, sets = random.Random(SEED), {}
    for split, cap in CROSS_SPECIES_PAIRS.items():
        names = []
        for family, species in _families(splits).items():
            if len(species) < 2:
                continue
            images = [stem for s in species for stem in splits[(family, s)][split]]
            starts = np.cumsum([0] + [len(splits[(family, s)][split]) for s in species])
            src, trg = [], []
            for a, b in itertools.combinations(range(len(species)), 2):
                na, nb = starts[a + 1] - starts[a], starts[b + 1] - starts[b]
                for _ in range(na * nb):  # the notebook's no-op swap: one draw per combination
                    stream.random()
                src.append(starts[a] + np.repeat(np.arange(na), nb))  # itertools.product's order
                trg.append(starts[b] + np.tile(np.arange(nb), na))
            names += _drawn(stream, images, images, (np.concatenate(src), np.concatenate(trg)), cap, family, weights)
        sets[split] = names
    return sets


def _cross_family(splits: dict, weights: dict[str, np.ndarray]) -> dict[str, list[str]]:
    stream, sets = random.Random(SEED), {}
    for split, cap in CROSS_FAMILY_PAIRS.items():
        members = {family: [stem for s in species for stem in splits[(family, s)][split]]
                   for family, species in _families(splits).items()}  # fmt: skip
        names = []
        for a, b in itertools.combinations(members, 2):
            src, trg = members[a], members[b]
            product = (np.repeat(np.arange(len(src)), len(trg)), np.tile(np.arange(len(trg)), len(src)))
            names += _drawn(stream, src, trg, product, cap, "all", weights)
        sets[split] = names
    return sets


def _families(splits: dict) -> dict[str, list[str]]:
    """Family -> its species, both in sorted order."""
    families = defaultdict(list)
    for family, species in splits:
        families[family].append(species)
    return dict(families)


def _drawn(
    stream: random.Random,
    src: list[str],
    trg: list[str],
    candidates: tuple[np.ndarray, np.ndarray],
    cap: int,
    category: str,
    weights: dict[str, np.ndarray],
) -> list[str]:
    """The names of min(cap, possible) pairs drawn with `stream` from the candidate pairs (indices into `src`
    and `trg`, in the notebook's order) that share three keypoints (rule 3)."""
    if not len(candidates[0]):
        return []
    shared = np.stack([weights[s] for s in src]) @ np.stack([weights[t] for t in trg]).T  # exact: quarters
    keep = shared[candidates] >= MIN_SHARED
    s, t = candidates[0][keep], candidates[1][keep]
    count = min(cap, len(s))
    chosen = stream.sample(range(len(s)), count) if count > 0 else []  # sample() picks by index alone
    return [f"{src[s[i]]}-{trg[t[i]]}:{category}" for i in chosen]
