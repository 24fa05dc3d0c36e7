"""Peak host memory of an evaluation at the field's setting, as the number of images grows, with the features held
in memory and read from the disk cache (--feature-memory).

    python benchmarks/bench_memory.py                                  # 60, 120 and 240 images
    python benchmarks/bench_memory.py --images 962 --modes streamed    # SPair-71k test's image count
    python benchmarks/bench_memory.py --images 962 --modes streamed --pairs-per-image 12.7 --flip-align off

The setting is --protocol geoaware with --flip-align mutual-nn: 840x840 inputs, 60x60 patches of 768 channels in
fp32, every source also mirrored. The backbone is a stand-in that gives such features quickly (each patch's colour
projected at random), so that what is measured is the evaluation's own memory (images, features, matching, flips,
results), not a network's. Each configuration runs in a fresh process, from a cold cache; printed: its peak
resident memory (ru_maxrss), the features' size and whether they were streamed, and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_evaluation import CATEGORIES, synthetic_images, synthetic_pairs

from semcorr.cli.resolve import resolve
from semcorr.data.images import ImageRef
from semcorr.data.pairs import PairSet
from semcorr.engine.evaluation import evaluate


class StandIn(torch.nn.Module):
    """Backbone attributes the engine uses; 768 features per 14-pixel patch, a fixed random projection of its
    mean colour."""

    def __init__(self, weights: Path, dim: int = 768):
        super().__init__()
        self.name, self.patch_size, self.layer, self.feature_dim = "standin", 14, None, dim
        self.device, self.autocast_dtype, self.weights_path = torch.device("cpu"), None, str(weights)
        self.register_buffer("projection", torch.randn(dim, 3, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        colour = F.avg_pool2d(images, self.patch_size)  # (B, 3, h, w)
        return torch.sin(4 * torch.einsum("dc,bchw->bdhw", self.projection, colour))


def child(args: argparse.Namespace) -> None:
    """One evaluation in this process; prints its figures as JSON."""
    warnings.simplefilter("ignore")
    folder = Path(args.folder)
    listed = json.loads((folder / "images.json").read_text())[: args.child_images]
    refs = [ImageRef(**{**r, "size": tuple(r["size"])}) for r in listed]
    pairs = synthetic_pairs(refs, int(args.pairs_per_image * len(refs)), 10, np.random.default_rng(1))
    for pair in pairs:  # left-right partners 0<->1, 2<->3, ...: what --flip-align needs
        pair.kp_mirror = [str(int(k) ^ 1) if (int(k) ^ 1) < pair.num_keypoints else k for k in pair.kp_ids]
    work = Path(tempfile.mkdtemp(dir=folder))
    settings = resolve(
        "evaluation",
        {"protocol": "geoaware", "flip_align": args.flip_align, "cache_dir": str(work / "cache"),
         "output_dir": str(work / "results"), "num_workers": 0, "batch_size": 8, "quiet": True,
         **({"feature_memory": args.feature_memory} if args.feature_memory else {})},
    )  # fmt: skip
    t0 = time.perf_counter()
    run = evaluate(settings, PairSet("bench", "test", str(folder), pairs), StandIn(folder / "weights.bin"))
    timings = json.loads((run / "metrics.json").read_text())["timings"]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    images = timings["images_extracted"] + timings["images_from_cache"]
    print(json.dumps({"peak_gb": peak_gb, "features_gb": timings["features_gb"], "images": images,
                      "pairs": len(pairs), "streamed": timings["features_streamed"],
                      "seconds": time.perf_counter() - t0}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[60, 120, 240], help="image counts to measure")
    ap.add_argument("--pairs-per-image", type=float, default=1.0, help="SPair-71k test has 12.7")
    ap.add_argument("--flip-align", choices=["mutual-nn", "off"], default="mutual-nn", help="off: no mirror images")
    ap.add_argument("--modes", nargs="+", choices=["memory", "streamed"], default=["memory", "streamed"])
    ap.add_argument("--feature-memory", type=float, default=None, help="GB held in memory when streamed (default 1)")
    ap.add_argument("--child-images", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_images:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "img").mkdir()
        refs = synthetic_images(folder / "img", max(max(args.images), 2 * CATEGORIES), np.random.default_rng(0))
        (folder / "images.json").write_text(json.dumps([vars(r) for r in refs]))
        (folder / "weights.bin").write_bytes(b"stand-in")
        print(
            f"{'images':>7} {'with mirrors':>12} {'pairs':>6} {'features':>9} {'mode':>9} {'peak host':>10} {'time':>7}"
        )
        for n in args.images:
            for mode in args.modes:
                budget = ["--feature-memory", str(args.feature_memory or 1.0)] if mode == "streamed" else (
                    ["--feature-memory", "1000"])  # fmt: skip
                out = subprocess.run(
                    [sys.executable, __file__, "--child-images", str(n), "--folder", tmp,
                     "--pairs-per-image", str(args.pairs_per_image), "--flip-align", args.flip_align, *budget],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"{n:>7} {r['images']:>12} {r['pairs']:>6} {r['features_gb']:>6.2f} GB "
                    f"{'streamed' if r['streamed'] else 'memory':>9} {r['peak_gb']:>7.2f} GB {r['seconds']:>6.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
