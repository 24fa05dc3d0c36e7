"""KAP's inputs from the similarity maps (semcorr/engine/kap.py), against a loop over keypoints written from Jamais
Vu's definition, and its run files (tests/test_jamaisvu.py compares with the reference's own code)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import colour_backbone, colour_config

import pck
from helper_functions import FeatureSet
from semcorr.data.geometry import Preprocess, image_geometry
from semcorr.data.images import ImageRef
from semcorr.data.pairs import PairRecord, threshold_lengths
from semcorr.engine import kap
from semcorr.engine.evaluation import evaluate
from semcorr.engine.members import Member
from semcorr.runs.folders import read_run

ALPHAS = (0.1, 0.25)


def test_patch_corners_known_answers():
    canvas = Preprocess.create(840, 14, "pad", coordinates="canvas")  # GeoAware-SC's / Jamais Vu's canvas
    geometry = image_geometry((420, 315), canvas)  # scale 2, 105 px of padding above
    xs, ys = kap.patch_corners(canvas, *(torch.from_numpy(v)[None] for v in geometry.arrays()))
    assert xs[0, :3].tolist() == [0.0, 7.0, 14.0] and ys[0, :3].tolist() == [-52.5, -45.5, -38.5]  # (14 i - 105) / 2
    squash = Preprocess.create(56, 14, "squash")  # 4 x 4 patches; pixel centres at integers
    geometry = image_geometry((112, 28), squash)
    xs, ys = kap.patch_corners(squash, *(torch.from_numpy(v)[None] for v in geometry.arrays()))
    assert xs[0].tolist() == [-0.5, 27.5, 55.5, 83.5] and ys[0].tolist() == [-0.5, 6.5, 13.5, 20.5]


def random_members(seed: int = 0) -> tuple[list[PairRecord], FeatureSet]:
    """Five images of random features on a 5 x 6 grid; pairs with keypoints seen in both images and in the source
    only, two pairs sharing a target."""
    rng = np.random.default_rng(seed)
    prep = Preprocess.create((70, 84), 14, "squash")
    sizes = [(100, 80), (64, 64), (120, 90), (90, 120), (80, 60)]
    refs = [ImageRef(f"im/{i}", f"{i}.jpg", size) for i, size in enumerate(sizes)]
    feats = F.normalize(torch.from_numpy(rng.normal(size=(5, 8, 5, 6))).float(), dim=1)
    fs = FeatureSet(
        feats, {r.key: i for i, r in enumerate(refs)}, prep, {r.key: image_geometry(r.size, prep) for r in refs}, {}
    )

    def points(ref, n):
        return (rng.uniform(0, 1, (n, 2)) * (np.array(ref.size) - 1)).astype(np.float32)

    pairs = []
    for n, (s, t, shared, only) in enumerate([(0, 1, 4, 2), (2, 1, 3, 0), (3, 4, 5, 3), (4, 0, 1, 1), (1, 3, 6, 1)]):
        src, trg = refs[s], refs[t]
        pairs.append(PairRecord(
            f"p{n}", "ab"[n % 2], "ab"[n % 2], src, trg, points(src, shared), points(trg, shared),
            [str(i) for i in range(shared)], trg_bbox=(2.0, 3.0, trg.size[0] - 5.0, trg.size[1] - 2.0),
            src_only_ids=[str(shared + i) for i in range(only)], src_only_kps=points(src, only),
        ))  # fmt: skip
    return pairs, fs


def loop_reference(pair: PairRecord, fs: FeatureSet, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative scores of one pair, keypoint by keypoint, as Jamais Vu defines them."""
    src_geo, trg_geo = fs.geometries[pair.src.key], fs.geometries[pair.trg.key]
    target = fs.feats[fs.index[pair.trg.key]].numpy()
    h, w = target.shape[1:]
    maps = []
    for xy in np.concatenate([pair.src_kps, pair.src_only_kps]):
        u, v = src_geo.to_input(xy)
        px, py = min(max(int((u + 0.5) // 14), 0), w - 1), min(max(int((v + 0.5) // 14), 0), h - 1)
        maps.append(np.einsum("c,chw->hw", fs.feats[fs.index[pair.src.key], :, py, px].numpy(), target))
    maps = np.array(maps, np.float32)
    maps = (maps - maps.min()) / (maps.max() - maps.min())  # one normalisation over the pair's maps
    length = threshold_lengths([pair], "bbox")[0]
    positive, negative = np.full((len(maps), len(alphas)), np.nan), np.zeros((len(maps), len(alphas)))
    for k, score_map in enumerate(maps):
        for a, alpha in enumerate(alphas):
            if k >= pair.num_keypoints:  # visible in the source only: the whole map is a negative
                negative[k, a] = score_map.max()
                continue
            within = np.zeros((h, w), bool)
            for i in range(h):
                for j in range(w):
                    corner = trg_geo.to_original(np.array([14 * j - 0.5, 14 * i - 0.5]))  # the patch's top-left
                    within[i, j] = ((corner - pair.trg_kps[k]) ** 2).sum() <= (alpha * length) ** 2
            positive[k, a] = (score_map * within).max()
            negative[k, a] = (score_map * ~within).max()
    return positive, negative


def test_kap_samples_are_jamais_vus_scores_of_each_source_visible_keypoint(monkeypatch):
    pairs, fs = random_members()
    monkeypatch.setattr(kap, "CHUNK_KEYPOINTS", 7)  # several chunks, each of whole target images
    samples = kap.kap_samples(pairs, [Member(fs)], descriptor="nearest", alphas=ALPHAS, norm="bbox", progress=False)
    assert samples["kp_id"].tolist() == [kp for p in pairs for kp in [*p.kp_ids, *p.src_only_ids]]
    assert samples["trg_visible"].tolist() == [
        k < p.num_keypoints for p in pairs for k in range(len(p.kp_ids + p.src_only_ids))
    ]
    for pair in pairs:
        rows = samples[samples["pair_id"] == pair.pair_id]
        positive, negative = loop_reference(pair, fs, ALPHAS)
        np.testing.assert_allclose(rows[[f"positive@{a:g}" for a in ALPHAS]], positive, atol=1e-6)
        np.testing.assert_allclose(rows[[f"negative@{a:g}" for a in ALPHAS]], negative, atol=1e-6)
    positive = samples[["positive@0.1", "positive@0.25"]].dropna()
    assert positive["positive@0.1"].gt(0).any() and positive["positive@0.1"].lt(positive["positive@0.25"]).any()


def test_a_pair_of_constant_maps_scores_zero():
    sim = torch.ones(2, 3, 3)
    corners = torch.arange(3, dtype=torch.float64)[None].expand(2, 3)
    gt = torch.tensor([[1.0, 1.0], [float("nan")] * 2], dtype=torch.float64)
    positive, negative = kap.kap_scores(
        sim, torch.tensor([0, 0]), corners, corners, gt, torch.tensor([10.0, 10.0]), (0.1,)
    )
    assert positive[0].tolist() == [0.0] and negative.tolist() == [[0.0], [0.0]] and positive[1].isnan().all()


def test_kap_run_files_recompute_and_count_the_source_only_keypoints(tmp_path, colour_pairs):
    """--kap: per_keypoint_kap.csv holds every source-visible keypoint, and metrics.json's kap recomputes from it."""
    first = colour_pairs.pairs[0]  # its last keypoint is seen in the source only
    hidden = dataclasses.replace(
        first, trg_kps=first.trg_kps[:-1], src_kps=first.src_kps[:-1], kp_ids=first.kp_ids[:-1],
        src_only_ids=first.kp_ids[-1:], src_only_kps=first.src_kps[-1:],
    )  # fmt: skip
    pairset = dataclasses.replace(colour_pairs, pairs=[hidden, *colour_pairs.pairs[1:]])
    settings = colour_config(tmp_path, thresholds=[0.05, 0.1])
    settings = dataclasses.replace(settings, data=dataclasses.replace(settings.data, kap=True))
    run = evaluate(settings, pairset, colour_backbone(tmp_path))
    metrics = json.loads((run / "metrics.json").read_text())
    samples = read_run(run).read("per_keypoint_kap")
    assert len(samples) == sum(p.num_keypoints for p in colour_pairs.pairs)
    assert samples["trg_visible"].sum() == len(samples) - 1 and samples["positive@0.1"].isna().sum() == 1
    assert metrics["kap"] == pck.kap(samples)  # JSON floats round-trip exactly
    assert metrics["pck_dagger"] == pck.summarize(read_run(run).keypoints())["pck_dagger"]
    assert metrics["timings"]["kap_s"] > 0


def test_kap_is_a_flag_of_the_evaluations_and_off_by_default():
    import grid_search_hyperparams
    from semcorr.cli.flags import MemberSpec, evaluation_parser, given
    from semcorr.cli.resolve import resolve

    assert resolve("evaluation", {}).data.kap is False
    assert resolve("evaluation", given(evaluation_parser("test").parse_args(["--kap"]))).data.kap is True
    assert "--kap" not in grid_search_hyperparams.arguments().format_help()  # a grid search scores PCK only
    with pytest.warns(UserWarning, match="--kap is ignored: a weight search scores PCK only"):
        resolve("weight_search", {"members": (MemberSpec("dinov2"), MemberSpec("dinov3")), "kap": True})
