"""AP-10K correspondence: pair lists equal to GeoAware-SC's notebook's pair for pair, the loader on the released
layout (tests/dataset_factory.py), the lists kept beside the data, and the benchmark through the command line."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from dataset_factory import KP_COLOURS, FakeAnimal, make_ap10k, synthetic_ap10k
from model_factory import tiny_checkpoint

import ap10k
import evaluate
from ap10k.pair_lists import CROSS_FAMILY_PAIRS, CROSS_SPECIES_PAIRS, build_pair_lists, read_animals, read_crowd_list
from semcorr.cli.resolve import resolve
from semcorr.config.settings import LAYOUTS
from semcorr.data.datasets import load_pairs
from semcorr.data.images import load_image
from semcorr.data.pairs import DatasetError, threshold_lengths
from semcorr.runs.folders import read_run

GOLDENS = Path(__file__).parent / "fixtures" / "ap10k" / "notebook_lists.json.gz"
# (layout, split) -> the notebook's PairAnnotation folder
FOLDERS = {
    ("intra-species", "trn"): "trn", ("intra-species", "val"): "val", ("intra-species", "test"): "test",
    ("cross-species", "val"): "val_cross_species", ("cross-species", "test"): "test_cross_species",
    ("cross-family", "val"): "val_cross_family", ("cross-family", "test"): "test_cross_family",
}  # fmt: skip


# ---- the builder against the notebook --------------------------------------------------------------


@pytest.fixture(scope="module")
def goldens() -> dict:
    return json.loads(gzip.decompress(GOLDENS.read_bytes()))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    files, crowd = synthetic_ap10k()
    root = make_ap10k(tmp_path_factory.mktemp("ap10k") / "ap-10k", files=files, crowd=crowd, images=False)
    return build_pair_lists(read_animals(root / "annotations"), read_crowd_list(root / "ap-10k_is_crowd.txt"))


def test_the_lists_are_the_notebooks_pair_for_pair(built, goldens):
    assert built["splits"] == goldens["splits"]
    assert set(FOLDERS.values()) == set(goldens["pairs"])
    for (layout, split), folder in FOLDERS.items():
        assert sorted(built["pairs"][layout][split]) == goldens["pairs"][folder], (layout, split)
    assert tuple(built["pairs"]) == LAYOUTS["ap10k"] == tuple(ap10k.SPLITS)
    assert {layout: set(sets) for layout, sets in built["pairs"].items()} == {
        layout: set(splits) for layout, splits in ap10k.SPLITS.items()
    }


def test_the_goldens_reach_every_cap_the_notebook_draws_with(goldens):
    """The comparison above would not see a wrong cap or a wrong random stream unless sample() picks."""
    cat = goldens["splits"]["Felidae/cat"]["trn"]
    possible = len(cat) * (len(cat) - 1) // 2
    assert Counter(n.rpartition(":")[2] for n in goldens["pairs"]["trn"])["cat"] == 50 * len(cat) < possible
    per_family = Counter(n.rpartition(":")[2] for n in goldens["pairs"]["val_cross_species"])
    assert per_family["Canidae"] == CROSS_SPECIES_PAIRS["val"]
    per_family = Counter(n.rpartition(":")[2] for n in goldens["pairs"]["test_cross_species"])
    assert per_family == {"Felidae": CROSS_SPECIES_PAIRS["test"], "Canidae": CROSS_SPECIES_PAIRS["test"]}
    families = {
        stem: key.split("/")[0] for key, lists in goldens["splits"].items() for s in lists.values() for stem in s
    }
    per_two = Counter(tuple(families[s] for s in n[:-4].split("-")) for n in goldens["pairs"]["test_cross_family"])
    assert len(per_two) == 10 and set(per_two.values()) == {CROSS_FAMILY_PAIRS["test"]}
    assert all(a < b for a, b in per_two)  # the source from the family first in sorted order


def test_the_synthetic_set_has_the_cases_it_claims(built):
    files, crowd = synthetic_ap10k()
    kept = {stem for lists in built["splits"].values() for s in lists.values() for stem in s}
    assert not {f"{i:012d}" for i in crowd} & kept
    assert built["splits"]["Ursidae/polar bear"] == {"trn": [], "val": [], "test": []}
    assert "Bovidae" not in {n.rpartition(":")[2] for n in built["pairs"]["cross-species"]["test"]}
    visibility_one = [k for a in files["train"]["annotations"] for k in a["keypoints"][2::3] if k == 1]
    assert len(visibility_one) > 50


# ---- the loader ----------------------------------------------------------------------------------


def animals() -> list[FakeAnimal]:
    """Two families, three species; keypoints of visibility 1 decide which pairs are possible."""
    return [
        FakeAnimal(11, "Felidae", "cat", {0: (5, 6, 2), 1: (20, 8, 2), 2: (30, 20, 1), 3: (10, 30, 2), 4: (40, 10, 2)}),
        FakeAnimal(
            12,
            "Felidae",
            "cat",
            {0: (7, 7, 2), 1: (22, 9, 1), 2: (33, 21, 2), 3: (12, 29, 2), 16: (3, 40, 2)},
            size=(40, 52),
            orientation=6,
        ),
        FakeAnimal(13, "Felidae", "cat", {0: (8, 5, 2), 2: (25, 18, 2), 3: (14, 27, 2), 5: (30, 30, 2)}, size=(48, 40)),
        FakeAnimal(21, "Felidae", "lion", {0: (6, 6, 2), 1: (20, 10, 2), 3: (12, 30, 2), 4: (35, 12, 2)}, split="test"),
        FakeAnimal(22, "Felidae", "lion", {0: (9, 8, 2), 1: (21, 9, 2), 3: (11, 25, 2)}, size=(44, 44), split="val"),
        FakeAnimal(31, "Canidae", "dog", {0: (5, 5, 2), 1: (15, 9, 2), 2: (25, 10, 2), 3: (10, 20, 2)}, size=(40, 30)),
    ]


@pytest.fixture
def root(tmp_path) -> Path:
    return make_ap10k(tmp_path / "ap-10k", animals())


def names(pairset) -> list[str]:
    return [p.pair_id for p in pairset.pairs]


def unordered(pair_id: str) -> tuple[frozenset, str]:
    images, _, category = pair_id.rpartition(":")
    return frozenset(int(stem) for stem in images.split("-")), category


def test_pairs_hold_the_keypoints_labelled_in_both_in_place_with_the_box_as_threshold(root):
    pairset = load_pairs("ap10k", root=root)  # intra-species test: every image of a species is a test image
    # cat 11 - 13 share keypoints 0, 2 and 3 but 2 is of visibility 1 in 11: 1 + 1/2 + 1 < 3 (the notebook's weights)
    assert [unordered(n) for n in names(pairset)] == [
        (frozenset({11, 12}), "cat"), (frozenset({12, 13}), "cat"), (frozenset({21, 22}), "lion")
    ]  # fmt: skip
    by_stem = {a.stem: a for a in animals()}
    for pair in pairset.pairs:
        src, trg = (by_stem[stem] for stem in pair.pair_id.rpartition(":")[0].split("-"))
        ids = sorted(set(src.kps) & set(trg.kps))
        assert pair.kp_ids == [str(i) for i in ids]
        only = sorted(set(src.kps) - set(trg.kps))  # labelled in the source only: KAP's
        assert pair.src_only_ids == [str(i) for i in only]
        np.testing.assert_array_equal(pair.src_only_kps, np.reshape([src.kps[i][:2] for i in only], (-1, 2)))
        np.testing.assert_array_equal(pair.src_kps, [src.kps[i][:2] for i in ids])  # visibility 1 too: not halved
        np.testing.assert_array_equal(pair.trg_kps, [trg.kps[i][:2] for i in ids])
        x, y, w, h = trg.coco_bbox()
        np.testing.assert_allclose(pair.trg_bbox, (x, y, x + w, y + h), atol=1e-6)
        assert threshold_lengths([pair], "bbox")[0] == pytest.approx(max(w, h))
        assert (pair.src.size, pair.trg.size, pair.category) == (src.size, trg.size, src.species)
    assert any(pair.src_only_ids for pair in pairset.pairs)
    turned = {ref.key: ref for pair in pairset.pairs for ref in (pair.src, pair.trg)}["ap10k/000000000012"]
    assert turned.orientation == 6 and turned.size == (40, 52)
    rgb = np.asarray(load_image(turned)).astype(int)
    for kp_id, (x, y, _) in by_stem["000000000012"].kps.items():
        assert np.abs(rgb[y, x] - KP_COLOURS[kp_id % len(KP_COLOURS)]).max() < 60, kp_id


def test_each_layout_pairs_its_categories_source_first_in_sorted_order(root):
    cross_species = load_pairs("ap10k", root=root, layout="cross-species")
    assert sorted(names(cross_species)) == ["000000000011-000000000021:Felidae", "000000000011-000000000022:Felidae"]
    cross_family = load_pairs("ap10k", root=root, layout="cross-family", split="test")
    assert names(cross_family) == [f"000000000031-{i:012d}:all" for i in (11, 12, 13, 21, 22)]  # Canidae first
    with pytest.raises(DatasetError, match=r"no pairs in .* \(ap10k layout intra-species, split val\)"):
        load_pairs("ap10k", root=root, split="val")  # every species has 30 images or fewer: all are test
    with pytest.raises(DatasetError, match="ap10k cross-family has no split 'trn': choose one of val, test"):
        load_pairs("ap10k", root=root, layout="cross-family", split="train")
    with pytest.raises(DatasetError, match="AP-10K has no layout 'large'"):
        load_pairs("ap10k", root=root, layout="large")
    assert len(load_pairs("ap10k", root=root, layout="cross-family", limit=2).pairs) == 2


def test_the_lists_are_kept_beside_the_data_and_built_again_when_the_annotations_change(root, monkeypatch):
    first = load_pairs("ap10k", root=root)
    kept = root / "pair_lists.json"
    assert first.notes[0].startswith("AP-10K pair lists built in") and first.notes[0].endswith(f"kept in {kept}")
    monkeypatch.setattr(ap10k, "build_pair_lists", lambda *_: pytest.fail("built again"))
    again = load_pairs("ap10k", root=root)
    assert names(again) == names(first) and not again.notes
    monkeypatch.undo()

    make_ap10k(root, animals()[:-1])  # the dog is gone: no cross-family pairs, no Canidae
    changed = load_pairs("ap10k", root=root)
    assert "built in" in changed.notes[0] and "again (" in changed.notes[0]
    assert json.loads(kept.read_text())["pairs"]["cross-family"]["test"] == []
    kept.write_text("{not json")
    assert names(load_pairs("ap10k", root=root)) == names(changed)

    def refused(path, _):
        raise PermissionError(13, "Permission denied", str(path))

    (root / "ap-10k_is_crowd.txt").write_text(f"{11:012d}\n")  # the crowd list is an input too
    monkeypatch.setattr(ap10k, "write_json", refused)
    crowded = load_pairs("ap10k", root=root)
    assert crowded.notes[0].endswith(f"not kept: cannot write {kept} (Permission denied)")
    assert [unordered(n) for n in names(crowded)] == [(frozenset({12, 13}), "cat"), (frozenset({21, 22}), "lion")]


def test_what_is_missing_is_named_with_how_to_get_it(root, tmp_path):
    (root / "ap-10k_is_crowd.txt").rename(tmp_path / "ap-10k_is_crowd.txt")  # one folder up: found there
    assert len(load_pairs("ap10k", root=root).pairs) == 3
    (tmp_path / "ap-10k_is_crowd.txt").unlink()
    with pytest.raises(DatasetError, match=r"crowd list ap-10k_is_crowd.txt, not found .*download.py --datasets ap10k"):
        load_pairs("ap10k", root=root)
    with pytest.raises(DatasetError, match=r"(?s)ap10k not found at .*no .*ap10k-train-split1.json.*--datasets ap10k"):
        load_pairs("ap10k", root=tmp_path / "elsewhere")
    (root / "annotations" / "ap10k-val-split1.json").write_text("[]")
    with pytest.raises(DatasetError, match=r"ap10k-val-split1\.json: not an AP-10K annotation file"):
        load_pairs("ap10k", root=root)


# ---- the command line ----------------------------------------------------------------------------


def test_layouts_resolve_per_dataset():
    assert resolve("evaluation", {"dataset": "ap10k"}).data.layout == "intra-species"
    data = resolve("evaluation", {"dataset": "ap10k", "layout": "cross-family"}).data
    assert (data.layout, data.pck_norm) == ("cross-family", "bbox")
    assert resolve("evaluation", {"protocol": "original", "dataset": "ap10k"}).data.pck_norm == "bbox"
    assert resolve("evaluation", {}).data.layout == "large"
    with pytest.raises(
        ValueError, match="--layout small: ap10k has the layouts intra-species, cross-species, cross-fam"
    ):
        resolve("evaluation", {"dataset": "ap10k", "layout": "small"})


def test_evaluate_scores_a_layout_against_the_box_of_each_target(root, tmp_path):
    evaluate.main([
        "--checkpoint", str(tiny_checkpoint(tmp_path / "weights")), "--dataset", "ap10k", "--data-root", str(root),
        "--layout", "cross-family", "--device", "cpu", "--num-workers", "0", "--quiet", "--image-size", "56",
        "--no-cache", "--output-dir", str(tmp_path / "out"),
    ])  # fmt: skip
    (run,) = (tmp_path / "out").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert (config["settings"]["data"]["layout"], config["settings"]["data"]["pck_norm"]) == ("cross-family", "bbox")
    table = read_run(run).keypoints()
    boxes = {a.stem: max(a.coco_bbox()[2:]) for a in animals()}
    expected = table["pair_id"].map(lambda n: boxes[n.rpartition(":")[0].split("-")[1]])
    np.testing.assert_allclose(table["norm_L"], expected)
    assert set(table["category"]) == {"all"} and table["pair_id"].nunique() == 5
