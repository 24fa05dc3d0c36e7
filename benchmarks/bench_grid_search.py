"""Cost of the default 25-cell grid search against single evaluations, on a synthetic set.

    python benchmarks/bench_grid_search.py                          # CPU, random ViT-S/14 at 224 px
    python benchmarks/bench_grid_search.py --device cuda --model dinov2 --image-size 518 --pairs 5000

Both runs start cold (no feature cache), so each extracts the features once: the grid search
then scores 25 window soft-argmax cells plus argmax on them. Prints the seconds of one evaluation
(argmax) and of the whole grid search, and their ratio (target < 3).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_evaluation import synthetic_parser, synthetic_set

from semcorr.cli.resolve import resolve
from semcorr.config.settings import GridSettings
from semcorr.engine.evaluation import evaluate, load_backbones
from semcorr.engine.grid_search import grid_search


def main() -> None:
    args = synthetic_parser(
        __doc__.splitlines()[0], "dinov2_vits14", image_size=224, images=120, pairs=2000
    ).parse_args()
    torch.manual_seed(0)
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, pairset = synthetic_set(tmp, args, "val")
        flags = {"model": args.model, "weights": "random", "image_size": (args.image_size,), "pck_norm": "bbox",
                 "batch_size": args.batch_size, "num_workers": args.num_workers, "device": args.device,
                 "no_cache": True, "output_dir": str(tmp / "results"), "quiet": True}  # fmt: skip
        settings = resolve("evaluation", flags)
        (backbone,) = load_backbones(settings)
        n_kps = sum(p.num_keypoints for p in pairset.pairs)
        print(
            f"synthetic set: {args.pairs} pairs, {args.images} images, {n_kps} keypoints; {backbone.name} "
            f"(random weights) at {args.image_size} px on {backbone.device}"
        )

        evaluate(settings, pairset, backbone)  # warm-up: first-call overheads are no part of either figure
        t0 = time.perf_counter()
        single = evaluate(settings, pairset, backbone)
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        grid = grid_search(resolve("grid", {**flags, "matcher": "wsoftargmax"})[0], GridSettings(), pairset, backbone)
        t_grid = time.perf_counter() - t0
        single_timings = json.loads((single / "metrics.json").read_text())["timings"]
        grid_timings = json.loads((grid / "best_parameters.json").read_text())["timings"]

    print()
    print(
        f"one evaluation (argmax):      {t_single:8.2f} s   (features {single_timings['extraction_s']:.2f} s, "
        f"matching + PCK {single_timings['matching_s']:.2f} s)"
    )
    print(
        f"grid search, 25 cells + argmax: {t_grid:6.2f} s   (features {grid_timings['extraction_s']:.2f} s, "
        f"all cells {grid_timings['grid_s']:.2f} s)"
    )
    print(f"grid / one evaluation:        {t_grid / t_single:8.2f}     (target < 3)")


if __name__ == "__main__":
    main()
