"""Command-line arguments shared by the evaluation scripts (one definition, many scripts)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import pck
from evaluation import EvalConfig, MatchConfig
from matching_strategies import MATCHERS

DATASETS = ("spair", "pf-pascal", "pf-willow", "custom")


def image_size(text: str) -> list[int]:
    """'518' -> [518]; '518x700' -> [518, 700] (height x width)."""
    try:
        sides = [int(s) for s in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}") from None
    if len(sides) not in (1, 2) or min(sides) <= 0:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}")
    return sides


def odd_window(text: str) -> int:
    k = int(text)
    if k < 1 or k % 2 == 0:
        raise argparse.ArgumentTypeError(f"window must be a positive odd number, got {k}")
    return k


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_data_args(p: argparse.ArgumentParser, split: str = "test") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="spair", help="benchmark to evaluate on")
    g.add_argument("--data-root", help="dataset folder (default: the folder download.py fills); for custom, the pairs file")
    g.add_argument("--split", default=split, help=f"trn | val | test (default {split})")
    g.add_argument("--layout", choices=("large", "small"), default="large", help="SPair-71k layout")
    g.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    g.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="PCK alphas")
    g.add_argument(
        "--pck-norm",
        choices=pck.NORMS,
        help="PCK threshold length L: bbox = target bbox max side (SPair default), image = target image "
        "max side (PF-Pascal default), kpbox = target keypoint box max side (PF-Willow default)",
    )


def add_backbone_args(p: argparse.ArgumentParser, checkpoint: bool = False) -> None:
    g = p.add_argument_group("backbone")
    if checkpoint:
        g.add_argument("--checkpoint", required=True, help="fine-tuned checkpoint written by finetuning/finetune.py, "
                       "or any weights file (then give --model)")
    g.add_argument("--model", default="dinov2", help="dinov2 | dinov2_reg | dinov3 | sam, or a sized name like dinov2_vitl14")
    g.add_argument("--weights", help="weights file (default: the official file under models/<family>/weights/); "
                   "'random' only for smoke tests")
    g.add_argument("--layer", type=int, help="take features from this block (0-based, negative from the end)")
    g.add_argument("--image-size", type=image_size, help="N or HxW, rounded to the patch size "
                   "(default: 518 DINOv2, 512 DINOv3 and SAM)")
    g.add_argument("--resize", choices=("squash", "pad"), default="squash",
                   help="squash = resize to the square ignoring aspect (original project); pad = keep aspect, pad")
    g.add_argument("--batch-size", type=int, default=16, help="images per backbone forward pass")
    g.add_argument("--num-workers", type=int, default=2, help="image decoding processes")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--cache-dir", default="cache/features", help="disk cache of per-image features")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def add_matcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("matching")
    g.add_argument("--matcher", choices=MATCHERS, default="argmax", help="argmax or windowed soft-argmax")
    g.add_argument("--window", type=odd_window, default=5, help="soft-argmax window K (odd), in patches")
    g.add_argument("--temperature", type=positive_float, default=0.1, help="soft-argmax temperature T")
    g.add_argument("--descriptor", choices=("nearest", "bilinear"), default="nearest",
                   help="source descriptor: the keypoint's patch, or bilinear between patch centres")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default="results", help="a new timestamped folder is made inside")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def evaluation_parser(description: str, checkpoint: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_backbone_args(p, checkpoint)
    add_data_args(p)
    add_matcher_args(p)
    add_output_args(p)
    return p


def match_config(args: argparse.Namespace) -> MatchConfig:
    return MatchConfig(args.matcher, args.window, args.temperature, args.descriptor)


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig that parsed arguments describe."""
    return EvalConfig(
        model=args.model,
        weights=args.weights,
        checkpoint=getattr(args, "checkpoint", None),
        layer=args.layer,
        dataset=args.dataset,
        data_root=args.data_root,
        split=args.split,
        layout=args.layout,
        limit=args.limit,
        image_size=args.image_size,
        resize=args.resize,
        match=match_config(args),
        thresholds=args.thresholds,
        pck_norm=args.pck_norm,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        cache_dir=None if args.no_cache else args.cache_dir,
        output_dir=args.output_dir,
        seed=args.seed,
        progress=not args.quiet,
    )


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main: bad input and interruptions end with one clear line, not a traceback.

    Set SEMCORR_TRACEBACK=1 to see the full traceback instead.
    """
    if os.environ.get("SEMCORR_TRACEBACK"):
        main()
        return
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: features extracted so far are in the feature cache; re-running resumes from there")
    except (ValueError, FileNotFoundError, PermissionError) as err:
        sys.exit(f"error: {err}")
