"""Ensembles: member syntax, weights, the common grid, feature concatenation and the weight search."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from synthetic import ColourCodeBackbone, colour_backbone, colour_config, write_colour_pairs

import ensemble_evaluate
from helper_functions import FeatureSet
from semcorr.cli.flags import parse_member
from semcorr.cli.resolve import normalised_weights
from semcorr.config.settings import EnsembleSettings, MatchSettings, WeightSearchSettings
from semcorr.engine import ensemble as ens
from semcorr.engine.evaluation import evaluate, evaluation_set
from semcorr.engine.matching import predict_keypoints
from semcorr.engine.members import Member, build_member, engine_members
from semcorr.runs.folders import read_run


class NoiseBackbone(ColourCodeBackbone):
    """Same interface, random features: a member that only adds noise."""

    def forward(self, images):
        self.calls += 1
        h, w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        return torch.randn(len(images), self.feature_dim, h, w, generator=torch.Generator().manual_seed(self.calls))


def spec(text):
    return parse_member(text)


def test_weights_are_normalised_and_all_or_none():
    assert normalised_weights([spec("a"), spec("b")]) == [0.5, 0.5]
    assert normalised_weights([spec("a:3"), spec("b:1")]) == [0.75, 0.25]
    assert normalised_weights([spec("a:1e308"), spec("b:1e308")]) == [0.5, 0.5]  # their sum would overflow
    with pytest.raises(ValueError, match="every member or to none"):
        normalised_weights([spec("a:3"), spec("b")])
    with pytest.raises(ValueError, match="sum to 0"):
        normalised_weights([spec("a:0"), spec("b:0")])


def test_simplex_grid():
    combos = ens.simplex_weights(3, 0.5)
    assert sorted(map(tuple, combos)) == sorted(
        [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    )
    assert len(ens.simplex_weights(3, 0.1)) == math.comb(12, 2)
    assert all(abs(sum(c) - 1) < 1e-12 for c in ens.simplex_weights(4, 0.25))
    for bad in (0.3, 0, 1.5):
        with pytest.raises(ValueError, match="must divide 1"):
            ens.simplex_weights(2, bad)


def predictions(run):
    return read_run(run).keypoints()[["pred_x", "pred_y"]].to_numpy()


def test_identical_members_equal_one_model_and_weights_are_normalised(tmp_path, colour_pairs):
    """Weights 3 and 7 on the same model: only normalised weights keep the soft-argmax temperature."""
    match = MatchSettings("wsoftargmax", 5, 0.1)
    bb = colour_backbone(tmp_path)
    single = evaluate(colour_config(tmp_path, match=match), colour_pairs, bb)
    run = evaluate(colour_config(tmp_path, match=match, weights=[3, 7]), colour_pairs, [bb, bb])
    np.testing.assert_allclose(predictions(run), predictions(single), atol=1e-9)
    assert run.name.endswith("_ensemble_colourcode+colourcode_128x128_custom-test_wsoftargmax-K5-T0.1_pck_norm=bbox")
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.json", "per_keypoint.csv", "per_pair.csv"]
    config_json = json.loads((run / "config.json").read_text())
    members = config_json["resolved"]["members"]
    assert [m["weight"] for m in members] == pytest.approx([0.3, 0.7])
    assert members[0]["grid"] == [16, 16]
    assert config_json["settings"]["members"][1]["weight"] == pytest.approx(0.7)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["counts"]["pairs"] == 12 and len(metrics["timings"]["per_member"]) == 2


@pytest.mark.parametrize(
    "common_grid,grid,reference", [("finest", [16, 16], 1), ("coarsest", [8, 8], 0), ("first", [8, 8], 0)]
)
def test_members_on_different_grids(tmp_path, colour_pairs, common_grid, grid, reference):
    """Patch 16 (8x8 grid) and patch 8 (16x16): maps meet on the chosen grid, pixels come from it."""
    coarse, fine = colour_backbone(tmp_path, patch_size=16), colour_backbone(tmp_path, patch_size=8)
    cfg = colour_config(tmp_path, thresholds=(0.2,), common_grid=common_grid, weights=[None, None])
    run = evaluate(cfg, colour_pairs, [coarse, fine])
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert resolved["grid"] == grid and resolved["reference_member"] == reference
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pck@0.2"]["per_keypoint"] > 90  # a wrong patch size in the pixel conversion fails this


def test_zero_weight_member_changes_nothing_and_noise_hurts(tmp_path, colour_pairs):
    good = colour_backbone(tmp_path)
    alone = evaluate(colour_config(tmp_path, no_cache=True), colour_pairs, good)
    muted = evaluate(
        colour_config(tmp_path, no_cache=True, weights=[1, 0]), colour_pairs, [good, NoiseBackbone(8, 128)]
    )
    np.testing.assert_array_equal(predictions(muted), predictions(alone))
    loud = evaluate(colour_config(tmp_path, no_cache=True, weights=[1, 3]), colour_pairs, [good, NoiseBackbone(8, 128)])
    pck_of = lambda run: json.loads((run / "metrics.json").read_text())["pck@0.1"]["per_keypoint"]  # noqa: E731
    assert pck_of(loud) < pck_of(alone) - 20


def test_combine_features_is_the_weighted_concatenation(tmp_path, colour_pairs):
    """--combine features equals matching on [sqrt(w1) f1, sqrt(w2) f2] with f2 resized to f1's grid."""
    eval_set, _ = evaluation_set(colour_pairs)
    cfg = colour_config(tmp_path, weights=[0.4, 0.6])
    images = eval_set.unique_images()
    fine, _ = build_member(cfg.members[0], cfg.extract, colour_backbone(tmp_path, 8), images, progress=False)
    coarse, _ = build_member(cfg.members[1], cfg.extract, colour_backbone(tmp_path, 16), images, progress=False)
    ordered, order = engine_members([coarse, fine], EnsembleSettings("finest", "features"))
    assert order == [1, 0] and ordered[1].features.feats.shape[-2:] == (16, 16)
    cfg = MatchSettings("argmax")
    pred = predict_keypoints(eval_set.pairs, ordered, cfg, progress=False)

    up = F.normalize(F.interpolate(coarse.features.feats.float(), size=(16, 16), mode="bilinear"), dim=1)
    cat = torch.cat([math.sqrt(0.4) * fine.features.feats.float(), math.sqrt(0.6) * up], dim=1)
    fs = fine.features
    concat = Member(FeatureSet(cat, fs.index, fs.prep, fs.geometries, fs.stats))
    np.testing.assert_allclose(pred, predict_keypoints(eval_set.pairs, [concat], cfg, progress=False), atol=1e-9)
    # and it differs from summing similarity maps resized after the fact
    summed, _ = engine_members([coarse, fine], EnsembleSettings("finest", "similarity"))
    assert not np.allclose(pred, predict_keypoints(eval_set.pairs, summed, MatchSettings("argmax"), progress=False))


def test_pad_members_need_one_aspect_ratio(tmp_path, colour_pairs):
    images = evaluation_set(colour_pairs)[0].unique_images()
    square = colour_config(tmp_path, resize="pad")
    wide = colour_config(tmp_path, resize="pad", image_size=(128, 64))
    a, _ = build_member(square.member, square.extract, colour_backbone(tmp_path), images, progress=False)
    b, _ = build_member(wide.member, wide.extract, colour_backbone(tmp_path), images, progress=False)
    with pytest.raises(ValueError, match="one aspect ratio"):
        engine_members([a, b], EnsembleSettings("finest", "similarity"))


def test_weight_search(tmp_path, colour_pairs):
    cfg = colour_config(tmp_path, no_cache=True, weights=[None, None])
    good = colour_backbone(tmp_path)
    run = ens.search_weights(cfg, WeightSearchSettings(step=0.25), colour_pairs, [good, NoiseBackbone(8, 128)])
    assert "_weight_search_" in run.name and "_ensemble_colourcode+colourcode_128x128_custom-test_" in run.name
    table = pd.read_csv(run / "weight_search_results.csv")
    assert table[["weight_0", "weight_1"]].values.tolist() == [[0, 1], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1, 0]]
    single = json.loads(
        (evaluate(colour_config(tmp_path, no_cache=True), colour_pairs, good) / "metrics.json").read_text()
    )
    assert table.iloc[-1]["pck@0.1_per_image"] == pytest.approx(single["pck@0.1"]["per_image"])
    best = json.loads((run / "best_weights.json").read_text())
    assert best["members"] == ["colourcode@128x128", "colourcode@128x128"]
    assert best["best"]["0.1"]["weights"][0] >= 0.75
    member_args = best["best"]["0.1"]["member_args"].split()
    assert member_args[::2] == ["--member", "--member"]
    assert [spec(m).weight for m in member_args[1::2]] == best["best"]["0.1"]["weights"]
    assert (run / "weight_search.png").stat().st_size > 0


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_command_line(tmp_path, capsys):
    pairs_file = write_colour_pairs(tmp_path / "data", n_images=3, kps=3)
    common = [
        "--dataset",
        "custom",
        "--data-root",
        str(pairs_file),
        "--pck-norm",
        "bbox",
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--output-dir",
        str(tmp_path / "results"),
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    ensemble_evaluate.main(["--member", "dinov2_vits14:random:1@28", "--member", "dinov2_vits14:random:3@42", *common])
    (run,) = (tmp_path / "results").iterdir()
    members = json.loads((run / "config.json").read_text())["resolved"]["members"]
    assert [m["image_size"] for m in members] == [[28, 28], [42, 42]]
    assert [m["weight"] for m in members] == [0.25, 0.75]
    with pytest.raises(SystemExit):
        ensemble_evaluate.main(["--help"])
    assert "MODEL[:WEIGHTS][:WEIGHT][@SIZE]" in capsys.readouterr().out
    with pytest.raises(ValueError, match="every member or to none"):
        ensemble_evaluate.main(["--member", "dinov2_vits14:random:1", "--member", "dinov2_vits14:random", *common])
    with pytest.raises(ValueError, match="must divide 1"):  # before any model or data is read
        ensemble_evaluate.main(
            [
                "--member",
                "dinov2",
                "--member",
                "sam",
                "--search-weights",
                "--weight-step",
                "0.3",
                "--data-root",
                "/nowhere",
            ]
        )
    with pytest.raises(ValueError, match="Unknown backbone 'no_such_model'"):
        ensemble_evaluate.main(["--member", "no_such_model", "--member", "dinov2", "--data-root", "/nowhere"])


def test_the_original_protocol_meets_on_the_coarsest_grid(tmp_path, colour_pairs):
    """The original resized every map to SAM's 32 x 32 grid and took pixels from its geometry."""
    coarse, fine = colour_backbone(tmp_path, patch_size=16), colour_backbone(tmp_path, patch_size=8)
    cfg = colour_config(tmp_path, thresholds=(0.2,), protocol="original", pck_norm="bbox", weights=[None, None])
    run = evaluate(cfg, colour_pairs, [fine, coarse])
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["resolved"]["grid"] == [8, 8] and config_json["resolved"]["reference_member"] == 1
    assert config_json["settings"]["ensemble"]["common_grid"] == "coarsest"


def test_each_member_alone_stands_beside_the_ensemble(tmp_path, colour_pairs, capsys):
    """metrics.json and the summary give each member's PCK alone: what a single-model evaluation of it gives."""
    fine, coarse = colour_backbone(tmp_path), colour_backbone(tmp_path, patch_size=32)  # 16x16 and 4x4 patches
    run = evaluate(colour_config(tmp_path, no_cache=True, weights=[0.75, 0.25]), colour_pairs, [fine, coarse])
    printed = capsys.readouterr().out
    members = read_run(run).metrics["members"]
    for member, backbone in zip(members, (fine, coarse), strict=True):
        alone = read_run(evaluate(colour_config(tmp_path, no_cache=True), colour_pairs, backbone)).metrics
        for alpha in ("pck@0.05", "pck@0.1"):
            assert member[alpha] == pytest.approx(alone[alpha])
    assert [m["weight"] for m in members] == [0.75, 0.25] and members[0]["pck@0.1"] != members[1]["pck@0.1"]
    block = printed.split("each member alone (its own grid, the same matcher and pairs), per image (per keypoint):\n")[
        1
    ].splitlines()
    ensemble = read_run(run).metrics["pck@0.1"]
    assert (
        block[1].startswith("ensemble") and f"{ensemble['per_image']:.2f} ({ensemble['per_keypoint']:.2f})" in block[1]
    )
    first = members[0]["pck@0.1"]
    assert block[2].startswith("0: 0.75 x colourcode (custom weights-8.bin)")
    assert f"{first['per_image']:.2f} ({first['per_keypoint']:.2f})" in block[2]


def test_a_weight_search_says_what_it_searched_on_and_when_every_weighting_ties(tmp_path, colour_pairs, capsys):
    cfg = colour_config(tmp_path, no_cache=True, weights=[None, None])
    bb = colour_backbone(tmp_path)
    run = ens.search_weights(cfg, WeightSearchSettings(step=0.5), colour_pairs, [bb, bb])  # the same model twice
    printed = capsys.readouterr().out.splitlines()
    assert (
        printed[0].startswith("colourcode (custom weights ")
        and "at 128x128, 16x16 patches, squash + colourcode" in printed[0]
    )
    assert (
        printed[1]
        == "custom test: 12 pairs, 60 keypoints; threshold = alpha * max side of the target bounding box; PCK in %"
    )
    assert all("; a tie: all 3 tie at the best, the first in weight_search_results.csv is named" in line
               for line in printed if line.startswith("best at"))  # fmt: skip
    assert json.loads((run / "best_weights.json").read_text())["best"]["0.1"]["tied"] == 3
