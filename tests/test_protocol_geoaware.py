"""--protocol geoaware gives GeoAware-SC's numbers: its 840 canvases bit for bit, its predicted pixel for at least
99% of keypoints (to 0.01 px), its per-pair PCK, flip decisions and geometry-aware PCK, against golden files made
once from its own code (benchmarks/make_geoaware_goldens.py) on the same images and weights."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from geoaware_protocol import GOLDEN_DIR, RUNS, build_pf_pascal, build_spair, tiny_dinov2, weights_digest, write_masks

import evaluate
from helper_functions import member_preprocess, preprocess_image
from semcorr.cli.resolve import resolve
from semcorr.data.datasets import load_pairs
from semcorr.data.images import load_image
from semcorr.runs.folders import read_run

PIXELS, POINTS, SHARE, DISTANCE = 0.01, 1e-4, 0.99, 2e-3
GOLDENS = sorted(p.stem for p in GOLDEN_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geoaware")
    spair = build_spair(tmp)
    write_masks(spair / "features")  # where --flip-align mask looks by default
    return tmp, {"spair": spair, "pf-pascal": build_pf_pascal(tmp)}, tiny_dinov2(tmp / "weights")


def run_ours(scenario, run: str) -> tuple[dict, object]:
    tmp, roots, checkpoint = scenario
    golden = json.loads((GOLDEN_DIR / f"{run}.json").read_text())
    assert weights_digest(checkpoint) == golden["weights_digest"], "the random weights are no longer the goldens'"
    dataset, flags, _ = RUNS[run]
    out = tmp / "results" / run
    argv = ["--protocol", "geoaware", "--checkpoint", str(checkpoint), "--dataset", dataset, "--data-root"]
    argv += [str(roots[dataset]), "--device", "cpu", "--num-workers", "0", "--quiet", "--no-cache"]
    evaluate.main([*argv, "--output-dir", str(out), *flags])
    (folder,) = out.iterdir()
    return golden, read_run(folder)


def test_canvases_are_geoawares_bit_for_bit(scenario):
    """Image and mirror image on the black 840 canvas (LANCZOS, aspect kept, odd padding at the bottom / right),
    normalised: the same float32 tensors as GeoAware-SC's resize and preprocess_pil."""
    _, roots, _ = scenario
    settings = resolve("evaluation", {"protocol": "geoaware"})
    prep = member_preprocess(settings.member.image_size, settings.member.resize, settings.extract, 14)
    for dataset, name in (("spair", "spair_window"), ("pf-pascal", "pf-pascal_window")):
        digests = json.loads((GOLDEN_DIR / f"{name}.json").read_text())["canvas_sha256"]
        images = load_pairs(dataset, root=roots[dataset], pf_shift=False).unique_images()
        for ref in images:
            stem = ref.key.rsplit("/", 1)[-1]
            for tag, image in (("image", ref), ("mirrored", ref.mirror())):
                canvas = preprocess_image(load_image(image), prep).numpy()
                digest = hashlib.sha256(np.ascontiguousarray(canvas, np.float32).tobytes()).hexdigest()
                assert digest == digests[f"{stem}/{tag}"], f"{stem} ({tag}): not GeoAware-SC's canvas"


@pytest.mark.slow
@pytest.mark.parametrize("run", GOLDENS)
def test_geoaware_protocol_reproduces_geoawares_code(scenario, run):
    golden, ours = run_ours(scenario, run)
    table, pairs = ours.keypoints(), ours.pairs()
    assert ours.config["settings"]["protocol"] == {"name": "geoaware", "overrides": {}}
    pair_of = {(p["src"], p["trg"]): p for p in golden["pairs"]}
    same_pixel = at_goldens_pixel(table, pairs, pair_of)
    assert same_pixel.mean() >= SHARE, f"{run}: {same_pixel.sum()} of {len(table)} keypoints at GeoAware-SC's pixel"

    pairs["pair"] = [(s.rsplit("/", 1)[-1], t.rsplit("/", 1)[-1]) for s, t in zip(pairs["src_image"], pairs["trg_image"],
                                                                                  strict=True)]  # fmt: skip
    for alpha in golden["alphas"]:
        want = np.array([100 * pair_of[p]["pck"][alpha] for p in pairs["pair"]])
        same = np.abs(pairs[f"pck@{alpha}"].to_numpy() - want) <= 100 * POINTS
        assert same.mean() >= SHARE, f"{run}: per-pair PCK@{alpha} equal for {same.sum()} of {len(want)} pairs"
    if "flip" in golden["pairs"][0]:
        chosen = [pair_of[p]["flip"]["chosen"] for p in pairs["pair"]]
        assert pairs["flip_chosen"].tolist() == chosen
        for column, key in (("original_distance", "original"), ("flip_distance", "flipped")):
            want = [pair_of[p]["flip"][key] for p in pairs["pair"]]
            # cdist's float32 expansion |a|^2 + |b|^2 - 2ab turns ulp differences of the features into ~1e-3
            np.testing.assert_allclose(pairs[column], want, rtol=DISTANCE, err_msg=f"{run}: {column}")
    if "geo_aware" in golden:
        check_geometry_aware(golden, ours, table, pair_of)
    print(f"{run}: {same_pixel.sum()} of {len(table)} keypoints at GeoAware-SC's pixel (to {PIXELS} px)")


def at_goldens_pixel(table, pairs, pair_of: dict) -> np.ndarray:
    """Whether each keypoint of a run is at the golden's predicted pixel (to PIXELS); adds the table's `pair`."""
    names = {pid: (s.rsplit("/", 1)[-1], t.rsplit("/", 1)[-1])
             for pid, s, t in zip(pairs["pair_id"], pairs["src_image"], pairs["trg_image"], strict=True)}  # fmt: skip
    table["pair"] = table["pair_id"].map(names)
    expected = np.array([pair_of[p]["pred"][str(k)] for p, k in zip(table["pair"], table["kp_id"], strict=True)])
    assert len(table) == sum(len(p["pred"]) for p in pair_of.values())
    return (np.abs(table[["pred_x", "pred_y"]].to_numpy() - expected) <= PIXELS).all(axis=1)


def check_geometry_aware(golden: dict, ours, table, pair_of: dict) -> None:
    """The geometry-aware subset per pair and over all pairs, and PCK per azimuth difference."""
    metrics = ours.metrics
    for alpha in golden["alphas"]:
        column = f"correct@{alpha}"
        geo = table[table["geo_aware"]].groupby("pair")[column].mean()
        want = {p: v["geo_aware_pck"][alpha] for p, v in pair_of.items() if v["geo_aware_pck"] is not None}
        assert set(geo.index) == set(want)
        np.testing.assert_allclose([geo[p] for p in want], list(want.values()), atol=POINTS)
        subset = metrics["subsets"]["geo_aware"]
        assert subset["pairs"] == golden["geo_aware"]["pairs"]
        assert subset[f"pck@{alpha}"]["per_image"] == pytest.approx(100 * golden["geo_aware"]["pck"][alpha], abs=1e-3)
        for difference, entry in golden["azimuth"].items():
            level = metrics["difficulty"]["azimuth_difference"][difference]
            assert level["pairs"] == entry["pairs"]
            assert level[f"pck@{alpha}"]["per_image"] == pytest.approx(100 * entry["pck"][alpha], abs=1e-3)


@pytest.mark.slow
def test_default_protocol_differs_from_geoawares_where_its_conventions_do(scenario):
    """A control: the goldens are sensitive to the conventions (the default protocol misses them)."""
    tmp, roots, checkpoint = scenario
    golden = json.loads((GOLDEN_DIR / "spair_window.json").read_text())
    out = tmp / "results" / "default"
    argv = ["--checkpoint", str(checkpoint), "--dataset", "spair", "--data-root", str(roots["spair"]), "--quiet"]
    evaluate.main([*argv, "--device", "cpu", "--num-workers", "0", "--no-cache", "--output-dir", str(out)])
    (folder,) = out.iterdir()
    run = read_run(folder)
    same_pixel = at_goldens_pixel(run.keypoints(), run.pairs(), {(p["src"], p["trg"]): p for p in golden["pairs"]})
    assert same_pixel.mean() < 0.5
