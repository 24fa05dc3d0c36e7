"""Golden predictions of the original project's own code, for tests/test_protocol_original.py.

    git clone https://github.com/PhilaMaster/semantic_correspondence /tmp/original
    python benchmarks/make_original_goldens.py --original /tmp/original

Builds the scenario of tests/original_protocol.py (small textured SPair-71k and PF-Pascal sets,
random DINOv2-B/14, DINOv3-B/16 and SAM-B weights in Meta's official layout), runs the original
project's evaluation on them on the CPU in fp32 (a subprocess whose imports come from its checkout:
its dataset classes, models, `evaluate` / `evaluate_SAM`, and for DINOv3 the loop of its
evaluation_dinov3.py with its own functions), and writes each keypoint's predicted pixel and each
pair's PCK to tests/fixtures/original_goldens/<run>.json, with the weights' digest. Nothing of the
original is needed to run the tests: only to make these files again. It takes about 10 minutes on
2 CPU cores (the original runs the backbone twice per pair).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from original_protocol import (  # noqa: E402
    GOLDEN_DIR,
    RUNS,
    THRESHOLDS,
    build_pf_pascal,
    build_spair,
    weights_digest,
    write_weights,
)

# Run in the original's checkout (its module names shadow this repository's): one run -> JSON on stdout.
DRIVER = r"""
import json, sys
import torch
import torch.nn.functional as F
model_name, dataset, root, weights, matcher, window, temperature = sys.argv[1:8]
window, temperature, soft = int(window or 5), float(temperature or 0.1), matcher == "wsoftargmax"
thresholds = [0.05, 0.1, 0.2]
torch.set_grad_enabled(False)
if dataset == "spair":
    from SPair71k.devkit.SPairDataset import SPairDataset
    data = SPairDataset(f"{root}/PairAnnotation", f"{root}/Layout", f"{root}/JPEGImages", "large", 0.1, datatype="test")
else:
    from pf_pascal.PFPascalDataset import PFPascalDataset
    data = PFPascalDataset(root, split="test")
if model_name == "dinov2_vitb14":  # evaluation_dinov2.py
    from evaluate import evaluate, evaluate_no_spair71k
    from models.dinov2.dinov2.models.vision_transformer import vit_base
    model = vit_base(img_size=(518, 518), patch_size=14, num_register_tokens=0, block_chunks=0, init_values=1.0)
    model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    run = evaluate if dataset == "spair" else evaluate_no_spair71k
    per_image, _, _ = run(model.eval(), data, "cpu", thresholds, soft, K=window, temperature=temperature)
elif model_name == "sam_vit_b":  # evaluation_SAM.py
    from evaluate_SAM import evaluate_SAM
    from models.segment_anything.segment_anything import sam_model_registry
    model = sam_model_registry["vit_b"](checkpoint=weights)
    per_image, _, _ = evaluate_SAM(model.eval(), data, "cpu", thresholds, soft, K=window, temperature=temperature, image_size=512)
else:  # evaluation_dinov3.py's loop, with its functions
    from helper_functions import extract_dense_features, patch_to_pixel_coord, pixel_to_patch_coord
    from matching_strategies import find_best_match_argmax, find_best_match_window_softargmax
    from models.dinov3.dinov3.models.vision_transformer import vit_base
    from pck import compute_pck_spair71k
    model = vit_base(img_size=(512, 512), patch_size=16, n_storage_tokens=4, layerscale_init=1.0, mask_k_bias=True)
    model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    model.eval()
    per_image = []
    for sample in data:
        src = F.interpolate(sample["src_img"][None], size=(512, 512), mode="bilinear", align_corners=False)
        trg = F.interpolate(sample["trg_img"][None], size=(512, 512), mode="bilinear", align_corners=False)
        src_size, trg_size = (sample["src_imsize"][2], sample["src_imsize"][1]), (sample["trg_imsize"][2], sample["trg_imsize"][1])
        src_feats, trg_feats = extract_dense_features(model, src), extract_dense_features(model, trg)
        _, H, W, D = trg_feats.shape
        trg_flat = trg_feats.reshape(H * W, D)
        preds = []
        for x, y in sample["src_kps"].numpy():
            px, py = pixel_to_patch_coord(x, y, src_size, patch_size=16, resized_size=512)
            sims = F.cosine_similarity(src_feats[0, py, px, :][None], trg_flat, dim=1)
            if soft:
                mx, my = find_best_match_window_softargmax(sims, W, H, K=window, temperature=temperature)
            else:
                mx, my = find_best_match_argmax(sims, W)
            preds.append(list(patch_to_pixel_coord(mx, my, trg_size, patch_size=16, resized_size=512)))
        pcks = {t: compute_pck_spair71k(preds, sample["trg_kps"].numpy().tolist(), sample["trg_bbox"], t)[0] for t in thresholds}
        per_image.append({"pred_points": preds, "pck_scores": pcks})
pairs = [{"pred": [[float(v) for v in p] for p in m["pred_points"]], "pck": {f"{t:g}": float(m["pck_scores"][t]) for t in thresholds}} for m in per_image]
print(json.dumps(pairs))
"""


def original_commit(original: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=original, capture_output=True, text=True)
    return done.stdout.strip() or "unknown (not a git checkout)"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--original", type=Path, required=True, help="a checkout of PhilaMaster/semantic_correspondence")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="which goldens to make")
    args = ap.parse_args()
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = {"spair": build_spair(tmp), "pf-pascal": build_pf_pascal(tmp)}
        weights = {name: write_weights(tmp / "weights", name) for name in {RUNS[r][0] for r in args.runs}}
        for run in args.runs:
            model, dataset, matcher, window, temperature = RUNS[run]
            argv = [
                model,
                dataset,
                str(roots[dataset]),
                str(weights[model]),
                matcher,
                str(window or ""),
                str(temperature or ""),
            ]
            print(f"{run}: running the original's code ...", flush=True)
            done = subprocess.run(
                [sys.executable, "-c", DRIVER, *argv], cwd=args.original, capture_output=True, text=True, check=False
            )
            if done.returncode:
                sys.exit(f"{run} failed in the original's code:\n{done.stderr[-4000:]}")
            golden = {
                "run": run,
                "model": model,
                "dataset": dataset,
                "matcher": matcher,
                "window": window,
                "temperature": temperature,
                "thresholds": list(THRESHOLDS),
                "weights_digest": weights_digest(weights[model]),
                "original_commit": original_commit(args.original),
                "made_by": "benchmarks/make_original_goldens.py",
                "pairs": json.loads(done.stdout.strip().splitlines()[-1]),
            }
            path = GOLDEN_DIR / f"{run}.json"
            path.write_text(json.dumps(golden, indent=1) + "\n")
            kps = sum(len(p["pred"]) for p in golden["pairs"])
            print(f"{run}: {len(golden['pairs'])} pairs, {kps} keypoints -> {path}")


if __name__ == "__main__":
    main()
