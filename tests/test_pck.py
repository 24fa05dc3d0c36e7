"""PCK against hand-computed cases, each normalisation and both averagings."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import pck
from semcorr.data.images import ImageRef
from semcorr.data.pairs import PairRecord, threshold_lengths, threshold_problems
from semcorr.runs import folders


def pair(pair_id, category, trg_kps, trg_size=(200, 100), bbox=None, kp_ids=None):
    trg_kps = np.asarray(trg_kps, dtype=np.float32)
    return PairRecord(
        pair_id=pair_id,
        dataset="test",
        category=category,
        src=ImageRef(f"s{pair_id}", "s.jpg", (50, 50)),
        trg=ImageRef(f"t{pair_id}", "t.jpg", trg_size),
        src_kps=np.zeros_like(trg_kps),
        trg_kps=trg_kps,
        kp_ids=kp_ids or [str(i) for i in range(len(trg_kps))],
        trg_bbox=bbox,
    )


def test_threshold_lengths():
    p = pair("a", "cat", [[10, 20], [40, 30], [25, 60]], trg_size=(200, 100), bbox=(5, 10, 55, 90))
    q = pair("b", "cat", [[0, 0], [7, 1]], trg_size=(30, 40), bbox=(0, 0, 10, 5))
    assert threshold_lengths([p, q], "bbox").tolist() == [80, 10]  # max(50, 80), max(10, 5)
    assert threshold_lengths([p, q], "image").tolist() == [200, 40]
    assert threshold_lengths([p, q], "kpbox").tolist() == [40, 7]  # max(30, 40), max(7, 1)
    with pytest.raises(ValueError, match="bounding box"):
        threshold_lengths([pair("b", "cat", [[0, 0]])], "bbox")


@pytest.mark.parametrize(
    ("bbox", "kps", "norm", "problem"),
    [
        ((10, 10, 10, 10), [[1, 1]], "bbox", "has no width or no height"),
        ((10, 10, 10, 50), [[1, 1]], "bbox", "has no width or no height"),  # a line, L = 40 but no box
        ((50, 10, 20, 60), [[1, 1]], "bbox", "is inverted"),  # x2 < x1, yet max(x2 - x1, y2 - y1) = 50 > 0
        ((0, 0, 20000, 90), [[1, 1]], "bbox", "over 2x the target image's longer side (200 px)"),
        ((0, 0, float("nan"), 90), [[1, 1]], "bbox", "NaN or infinite"),
        (None, [[5, 5]], "kpbox", "span no length (one keypoint"),
        (None, [[5, 5], [5, 5], [5, 5]], "kpbox", "span no length"),
    ],
)
def test_a_threshold_length_that_cannot_be_is_named_and_never_scored(bbox, kps, norm, problem):
    good = pair("good", "cat", [[10, 20], [40, 30]], trg_size=(200, 100), bbox=(5, 10, 55, 90))
    bad = pair("bad", "cat", kps, trg_size=(200, 100), bbox=bbox)
    problems = threshold_problems([good, bad], norm)
    assert list(problems) == [1] and problem in problems[1]
    with pytest.raises(ValueError, match=f"pair bad has no usable PCK threshold length L .--pck-norm {norm}."):
        pck.keypoint_table([good, bad], np.zeros((2 + len(kps), 2)), [0.1], norm)


def test_the_bound_on_the_threshold_length_is_twice_the_image():
    p = pair("a", "cat", [[0, 0]], trg_size=(200, 100), bbox=(-100, 0, 300, 90))  # L = 400 = 2 x 200: kept
    assert threshold_problems([p], "bbox") == {}
    assert list(threshold_problems([replace(p, trg_bbox=(-100, 0, 301, 90))], "bbox")) == [0]


def test_both_averagings_by_hand():
    # pair a: 4 keypoints, L = 100 (image); pair b: 1 keypoint, L = 100
    a = pair("a", "cat", [[0, 0]] * 4, trg_size=(100, 50))
    b = pair("b", "dog", [[0, 0]], trg_size=(100, 50))
    pred = np.array([[3, 4], [6, 8], [0, 20], [30, 40], [9, 0]], dtype=float)  # distances 5, 10, 20, 50, 9
    table = pck.keypoint_table([a, b], pred, [0.05, 0.1], "image")
    np.testing.assert_allclose(table["distance"], [5, 10, 20, 50, 9])
    s = pck.summarize(table)
    # alpha 0.05 (5 px): a has 1/4 correct (distance 5 counts: <=), b 0/1
    assert s["pck@0.05"]["per_keypoint"] == pytest.approx(100 * 1 / 5)
    assert s["pck@0.05"]["per_image"] == pytest.approx(100 * (0.25 + 0) / 2)
    # alpha 0.1 (10 px): a 2/4, b 1/1
    assert s["pck@0.1"]["per_keypoint"] == pytest.approx(100 * 3 / 5)
    assert s["pck@0.1"]["per_image"] == pytest.approx(100 * (0.5 + 1) / 2)
    assert s["per_category"]["cat"]["pck@0.1"] == {"per_image": 50.0, "per_keypoint": 50.0}
    assert s["per_category"]["dog"]["pck@0.05"]["per_keypoint"] == 0.0
    assert s["per_keypoint_id"]["cat"]["0"]["pck@0.05"] == 100.0
    assert s["per_keypoint_id"]["cat"]["3"]["pck@0.1"] == 0.0
    assert (s["pairs"], s["keypoints"]) == (2, 5)


def test_bbox_and_kpbox_thresholds_by_hand():
    p = pair("a", "car", [[0, 0], [20, 0], [0, 10]], bbox=(0, 0, 40, 30))
    pred = np.array([[1.9, 0], [22.1, 0], [0, 10]])
    by_bbox = pck.keypoint_table([p], pred, [0.05], "bbox")  # L = 40 -> 2 px
    assert by_bbox["correct@0.05"].tolist() == [True, False, True]
    by_kpbox = pck.keypoint_table([p], pred, [0.1], "kpbox")  # L = 20 -> 2 px
    assert by_kpbox["correct@0.1"].tolist() == [True, False, True]


def test_summary_is_recomputable_from_the_csv(tmp_path):
    rng = np.random.default_rng(0)
    pairs = [
        pair(str(i), ["cat", "dog"][i % 2], rng.uniform(0, 100, (1 + i % 4, 2)), bbox=(0, 0, 80, 60)) for i in range(9)
    ]
    pred = np.concatenate([p.trg_kps + rng.normal(0, 6, p.trg_kps.shape) for p in pairs])
    table = pck.keypoint_table(pairs, pred, [0.05, 0.1, 0.2], "bbox")
    folders.write_run(tmp_path, "evaluation", {}, per_keypoint=table)
    assert pck.summarize(folders.read_run(tmp_path).keypoints()) == pck.summarize(table)


def test_pck_dagger_counts_a_hit_only_where_its_own_keypoint_is_the_nearest():
    """Jamais Vu's rule: of the pair's keypoints visible in both images, the prediction's nearest ground truth must be
    its own; equal distances go to the lowest id (ids "2" < "10" as numbers); distance < alpha * L, strictly."""
    gt = [[0, 0], [20, 0], [100, 100], [60, 0], [200, 200]]
    p = pair("a", "cat", gt, bbox=(0, 0, 100, 50), kp_ids=["10", "2", "7", "3", "4"])  # L = 100
    pred = np.array(
        [
            [10, 0],  # "10": as far from "2" (a lower id) as from its own: not its own
            [10, 0],  # "2": as far from "10" (a higher id) as from its own: its own
            [100, 108],  # "7": its own is nearest
            [45, 0],  # "3": 15 px from its own, 25 px from "2": its own
            [10, 1],  # "4": near "10" and "2", far from its own
        ],
        dtype=float,
    )
    table = pck.keypoint_table([p], pred, [0.1, 0.15], "bbox")
    assert pck.nearest_is_own(table).tolist() == [False, True, True, True, False]
    dagger = pck.pck_dagger(table)
    # 0.1 (10 px, strict): "2" (10 px: not < 10), "7" (8 px) -> 1 of 5; 0.15: "2", "7", "3" (15: not < 15) -> 2
    assert dagger["pck_dagger@0.1"] == {"per_image": 20.0, "per_keypoint": 20.0}
    assert dagger["pck_dagger@0.15"]["per_keypoint"] == 40.0
    assert dagger["per_category"]["cat"]["pck_dagger@0.15"]["per_image"] == 40.0
    assert pck.summarize(table)["pck@0.15"]["per_keypoint"] == 80.0  # PCK counts "10" and "3" too
    assert pck.nearest_is_own(table.iloc[:0]).tolist() == []
    shuffled = table.sample(frac=1.0, random_state=1)
    assert pck.nearest_is_own(shuffled).tolist() == pck.nearest_is_own(table)[shuffled.index].tolist()


def test_average_precision_is_scikit_learns_for_every_group_at_once():
    from sklearn.metrics import average_precision_score  # the definition Jamais Vu's KAP calls

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 1500)
    scores = rng.integers(0, 8, 1500) / 7.0  # many equal scores, within and across labels
    labels = (rng.random(1500) < 0.3).astype(float)
    labels[groups == 7] = 0.0  # a group without positives
    ap = pck.average_precision(scores, labels, groups)
    for g in range(40):
        if g == 7:
            assert np.isnan(ap[g])
            continue
        assert ap[g] == pytest.approx(average_precision_score(labels[groups == g], scores[groups == g]), abs=1e-12)


def test_kap_by_hand_both_averagings_and_the_category_weights():
    rows = [  # pair p: positives 0.9, 0.4; negatives 0.5, 0.2, 0.3 (the last keypoint is not visible in the target)
        ("p", "cat", "0", True, 0.9, 0.5),
        ("p", "cat", "1", True, 0.4, 0.2),
        ("p", "cat", "2", False, np.nan, 0.3),
        ("q", "dog", "0", True, 0.1, 0.6),  # pair q: positive 0.1 below its negative 0.6
    ]
    samples = pd.DataFrame(
        rows, columns=["pair_id", "category", "kp_id", "trg_visible", "positive@0.1", "negative@0.1"]
    )
    # p: ranked 0.9+ 0.5- 0.4+ 0.3- 0.2-: AP = 1/2 * 1 + 1/2 * 2/3; q: 0.6- 0.1+: AP = 1/2
    p_ap, q_ap = 0.5 + 1 / 3, 0.5
    kap = pck.kap(samples)
    assert kap["kap@0.1"]["per_image"] == pytest.approx(100 * (p_ap + q_ap) / 2)
    assert kap["kap@0.1"]["per_keypoint"] == pytest.approx(100 * (3 * p_ap + 1 * q_ap) / 4)  # weights: source-visible
    assert kap["per_category"]["cat"] == {"kap@0.1": {"per_image": pytest.approx(100 * p_ap),
                                                      "per_keypoint": pytest.approx(100 * p_ap)},
                                          "pairs": 1, "keypoints": 3}  # fmt: skip
    assert (kap["pairs"], kap["keypoints"]) == (2, 4)
