"""How far the CUDA path (bf16 autocast by default) is from CPU fp32, per backbone.

    python benchmarks/check_precision.py --models dinov2 dinov3 sam            # random weights
    python benchmarks/check_precision.py --models dinov2 --weights models/dinov2/weights/dinov2_vitb14_pretrain.pth

For each model: max |difference| of the features, mean cosine similarity between the two
feature maps, and how often the nearest target patch of a source patch is the same.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import create_backbone


def compare(name: str, weights: str, size: int | None, precision: str) -> dict[str, float]:
    torch.manual_seed(0)
    cpu = create_backbone(name, weights=weights, device="cpu").eval()
    gpu = create_backbone(name, weights=weights, device="cuda", precision=precision).eval()
    gpu.load_state_dict(cpu.state_dict())  # same random weights on both
    side = size or cpu.default_image_size
    images = torch.randn(2, 3, side, side)
    with torch.inference_mode():
        a = cpu(images)
        b = gpu(images.cuda()).cpu()
    fa, fb = F.normalize(a.flatten(2), dim=1), F.normalize(b.flatten(2), dim=1)
    nn_a = (fa[0].T @ fa[1]).argmax(1)
    nn_b = (fb[0].T @ fb[1]).argmax(1)
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "feature_scale": float(a.abs().max()),
        "mean_cosine": float((fa * fb).sum(1).mean()),
        "same_nearest_patch": float((nn_a == nn_b).float().mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["dinov2", "dinov3", "sam"])
    ap.add_argument("--weights", default="random")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    warnings.simplefilter("ignore")
    for name in args.models:
        for precision in args.precision:
            r = compare(name, args.weights, args.image_size, precision)
            print(
                f"{name:8s} {precision:5s} max|diff| {r['max_abs_diff']:.2e} (features up to {r['feature_scale']:.1f})"
                f"  mean cosine {r['mean_cosine']:.5f}  same nearest patch {100 * r['same_nearest_patch']:.1f}%"
            )


if __name__ == "__main__":
    main()
