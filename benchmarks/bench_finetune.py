"""Speed of a fine-tuning step: steps/s, and the share of time spent in the frozen blocks.

    python benchmarks/bench_finetune.py                                   # CPU, random ViT-B at 224 px
    python benchmarks/bench_finetune.py --model dinov3 --device cuda      # default size (512), bf16
    python benchmarks/bench_finetune.py --depth 2 --image-size 28 --steps 1   # a smoke run (tests/test_benchmarks.py)

Times the engine's own train_step on random images (no data loading) with the default protocol's
optimiser and the model's preset (or --trainable-blocks), twice:
  - as trained by default: the frozen blocks run under no_grad every step;
  - with --cache-frozen: the frozen blocks' outputs are computed once per image beforehand, so a
    step pays only for the trainable blocks (valid only without photometric augmentation / flips).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetuning.model import SplitBackbone, make_optimizer
from finetuning.training import grad_scaler, train_step
from models import TokenState, create_backbone
from semcorr.cli.resolve import resolve
from semcorr.config.settings import TrainSettings


class Precomputed:
    """Stands in for FrozenCache: the frozen blocks' output of one batch, computed once."""

    def __init__(self, state: TokenState):
        self.state = state

    def states(self, keys: list[str], device: torch.device) -> TokenState:
        return self.state


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(split: SplitBackbone, cache, batch: dict, settings: TrainSettings, steps: int) -> tuple[float, float]:
    """(seconds per step, seconds per step inside the frozen trunk), after two warm-up steps."""
    device = split.backbone.device
    opt = settings.optimisation
    optimizer = make_optimizer(split, opt.lr, opt.weight_decay, decay=opt.decay)
    trunk_time = [0.0]
    trunk = split.trunk

    def timed_trunk(images):
        sync(device)
        t0 = time.perf_counter()
        out = trunk(images)
        sync(device)
        trunk_time[0] += time.perf_counter() - t0
        return out

    split.trunk = timed_trunk
    # the parts of a finetuning.training.TrainingRun that train_step uses
    training = SimpleNamespace(
        backbone=split.backbone, split=split, model=split, cache=cache, settings=settings, optimizer=optimizer,
        scaler=grad_scaler(split.backbone),
    )  # fmt: skip
    for _ in range(2):
        train_step(training, batch)
    trunk_time[0] = 0.0
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(training, batch)
    sync(device)
    split.trunk = trunk
    return (time.perf_counter() - t0) / steps, trunk_time[0] / steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dinov2")
    ap.add_argument("--image-size", type=int, help="default: 224 on CPU, the model's own size on CUDA")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    ap.add_argument("--keypoints", type=int, default=20, help="keypoints per pair")
    ap.add_argument("--trainable-blocks", type=int, help="default: the model's preset")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--depth", type=int, help="build only this many blocks (a quick smoke run; default: all)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)

    depth = {"depth": args.depth} if args.depth is not None else {}
    # the default protocol's settings with the model's preset, resolved as finetuning/finetune.py does
    flags = {"model": args.model, "weights": "random", "device": args.device}
    if args.trainable_blocks is not None:
        flags["trainable_blocks"] = args.trainable_blocks
    settings = resolve("finetune", flags)
    bb = create_backbone(settings.backbone, **depth)
    device = bb.device
    size = args.image_size or (bb.default_image_size if device.type == "cuda" else 224)
    size = size // bb.patch_size * bb.patch_size
    n = settings.trainable_blocks
    split = SplitBackbone(bb, n, train_neck=settings.optimisation.train_neck)
    b, k, grid = args.batch_size, args.keypoints, size // bb.patch_size
    batch = {
        "images": torch.randn(2 * b, 3, size, size),
        "src_pq": torch.rand(b, k, 2) * (grid - 1),
        "trg_pq": torch.rand(b, k, 2) * (grid - 1),
        "mask": torch.ones(b, k, dtype=torch.bool),
        "keys": [str(i) for i in range(2 * b)],
    }
    trainable = sum(p.numel() for p in split.parameters() if p.requires_grad)
    print(
        f"{bb.name} (random weights) at {size}x{size} on {device}, autocast {bb.autocast_dtype}; "
        f"batch {b} pairs x {k} keypoints; last {n} of {len(bb.blocks)} blocks train "
        f"({trainable / 1e6:.1f}M of {sum(p.numel() for p in split.parameters()) / 1e6:.1f}M parameters)"
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step, frozen = time_steps(split, None, batch, settings, args.steps)
    memory = (
        f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
    )
    print(
        f"frozen blocks under no_grad:  {1 / step:7.2f} steps/s  {b / step:8.1f} pairs/s  "
        f"frozen part {100 * frozen / step:4.1f}% of the step{memory}"
    )
    cache = Precomputed(split.trunk(batch["images"].to(device)))
    cached, _ = time_steps(split, cache, batch, settings, args.steps)
    print(
        f"frozen outputs cached:        {1 / cached:7.2f} steps/s  {b / cached:8.1f} pairs/s  "
        f"{step / cached:.2f}x faster (valid only without --flip / --jitter)"
    )


if __name__ == "__main__":
    main()
