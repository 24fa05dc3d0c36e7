"""Golden predictions of GeoAware-SC's own evaluation code, for tests/test_protocol_geoaware.py.

    git clone https://github.com/Junyi42/GeoAware-SC /tmp/geoaware
    python benchmarks/make_geoaware_goldens.py --ref /tmp/geoaware

Builds the scenario of tests/geoaware_protocol.py (SPair-71k cat and chair pairs, with mirror images, even
and odd padding, masks; PF-Pascal pairs; a tiny random DINOv2 without the final norm). For each dataset,
benchmarks/geoaware_driver.py (a subprocess in the reference's checkout) makes every image's and its mirror
image's 840 canvas with the reference's code; this script runs the tiny DINOv2 on those canvases (the
features GeoAware-SC's preprocess_map.py would save); the driver then evaluates every run's configuration
with the reference's functions. Written to tests/fixtures/geoaware_goldens/<run>.json: each keypoint's
predicted pixel (the reference's canvas point mapped back to the original image), each pair's PCK, flip
decision and distances, geometry-aware PCK, and the canvases' digests. It takes about 10 minutes on 2 CPU
cores (the reference's masked flip distance loops over 4096 positions in Python).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from geoaware_protocol import (  # noqa: E402
    CANVAS,
    GOLDEN_DIR,
    RUNS,
    SPAIR_PAIRS,
    YAMLS,
    build_pf_pascal,
    build_spair,
    masks,
    pascal_images,
    pascal_pairs,
    spair_images,
    tiny_dinov2,
    weights_digest,
)

from models import create_backbone  # noqa: E402

DRIVER = REPO / "benchmarks" / "geoaware_driver.py"


def canvas_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()


def image_spec(dataset: str, root: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The driver's spec of a dataset's images and pairs (pixels as decoded from the files the scenario wrote)."""
    arrays, images = {}, {}
    if dataset == "spair":
        scenario, pairs, image_masks = spair_images(), SPAIR_PAIRS, masks()
        for name, image in scenario.items():
            arrays[name] = np.asarray(Image.open(root / "JPEGImages" / image.category / f"{name}.jpg").convert("RGB"))
            arrays[f"{name}/mask"], arrays[f"{name}/mask_flip"] = image_masks[name]
            images[name] = {"category": image.category, "array": name, "bndbox": list(image.box()),
                            "azimuth_id": image.azimuth, "kps": {str(k): list(v) for k, v in image.kps.items()},
                            "mask": f"{name}/mask", "mask_flip": f"{name}/mask_flip"}  # fmt: skip
    else:
        scenario = pascal_images()
        pairs = pascal_pairs(scenario)
        for name, image in scenario.items():
            arrays[name] = np.asarray(
                Image.open(root / "PF-dataset-PASCAL" / "JPEGImages" / f"{name}.jpg").convert("RGB")
            )
            kps = [[x + 1, y + 1] for _, (x, y) in sorted(image.kps.items())]  # the CSV's MATLAB coordinates
            images[name] = {"category": image.category, "array": name, "kps": kps}
    spec = {"dataset": "spair" if dataset == "spair" else "pascal", "npz": "arrays.npz", "images": images,
            "pairs": [{"src": s, "trg": t} for s, t in pairs]}  # fmt: skip
    return spec, arrays


def run_driver(mode: str, ref: Path, spec: dict, arrays: dict, work: Path) -> Path:
    """The driver in the reference's checkout on `spec`; its output file."""
    work.mkdir(parents=True)
    np.savez(work / "arrays.npz", **arrays)
    (work / "spec.json").write_text(json.dumps(spec))
    out = work / ("canvases.npz" if mode == "canvases" else "reference.json")
    argv = [sys.executable, str(DRIVER), mode, "--ref", str(ref), "--spec", str(work / "spec.json"), "--out", str(out)]
    done = subprocess.run([*argv, "--workdir", str(work / "tree")], cwd=ref, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the reference's code failed ({mode}):\n{done.stderr[-4000:]}")
    return out


@torch.no_grad()
def features(checkpoint: Path, canvases: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tiny DINOv2's (60, 60, C) features of each canvas."""
    backbone = create_backbone(checkpoint=str(checkpoint), device="cpu").eval()
    return {key: backbone(torch.from_numpy(c)[None])[0].permute(1, 2, 0).numpy() for key, c in canvases.items()}


def to_original(point: list[float], size: tuple[int, int]) -> list[float]:
    """A point on the 840 canvas -> the original image's pixels (preprocess_kps_pad, inverted)."""
    w, h = size
    scale = CANVAS / max(w, h)
    ox = (CANVAS - int(np.around(CANVAS * w / h))) // 2 if w < h else 0
    oy = (CANVAS - int(np.around(CANVAS * h / w))) // 2 if h < w else 0
    return [(point[0] - ox) / scale, (point[1] - oy) / scale]


def goldens(dataset: str, result: dict, spec: dict, sizes: dict[str, tuple[int, int]]) -> dict:
    """What a run's golden file holds, from the driver's result of its configuration."""
    alphas = [f"{a:g}" for a in result["alphas"]]
    pairs = []
    for n, pair in enumerate(result["pairs"]):
        src, trg = spec["images"][pair["src"]], spec["images"][pair["trg"]]
        if dataset == "spair":
            slots = sorted(set(map(int, src["kps"])) & set(map(int, trg["kps"])))
            names = [str(s) for s in slots]
        else:
            slots, names = list(range(len(src["kps"]))), [str(i) for i in range(len(src["kps"]))]
        entry = {
            "src": pair["src"], "trg": pair["trg"], "category": pair["category"],
            "pred": {k: to_original(pair["pred_30slot"][s], sizes[pair["trg"]]) for k, s in zip(names, slots, strict=True)},
            "pck": dict(zip(alphas, pair["pck"], strict=True)),
        }  # fmt: skip
        if pair["flip"]:
            entry["flip"] = {**pair["flip"], "chosen": pair["flip"]["flipped"] < pair["flip"]["original"]}
        if "per_pair_geo_aware" in result:
            geo = result["per_pair_geo_aware"][n]
            entry["geo_aware_pck"] = dict(zip(alphas, geo, strict=True)) if geo else None
        pairs.append(entry)
    out = {"alphas": alphas, "pairs": pairs}
    if "geo_aware" in result:
        out["geo_aware"] = {"pck": dict(zip(alphas, result["geo_aware"]["pck"], strict=True)),
                            "pairs": result["geo_aware"]["pairs"]}  # fmt: skip
        out["azimuth"] = {a: {"pck": dict(zip(alphas, v["pck"], strict=True)), "pairs": v["pairs"]}
                          for a, v in result["azimuth"].items() if v["pairs"]}  # fmt: skip
    return out


def reference_commit(ref: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ref, capture_output=True, text=True)
    return done.stdout.strip() or "unknown (not a git checkout)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="a checkout of Junyi42/GeoAware-SC")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = ap.parse_args()
    ref = args.ref.resolve()
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = tiny_dinov2(tmp / "weights")
        roots = {"spair": build_spair(tmp / "ours"), "pf-pascal": build_pf_pascal(tmp / "ours")}
        for dataset in sorted({RUNS[run][0] for run in args.runs}):
            runs = [run for run in args.runs if RUNS[run][0] == dataset]
            spec, arrays = image_spec(dataset, roots[dataset])
            print(f"{dataset}: the reference's canvases ...", flush=True)
            canvases = dict(np.load(run_driver("canvases", ref, spec, arrays, tmp / dataset / "canvases")))
            for key, feats in features(checkpoint, canvases).items():
                stem, tag = key.split("/")
                arrays[f"{key}/feat"] = feats
                spec["images"][stem]["feat_flip" if tag == "mirrored" else "feat"] = f"{key}/feat"
            spec["configs"] = {run: {"base": YAMLS[dataset], "overrides": RUNS[run][2]} for run in runs}
            print(f"{dataset}: the reference's evaluation of {', '.join(runs)} ...", flush=True)
            result = json.loads(run_driver("evaluate", ref, spec, arrays, tmp / dataset / "evaluate").read_text())
            sizes = {stem: arrays[stem].shape[1::-1] for stem in spec["images"]}
            digests = {key: canvas_digest(c) for key, c in canvases.items()}
            for run in runs:
                golden = {
                    "run": run, "dataset": dataset, "flags": RUNS[run][1], "reference_flags": RUNS[run][2],
                    "weights_digest": weights_digest(checkpoint), "reference_commit": reference_commit(ref),
                    "made_by": "benchmarks/make_geoaware_goldens.py", "canvas_sha256": digests,
                    **goldens(dataset, result[run], spec, sizes),
                }  # fmt: skip
                path = GOLDEN_DIR / f"{run}.json"
                path.write_text(json.dumps(golden, indent=1) + "\n")
                kps = sum(len(p["pred"]) for p in golden["pairs"])
                print(f"{run}: {len(golden['pairs'])} pairs, {kps} keypoints -> {path}")


if __name__ == "__main__":
    main()
