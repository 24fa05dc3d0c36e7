"""SPair-U (Jamais Vu's unseen keypoints) read from SPair-71k's folder as its loader reads them; tests/test_jamaisvu.py
compares the pairs with the reference's own loader."""

import json

import numpy as np
import pytest
from dataset_factory import FakeImage, FakePair, make_spair, make_spair_u, synthetic_spair_u

from semcorr.data.datasets import load_pairs
from semcorr.data.pairs import DatasetError
from semcorr.engine.flip import check_flip_pairs


def spair_u_root(tmp_path, pairs, **kw):
    root = make_spair(tmp_path / "SPair-71k", pairs)  # SPair-71k itself (its own keypoints play no part)
    return make_spair_u(root, pairs, **kw)


def test_pairs_by_category_keypoints_from_the_image_annotations(tmp_path):
    pairs = synthetic_spair_u()
    pairset = load_pairs("spair-u", root=spair_u_root(tmp_path, pairs))
    expected = sorted(pairs, key=lambda p: p.src.category)  # files are numbered dog, cat, chair: read by category
    assert [(p.src.key, p.trg.key) for p in pairset.pairs] == [
        (f"spair/{p.src.category}/{p.src.name}", f"spair/{p.trg.category}/{p.trg.name}") for p in expected
    ]  # SPair-71k's image keys: one feature cache entry serves both benchmarks
    for got, want in zip(pairset.pairs, expected, strict=True):
        shared = want.common_ids()  # ascending as numbers: "9" before "13"
        only = sorted(set(want.src.kps) - set(want.trg.kps))
        assert (got.dataset, got.category, got.kp_ids, got.src_only_ids) == (
            "spair-u", want.src.category, [str(i) for i in shared], [str(i) for i in only]
        )  # fmt: skip
        np.testing.assert_array_equal(got.src_kps, [want.src.kps[i] for i in shared])
        np.testing.assert_array_equal(got.trg_kps, [want.trg.kps[i] for i in shared])
        np.testing.assert_array_equal(got.src_only_kps, np.reshape([want.src.kps[i] for i in only], (-1, 2)))
        assert (got.src_bbox, got.trg_bbox, got.trg.size) == (want.src.box(), want.trg.box(), want.trg.size)
        assert got.kp_mirror is None and got.kp_flags == {} and got.flags["viewpoint_variation"] == 0
    assert any(p.src_only_ids for p in pairset.pairs) and pairset.split == "test"


def test_windows_names_a_pair_without_shared_keypoints_and_the_limit(tmp_path):
    a = FakeImage("a", "cat", (60, 40), {0: (5.0, 5.0), 12: (20.0, 9.0)})
    b = FakeImage("b", "cat", (60, 40), {12: (30.0, 10.0), 29: (40.0, 20.0)})
    c = FakeImage("c", "cat", (60, 40), {1: (30.0, 10.0)})
    root = spair_u_root(tmp_path, [FakePair(a, b), FakePair(a, c), FakePair(b, a)], windows_names=True)
    pairset = load_pairs("spair-u", root=root)
    assert [p.pair_id for p in pairset.pairs] == ["000001-a-b:cat", "000003-b-a:cat"]  # the official ':' names
    assert pairset.skipped == {"no keypoints": 1}
    assert (pairset.pairs[0].kp_ids, pairset.pairs[0].src_only_ids) == (["12"], ["0"])
    assert len(load_pairs("spair-u", root=root, limit=1).pairs) == 1


def test_missing_annotations_and_slots_the_reference_does_not_read_are_clear_errors(tmp_path):
    root = make_spair(tmp_path / "SPair-71k", synthetic_spair_u()[:2])
    with pytest.raises(DatasetError, match="SPair-U not found") as err:
        load_pairs("spair-u", root=root)
    assert "ExtraPairAnnotation" in str(err.value) and "JamaisVuData/SPair-U.zip" in str(err.value)
    with pytest.raises(DatasetError, match="spair-u has no split 'trn'"):
        load_pairs("spair-u", root=root, split="trn")
    pair = FakePair(FakeImage("a", "cat", (60, 40), {0: (5.0, 5.0)}), FakeImage("b", "cat", (60, 40), {0: (9.0, 5.0)}))
    make_spair_u(root, [pair])
    path = root / "ExtraImageAnnotation" / "cat" / "a.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "kps": {"0": [5, 5], "30": [1, 1]}}))
    with pytest.raises(DatasetError, match=r"a\.json: malformed SPair-U image annotation: points in slots 30"):
        load_pairs("spair-u", root=root)


def test_flip_alignment_needs_partners_that_spair_u_does_not_define(tmp_path):
    pairset = load_pairs("spair-u", root=spair_u_root(tmp_path, synthetic_spair_u()[:1]))
    with pytest.raises(DatasetError, match="--flip-align needs each keypoint's left-right partner"):
        check_flip_pairs(pairset.pairs, pairset.dataset)
