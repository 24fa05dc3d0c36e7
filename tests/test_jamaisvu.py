"""SPair-U, PCK-dagger and KAP against Jamais Vu's own code: tests/fixtures/jamaisvu/goldens.json.gz holds what its
loader, compute_pck and compute_kap gave on the miniature SPair-U of tests/jamaisvu_scenario.py, with predictions
and similarity maps drawn for it (benchmarks/make_jamaisvu_goldens.py made it from a checkout of the reference)."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch
from jamaisvu_scenario import ALPHAS, CANVAS, GOLDENS, build_spair_u, similarity_map

import pck
from semcorr.data.datasets import load_pairs
from semcorr.data.geometry import Preprocess, image_geometry
from semcorr.data.pairs import threshold_lengths
from semcorr.engine import kap

PREP = Preprocess.create(CANVAS, 14, "pad", coordinates="canvas")  # the reference's 840 canvas, 60 x 60 patches


@pytest.fixture(scope="module")
def goldens() -> dict:
    return json.loads(gzip.decompress(GOLDENS.read_bytes()))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict:
    """Our SPair-U pairs of the same tree, by category."""
    pairset = load_pairs("spair-u", root=build_spair_u(tmp_path_factory.mktemp("jamaisvu") / "SPair-71k"))
    by_category: dict[str, list] = {}
    for pair in pairset.pairs:
        by_category.setdefault(pair.category, []).append(pair)
    return by_category


def to_canvas(pair, side: str, xy: np.ndarray) -> np.ndarray:
    """Original pixels -> the reference's canvas pixels (0 at the edge)."""
    return image_geometry(getattr(pair, side).size, PREP).to_input(xy) + 0.5


def columns(golden: dict, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair n's keypoint ids (the reference's used keypoints) and its source and target (K, 3) keypoints."""
    kps = np.array(golden["loader"]["kps"])
    return [str(i) for i in golden["loader"]["used_kps"]], kps[2 * n], kps[2 * n + 1]


def test_the_pairs_and_keypoints_are_the_reference_loaders(goldens, pairs):
    assert list(pairs) == list(goldens["categories"])  # the categories, sorted
    for category, golden in goldens["categories"].items():
        ours = pairs[category]
        assert [[p.src.path.split("/")[-1], p.trg.path.split("/")[-1]] for p in ours] == golden["loader"]["pairs"]
        for n, pair in enumerate(ours):
            ids, src, trg = columns(golden, n)
            both = [ids[c] for c in range(len(ids)) if src[c, 2] > 0 and trg[c, 2] > 0]
            only = [ids[c] for c in range(len(ids)) if src[c, 2] > 0 and trg[c, 2] == 0]
            assert (pair.kp_ids, pair.src_only_ids) == (both, only)
            at = {kp: c for c, kp in enumerate(ids)}
            np.testing.assert_allclose(to_canvas(pair, "src", pair.src_kps), src[[at[k] for k in both], :2], atol=1e-4)
            np.testing.assert_allclose(to_canvas(pair, "trg", pair.trg_kps), trg[[at[k] for k in both], :2], atol=1e-4)
            np.testing.assert_allclose(
                to_canvas(pair, "src", pair.src_only_kps), src[[at[k] for k in only], :2], atol=1e-4
            )
            scale = CANVAS / max(pair.trg.size)
            assert threshold_lengths([pair], "bbox")[0] * scale == pytest.approx(
                golden["loader"]["thresholds"][n], rel=1e-12
            )


def our_table(goldens, pairs) -> pd.DataFrame:
    """The per-keypoint table of our pairs with the reference's predictions (canvas -> original pixels)."""
    rows, tables = [], []
    for category, golden in goldens["categories"].items():
        for n, pair in enumerate(pairs[category]):
            ids, _, _ = columns(golden, n)
            canvas = np.array(golden["inputs"]["pred"][n])[[ids.index(k) for k in pair.kp_ids]]
            rows.append(image_geometry(pair.trg.size, PREP).to_original(canvas - 0.5))
        tables.append(pck.keypoint_table(pairs[category], np.concatenate(rows), sorted(ALPHAS), "bbox", strict=True))
        rows = []
    return pd.concat(tables, ignore_index=True)


def assert_figures(ours: dict, reference: dict, metric: str) -> None:
    """A category's figures against the reference's `correct` (per keypoint) and `img_correct` (per image; its means
    of PCK and of per-pair AP are float32)."""
    for i, alpha in enumerate(ALPHAS):
        assert ours[f"{metric}@{alpha:g}"]["per_keypoint"] == pytest.approx(100 * reference["correct"][i], rel=1e-6)
        assert ours[f"{metric}@{alpha:g}"]["per_image"] == pytest.approx(100 * reference["img_correct"][i], rel=1e-6)


def test_pck_and_pck_dagger_are_the_references_per_category_and_overall(goldens, pairs):
    summary = pck.summarize(our_table(goldens, pairs))
    for category, golden in goldens["categories"].items():
        assert_figures(summary["per_category"][category], golden["pck"], "pck")
        assert_figures(summary["pck_dagger"]["per_category"][category], golden["pck_dagger"], "pck_dagger")
    for metric, figures in (("pck", summary), ("pck_dagger", summary["pck_dagger"])):
        for averaging, values in goldens["overall"][metric].items():
            for alpha, value in zip(ALPHAS, values, strict=True):
                assert figures[f"{metric}@{alpha:g}"][averaging] == pytest.approx(100 * value, rel=1e-6)
    assert summary["pck_dagger"]["pck_dagger@0.1"]["per_keypoint"] < summary["pck@0.1"]["per_keypoint"]  # ties and
    # predictions nearer another keypoint count against PCK-dagger only


def our_kap_samples(goldens, pairs) -> tuple[pd.DataFrame, dict]:
    """Our KAP scores of every source-visible keypoint from the reference's maps; and the reference's raw
    extract_kap_vals output of each (pair_id, kp_id): within and beyond maxima at its alphas."""
    frames, raw = [], {}
    for category, golden in goldens["categories"].items():
        for n, pair in enumerate(pairs[category]):
            ids, _, _ = columns(golden, n)
            query = kap.with_source_only(pair)
            drawn = {ids[m["column"]]: m for m in golden["inputs"]["maps"][n]}  # in ascending column order
            sim = torch.from_numpy(
                np.stack([similarity_map(drawn[k]["levels"], drawn[k]["peak"]) for k in query.kp_ids])
            )
            geometry = (torch.from_numpy(v)[None] for v in image_geometry(pair.trg.size, PREP).arrays())
            xs, ys = kap.patch_corners(PREP, *geometry)
            k = len(query.kp_ids)
            gt = torch.from_numpy(query.trg_kps.astype(np.float64))
            length = torch.full((k,), threshold_lengths([pair], "bbox")[0], dtype=torch.float64)
            positive, negative = kap.kap_scores(
                sim, torch.zeros(k), xs.expand(k, -1), ys.expand(k, -1), gt, length, ALPHAS
            )
            frames.append(pd.DataFrame({"pair_id": pair.pair_id, "category": category, "kp_id": query.kp_ids,
                                        "trg_visible": ~gt[:, 0].isnan().numpy(),
                                        **{f"positive@{a:g}": positive[:, i] for i, a in enumerate(ALPHAS)},
                                        **{f"negative@{a:g}": negative[:, i] for i, a in enumerate(ALPHAS)}}))  # fmt: skip
            call = golden["extract_kap_vals"][n]
            for position, kp in enumerate(sorted(drawn, key=ids.index)):
                raw[pair.pair_id, kp] = np.array(call["within"])[:, position], np.array(call["beyond"])[:, position]
    return pd.concat(frames, ignore_index=True), raw


def test_kap_scores_are_the_references_where_its_bug_leaves_them(goldens, pairs):
    """For a keypoint visible in the target, extract_kap_vals' raw maxima are the positive and the negative; for
    one that is not, the negative is the larger of them (the whole map): what its code meant to return."""
    samples, raw = our_kap_samples(goldens, pairs)
    for row in samples.itertuples(index=False):
        within, beyond = raw[row.pair_id, row.kp_id]
        scores = samples.loc[(samples.pair_id == row.pair_id) & (samples.kp_id == row.kp_id)]
        positive = scores[[f"positive@{a:g}" for a in ALPHAS]].to_numpy()[0]
        negative = scores[[f"negative@{a:g}" for a in ALPHAS]].to_numpy()[0]
        if row.trg_visible:
            np.testing.assert_array_equal(positive, within.astype(np.float32))
            np.testing.assert_array_equal(negative, beyond.astype(np.float32))
        else:
            assert np.isnan(positive).all()
            np.testing.assert_array_equal(negative, np.maximum(within, beyond).astype(np.float32))
    assert (~samples["trg_visible"]).sum() >= 10  # keypoints seen in the source only: where the bug bites


def test_kap_is_the_references_corrected_and_as_published_where_no_keypoint_is_hidden(goldens, pairs):
    samples, _ = our_kap_samples(goldens, pairs)
    figures = pck.kap(samples)
    for category, golden in goldens["categories"].items():
        assert_figures(figures["per_category"][category], golden["kap"], "kap")
        assert golden["kap"]["correct"][3] == figures["per_category"][category]["keypoints"]  # its weight
        hidden = not samples.loc[samples.category == category, "trg_visible"].all()
        assert (golden["kap_as_published"] != golden["kap"]) == hidden  # the bug changes only where a keypoint hides
    assert_figures(figures["per_category"]["chair"], goldens["categories"]["chair"]["kap_as_published"], "kap")
    for averaging, values in goldens["overall"]["kap"].items():
        for alpha, value in zip(ALPHAS, values, strict=True):
            assert figures[f"kap@{alpha:g}"][averaging] == pytest.approx(100 * value, rel=1e-6)  # its means: float32
