"""Golden outputs of Jamais Vu's own loader and metrics (SPair-U, PCK-dagger, KAP), for tests/test_jamaisvu.py.

    git clone https://github.com/VICO-UoE/JamaisVu /tmp/JamaisVu
    python benchmarks/make_jamaisvu_goldens.py --jamaisvu /tmp/JamaisVu

Writes the miniature SPair-U of tests/jamaisvu_scenario.py (SPair-71k's folder with ExtraPairAnnotation/ and
ExtraImageAnnotation/ in it) into a scratch folder as data/SPair-71k, where the reference reads it, and runs there,
imported from the checkout (nothing of it is copied here):
- its loader, utils/utils_dataset.py get_dataset_info and load_eval_data(unseen_kps=True), for every category: the
  pairs, their keypoints on the 840 canvas, the thresholds, the keypoints used;
- pck_train.compute_pck with PCKD off and on (PCK, PCK-dagger), on predictions drawn here (random.Random(0)),
  among them predictions half-way between a keypoint and one of a lower id, and of a higher id, and next to
  another keypoint;
- pck_train.compute_kap on similarity maps drawn here (jamaisvu_scenario.similarity_map, peaked near the target
  keypoint), as it stands ("kap_as_published"), and with the evident bug of extract_kap_vals corrected ("kap"): it
  returns the raw within / beyond maxima where its own lines compute the positives and the negatives, so its output
  is wrapped to return those (its text is not edited); and each pair's raw extract_kap_vals output;
- utils/logger.py update_stats and log_weighted_pcks: the overall figures, per image and per keypoint.
What the reference imports but never runs here is stubbed (wandb, loguru, timm, its networks, losses, pictures and
EXR reader), and its image and feature I/O is replaced: load_img_and_kps gives the loader's keypoints without an
image, get_patch_descriptors descriptors whose product is the drawn maps in the rows of the visible source
keypoints' patches (one-hot there: each such keypoint is on a patch of its own), calculate_keypoint_transformation
the drawn predictions. Writes tests/fixtures/jamaisvu/goldens.json.gz in a few seconds.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from geoaware_driver import stub, unavailable  # noqa: E402  (its stubs of what a reference imports but never runs)
from jamaisvu_scenario import (  # noqa: E402
    ALPHAS,
    CANVAS,
    GOLDENS,
    JAMAISVU_COMMIT,
    PATCHES,
    build_spair_u,
    similarity_map,
)

STRIDE = CANVAS // PATCHES


def import_reference(checkout: Path) -> types.SimpleNamespace:
    """pck_train, utils.utils_dataset and utils.logger of the checkout, with what they import but never run here
    stubbed."""
    quiet = types.SimpleNamespace(**dict.fromkeys(("info", "debug", "configure", "add"), lambda *a, **k: None))
    stub("wandb", init=unavailable, log=unavailable)
    stub("loguru", logger=quiet)
    stub("timm")
    stub("preprocess_map", set_seed=unavailable)
    stub("model_utils")
    stub("model_utils.projection_network", AggregationNetwork=object, DummyAggregationNetwork=object)
    stub("model_utils.category_prototype", CategoryPrototype=object)
    stub("model_utils.corr_map_model", Correlation2Displacement=object)
    stub("utils.utils_losses")
    stub("utils.utils_visualization")
    stub("utils.utils_io", read_exr=unavailable, get_pascal_mask=unavailable, get_owl_mask=unavailable)
    sys.path.insert(0, str(checkout))
    threads = torch.get_num_threads()
    names = ("pck_train", "utils.utils_dataset", "utils.logger")
    ref = types.SimpleNamespace(**{n.split(".")[-1]: importlib.import_module(n) for n in names}, quiet=quiet)
    torch.set_num_threads(threads)  # pck_train asks for 16 when imported
    ref.pck_train.device = "cpu"
    return ref


def reference_args(**changes) -> types.SimpleNamespace:
    """pck_train's arguments as its SPair evaluation sets them (configs/eval_spair.yaml: all pairs, TEST_SAMPLE 0)."""
    args = dict(EVAL_DATASET="spair", TRAIN_DATASET="spair", ANNO_SIZE=CANVAS, NUM_PATCHES=PATCHES, TEST_SAMPLE=0,
                KPT_RESULT=False, PCKD=False, KAP=False, BBOX_THRE=True, COMPUTE_GEOAWARE_METRICS=False,
                ADAPT_FLIP=False, TOTAL_SAVE_RESULT=0, SPH=False, SOFT_EVAL=False, UNSEEN_KPS=True)  # fmt: skip
    return types.SimpleNamespace(**{**args, **changes})


def draw_inputs(kps: torch.Tensor, thresholds: list, rng: random.Random) -> dict:
    """Predictions for every pair's keypoints (canvas pixels, in multiples of 1/8: exact in float32 and in original
    pixels) and a similarity map for every visible source keypoint."""
    predictions, maps = [], []
    for p in range(len(kps) // 2):
        src, trg = kps[2 * p], kps[2 * p + 1]
        both = [k for k in range(len(trg)) if src[k, 2] > 0 and trg[k, 2] > 0]
        pred = []
        for k in range(len(trg)):
            pred.append(predicted(k, both, trg, float(thresholds[p]), rng) if k in both else [0.0, 0.0])
        predictions.append(pred)
        maps.append([drawn_map(k, trg, rng) for k in range(len(src)) if src[k, 2] > 0])
    return {"pred": predictions, "maps": maps}


def predicted(k: int, both: list[int], trg: torch.Tensor, threshold: float, rng: random.Random) -> list[float]:
    """One keypoint's prediction: half-way to the nearest other keypoint (of a lower or a higher id: a tie), next to
    it, or at a fraction of the threshold around its own (between the alphas, never on one)."""
    others = [j for j in both if j != k]
    case = rng.choice(["tie", "tie", "next to another", "near", "near"]) if others else "near"
    own = trg[k, :2].tolist()
    if case != "near":
        nearest = min(others, key=lambda j: float(((trg[j, :2] - trg[k, :2]) ** 2).sum()))
        other = trg[nearest, :2].tolist()
        return [(a + b) / 2 for a, b in zip(own, other, strict=True)] if case == "tie" else [other[0] + 1.0, other[1]]
    radius = rng.choice([0.004, 0.03, 0.07, 0.2]) * threshold
    angle = rng.uniform(0, 2 * np.pi)
    return [round(8 * (own[0] + radius * np.cos(angle))) / 8, round(8 * (own[1] + radius * np.sin(angle))) / 8]


def drawn_map(k: int, trg: torch.Tensor, rng: random.Random) -> dict:
    """A map's parameters: levels 0..50 on a 15 x 15 grid, a peak at most 2 patches off the target keypoint's patch
    (anywhere, where the target does not show the keypoint)."""
    if trg[k, 2] > 0:
        centre = [int(v) // STRIDE + rng.randint(-2, 2) for v in trg[k, :2].tolist()]
    else:
        centre = [rng.randrange(PATCHES), rng.randrange(PATCHES)]
    peak = [min(max(c, 0), PATCHES - 1) for c in centre]
    return {"column": k, "levels": [[rng.randint(0, 50) for _ in range(15)] for _ in range(15)], "peak": peak}


class Feeder:
    """The reference's image and feature I/O, replaced by the loader's keypoints and the drawn inputs."""

    def __init__(self, ref: types.SimpleNamespace, kps: torch.Tensor, inputs: dict):
        self.ref, self.kps, self.inputs, self.pair = ref, kps, inputs, None

    def load_img_and_kps(self, idx, files, kps, img_size=CANVAS, edge=False):
        return None, kps[idx]

    def get_patch_descriptors(self, args, aggre_net, num_patches, files, pair_idx, **_):
        """Descriptors whose product d1 @ d2^T holds each visible source keypoint's map in its patch's row."""
        self.pair = pair_idx
        src, maps = self.kps[2 * pair_idx], self.inputs["maps"][pair_idx]
        patches = self.ref.pck_train.kpts_to_patch_idx(args, src, num_patches)  # the reference's own patch index
        d1, d2 = torch.zeros(1, num_patches**2, len(maps)), torch.zeros(1, num_patches**2, len(maps))
        for j, drawn in enumerate(maps):
            d1[0, int(patches[drawn["column"]]), j] = 1.0
            d2[0, :, j] = torch.from_numpy(similarity_map(drawn["levels"], drawn["peak"]).reshape(-1))
        assert len({int(patches[m["column"]]) for m in maps}) == len(maps), "visible source keypoints share a patch"
        return d1, d2, None, None

    def calculate_keypoint_transformation(self, *_):
        return torch.tensor(self.inputs["pred"][self.pair], dtype=torch.float32)

    def __enter__(self):
        names = ("load_img_and_kps", "get_patch_descriptors", "calculate_keypoint_transformation")
        self.saved = {n: getattr(self.ref.pck_train, n) for n in names}
        for name in names:
            setattr(self.ref.pck_train, name, getattr(self, name))
        return self

    def __exit__(self, *_):
        for name, value in self.saved.items():
            setattr(self.ref.pck_train, name, value)


def corrected(extract_kap_vals):
    """extract_kap_vals returning what its own last lines compute, positive_preds and negative_preds, from the
    within / beyond maxima it returns instead."""

    def wrapped(args, img1_desc, img2_desc, img1_patch_idx, src_vis, trg_kps_full, *rest, **kwargs):
        within, beyond = extract_kap_vals(args, img1_desc, img2_desc, img1_patch_idx, src_vis, trg_kps_full, *rest,
                                          **kwargs)  # fmt: skip
        trg_vis = trg_kps_full[src_vis.bool()][:, 2].bool()
        return within[:, trg_vis], torch.where(trg_vis, beyond, torch.maximum(beyond, within))

    return wrapped


def recording(extract_kap_vals, calls: list):
    """extract_kap_vals as it is, its outputs kept."""

    def wrapped(*args, **kwargs):
        within, beyond = extract_kap_vals(*args, **kwargs)
        calls.append({"within": within.tolist(), "beyond": beyond.tolist()})
        return within, beyond

    return wrapped


def evaluate_category(ref, category: str, files, kps, thresholds, used, inputs) -> dict:
    """The reference's PCK, PCK-dagger and KAP (as published, corrected) of one category, and its raw KAP values."""
    train, out, calls = ref.pck_train, {}, []
    run = dict(files=files, kps=kps, category=category, used_points=used, thresholds=thresholds, verbose=False)
    with Feeder(ref, kps, inputs):
        for name, changes in (("pck", {}), ("pck_dagger", {"PCKD": True})):
            correct, _, _, img_correct = train.compute_pck(reference_args(**changes), None, None, **run)
            out[name] = {"correct": correct, "img_correct": img_correct}
        extract = train.extract_kap_vals
        for name, replaced in (("kap_as_published", recording(extract, calls)), ("kap", corrected(extract))):
            train.extract_kap_vals = replaced
            try:
                correct, _, _, img_correct = train.compute_kap(reference_args(KAP=True), None, None, **run)
            finally:
                train.extract_kap_vals = extract
            out[name] = {"correct": correct, "img_correct": img_correct}
    return {**out, "extract_kap_vals": calls}


def overall(ref, results: dict) -> dict:
    """utils/logger.py's overall figures of each metric: per image (its default) and per keypoint (KPT_RESULT)."""
    figures = {}
    for metric in ("pck", "pck_dagger", "kap_as_published", "kap"):
        figures[metric] = {}
        for kpt_result, averaging in ((False, "per_image"), (True, "per_keypoint")):
            args, lists = reference_args(KPT_RESULT=kpt_result), ([], [], [], [], [])
            for result in results.values():
                ref.logger.update_stats(args, *lists, result[metric]["correct"], result[metric]["img_correct"])
            figures[metric][averaging] = list(ref.logger.log_weighted_pcks(args, ref.quiet, *lists[:4]))
    return figures


def make_goldens(checkout: Path) -> dict:
    ref = import_reference(checkout)
    rng, results = random.Random(0), {}
    with tempfile.TemporaryDirectory() as tmp:
        build_spair_u(Path(tmp) / "data" / "SPair-71k")
        cwd = os.getcwd()
        os.chdir(tmp)  # the reference reads data/SPair-71k
        try:
            args = reference_args()
            data_dir, categories, split = ref.utils_dataset.get_dataset_info(args, "test")
            for category in categories:
                files, kps, thresholds, used = ref.utils_dataset.load_eval_data(
                    args, data_dir, category, split, unseen_kps=True
                )
                inputs = draw_inputs(kps, thresholds, rng)
                loader = {
                    "pairs": [[Path(f).name for f in files[i : i + 2]] for i in range(0, len(files), 2)],
                    "kps": kps.tolist(),
                    "thresholds": [float(t) for t in thresholds],
                    "used_kps": used.tolist(),
                }
                evaluated = evaluate_category(ref, category, files, kps, thresholds, used, inputs)
                results[category] = {"loader": loader, "inputs": inputs, **evaluated}
        finally:
            os.chdir(cwd)
    return {"reference": reference_version(checkout), "alphas": list(ALPHAS), "categories": results,
            "overall": overall(ref, results)}  # fmt: skip


def reference_version(checkout: Path) -> dict:
    """Where the figures come from: the repository and its commit (read from the checkout when it is a git one)."""
    try:
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = f"not a git checkout; made from {JAMAISVU_COMMIT}"
    return {"repository": "github.com/VICO-UoE/JamaisVu", "commit": commit, "script": Path(__file__).name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jamaisvu", type=Path, required=True, help="a checkout of github.com/VICO-UoE/JamaisVu")
    parser.add_argument("--out", type=Path, default=GOLDENS)
    args = parser.parse_args()
    goldens = make_goldens(args.jamaisvu.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as f:
        f.write(json.dumps(goldens, separators=(",", ":")).encode())
    counts = {c: len(r["loader"]["pairs"]) for c, r in goldens["categories"].items()}
    print(f"wrote {args.out}: pairs {counts}; overall {json.dumps(goldens['overall'])}")


if __name__ == "__main__":
    main()
