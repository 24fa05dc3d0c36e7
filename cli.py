"""Command-line arguments shared by the scripts (one definition, many scripts), and how a script ends.

Only light modules are imported here: a script parses its arguments, and answers --help, before
torch loads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from pairs import LOADERS
from settings import (
    BUILDS,
    COORDINATES,
    DEFAULT_THRESHOLDS,
    DESCRIPTORS,
    FEATURE_DTYPES,
    MATCHERS,
    PCK_NORMS,
    PRECISIONS,
    PROTOCOLS,
    RESAMPLES,
    RESIZE_MODES,
    WINDOW_BORDERS,
    EvalConfig,
    MatchConfig,
    MemberSpec,
)

# the flags of add_protocol_args that are EvalConfig fields of the same name
PROTOCOL_FLAGS = ("resample", "coordinates", "pf_shift", "clamp_keypoints", "precision", "feature_dtype", "build")

CheckpointFlag = Literal["none", "optional", "either"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None and False (the help text says what those mean)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def path(text: str) -> str:
    """A path flag's value with `~` and environment variables expanded (bash leaves `--flag=~/x` as is)."""
    return os.path.expandvars(os.path.expanduser(text))


def device(text: str) -> str:
    """auto, cpu, mps, cuda or cuda:N."""
    if text in ("auto", "cpu", "mps", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda, cuda:N or mps")


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
    k = integer(text)
    if k < 1 or k % 2 == 0:
        raise argparse.ArgumentTypeError(f"window must be a positive odd number, got {k}")
    return k


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def count(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def temperature(text: str) -> float:
    """A soft-argmax temperature: > 0 and not so small that similarity / T overflows (T >= 1e-4)."""
    value = positive_float(text)
    if value < 1e-4:
        raise argparse.ArgumentTypeError(f"must be >= 1e-4 (similarities / T would overflow), got {value:g}")
    return value


def alpha(text: str) -> float:
    """A PCK threshold alpha: a fraction of the normaliser, in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (a fraction of the threshold length L), got {value:g}")
    return value


def distinct(values: list[float], flag: str) -> list[float]:
    """The thresholds, refused when one is given twice."""
    twice = sorted({f"{v:g}" for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"{flag}: {', '.join(twice)} given more than once; give each alpha once")
    return values


def parse_member(text: str) -> MemberSpec:
    """'dinov3:ckpt.pt:0.65@512' -> MemberSpec('dinov3', 'ckpt.pt', 0.65, [512])."""
    body, size = text, None
    if "@" in text:
        body, size_text = text.rsplit("@", 1)
        try:
            size = image_size(size_text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"member {text!r}: the part after '@' must be an image size N or HxW, got {size_text!r}"
            ) from None
    model, *rest = body.split(":")
    weight = None
    if rest:
        try:
            weight = float(rest[-1])
            rest = rest[:-1]
        except ValueError:
            pass  # the last part is the weights file
    if not model or any(not part for part in rest):
        raise argparse.ArgumentTypeError(
            f"member {text!r}: expected MODEL[:WEIGHTS][:WEIGHT][@SIZE], e.g. dinov3:ckpt.pt:0.65"
        )
    if weight is not None and not (math.isfinite(weight) and weight >= 0):
        raise argparse.ArgumentTypeError(f"member {text!r}: the ensemble weight must be a number >= 0, got {weight}")
    return MemberSpec(model, path(":".join(rest)) if rest else None, weight, size)


def attach_values(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """`--points -5,10` -> `--points=-5,10`: argparse takes a value starting with '-' for a flag."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] in flags and out[i + 1].startswith("-") and not out[i + 1].startswith("--"):
            out[i : i + 2] = [f"{out[i]}={out[i + 1]}", ""]
    return [a for a in out if a != ""]


def parse_points(text: str) -> np.ndarray:
    """'x,y;x,y' -> (N, 2) float32 (match_pair.py --points)."""
    try:
        points = [[float(v) for v in item.split(",")] for item in text.split(";") if item.strip()]
    except ValueError:
        points = None
    if not points or any(len(p) != 2 for p in points) or not np.isfinite(points).all():
        raise ValueError(f"--points must look like 'x,y;x,y' (pixels of the source image), got {text!r}")
    return np.asarray(points, dtype=np.float32)


def add_data_args(p: argparse.ArgumentParser, split: str = "test") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=tuple(LOADERS), default="spair", help="benchmark to evaluate on")
    g.add_argument(
        "--data-root",
        type=path,
        help="dataset folder (default: the folder download.py fills); for custom, the pairs file",
    )
    g.add_argument("--split", default=split, help="trn | val | test")
    g.add_argument("--layout", choices=("large", "small"), default="large", help="SPair-71k layout")
    add_rescale_arg(g)
    g.add_argument("--limit", type=positive_int, help="evaluate only the first N pairs")
    g.add_argument("--thresholds", type=alpha, nargs="+", default=list(DEFAULT_THRESHOLDS), help="PCK alphas")
    g.add_argument(
        "--pck-norm",
        choices=PCK_NORMS,
        help="PCK threshold length L: bbox = target bbox max side (SPair default), image = target image "
        "max side (PF-Pascal default), kpbox = target keypoint box max side (PF-Willow default)",
    )


def add_rescale_arg(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--rescale-annotations",
        action="store_true",
        help="image files of another size than their annotations say (a resized copy of the dataset): scale the "
        "annotations to the files instead of stopping",
    )


def add_backbone_args(p: argparse.ArgumentParser, checkpoint: CheckpointFlag = "none") -> None:
    """--model, --weights, --layer (and --checkpoint: "optional", or "either" it or --weights required)."""
    g = p.add_argument_group("backbone")
    files = g.add_mutually_exclusive_group(required=checkpoint == "either")
    if checkpoint != "none":
        files.add_argument(
            "--checkpoint",
            type=path,
            help="a fine-tuned checkpoint (best.pt / last.pt of finetuning/finetune.py); it names its own model",
        )
    g.add_argument(
        "--model", help="dinov2 | dinov2_reg | dinov3 | sam, or a sized name like dinov2_vitl14 (default: dinov2)"
    )
    files.add_argument(
        "--weights",
        type=path,
        help="weights file of --model: official, timm or .safetensors (default: the official file under "
        "models/<family>/weights/); 'random' only for smoke tests",
    )
    g.add_argument("--layer", type=integer, help="take features from this block (0-based, negative from the end)")
    add_extraction_args(g)


def add_extraction_args(g: argparse._ArgumentGroup) -> None:
    """How images become features: size, resize mode, batching, device, cache."""
    g.add_argument(
        "--image-size",
        type=image_size,
        help="N or HxW, rounded to the patch size (default: 518 DINOv2, 512 DINOv3 and SAM)",
    )
    g.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        help="squash = resize to the square ignoring aspect (original project, the default); "
        "pad = keep aspect, pad. A fine-tuned checkpoint defaults to the size and mode it was trained with",
    )
    g.add_argument("--batch-size", type=positive_int, default=16, help="images per backbone forward pass")
    g.add_argument("--num-workers", type=count, default=2, help="image decoding processes")
    g.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--cache-dir", type=path, default="cache/features", help="disk cache of per-image features")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def add_matcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("matching")
    default = MatchConfig()
    g.add_argument(
        "--matcher",
        choices=MATCHERS,
        help=f"argmax or windowed soft-argmax (default {default.matcher}; wsoftargmax with --params)",
    )
    g.add_argument(
        "--window", type=odd_window, help=f"soft-argmax window K (odd), in patches (default {default.window})"
    )
    g.add_argument("--temperature", type=temperature, help=f"soft-argmax temperature T (default {default.temperature})")
    g.add_argument(
        "--params",
        type=path,
        metavar="JSON",
        help="take K and T from a grid search's best_parameters.json "
        "(grid_search_hyperparams.py); implies --matcher wsoftargmax",
    )
    g.add_argument("--params-alpha", type=alpha, default=0.1, help="use the K and T that were best at this PCK alpha")
    add_descriptor_arg(g)
    g.add_argument(
        "--window-border",
        choices=WINDOW_BORDERS,
        help="soft-argmax window at the image border: shrink symmetrically (default protocol) or clip (original)",
    )


def add_descriptor_arg(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--descriptor",
        choices=DESCRIPTORS,
        default="nearest",
        help="source descriptor: the keypoint's patch, or bilinear between patch centres",
    )


def add_output_args(p: argparse.ArgumentParser, *, save_vis: bool = True, seed: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", type=path, default="results", help="a new timestamped folder is made inside")
    if save_vis:
        g.add_argument(
            "--save-vis",
            type=count,
            default=0,
            metavar="N",
            help="draw the matches of the N best and N worst pairs into <run>/vis/",
        )
    if seed:
        g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_protocol_args(p: argparse.ArgumentParser, *, evaluation: bool = True) -> None:
    """--protocol, and a flag for each convention it sets (given: overrides that part of it)."""
    g = p.add_argument_group(
        "protocol", "--protocol sets every convention below at once; a flag given overrides that part of it"
    )
    g.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        default="default",
        help="default: this toolkit's corrected conventions; original: the original project's, to reproduce its numbers",
    )
    g.add_argument("--resample", choices=RESAMPLES, help="pil-bicubic (default) or torch-bilinear (original)")
    g.add_argument(
        "--coordinates", choices=COORDINATES, help="pixel 0 at the pixel's centre (default) or edge (original)"
    )
    g.add_argument(
        "--pf-shift",
        action=argparse.BooleanOptionalAction,
        help="shift PF-Pascal / PF-Willow 1-based coordinates by -1 (default; original: --no-pf-shift)",
    )
    g.add_argument(
        "--clamp-keypoints",
        action=argparse.BooleanOptionalAction,
        help="move keypoints outside their image into it (default; original: --no-clamp-keypoints)",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast dtype of every backbone (default protocol: auto = bf16 on CUDA, fp32 on CPU; "
        "original: fp32 for DINO, fp16 for SAM)",
    )
    g.add_argument(
        "--build", choices=BUILDS, help="backbones as Meta's hub builds them (default) or as the original did"
    )
    if evaluation:
        g.add_argument(
            "--feature-dtype", choices=FEATURE_DTYPES, help="features in memory and cache: fp16 (default), fp32"
        )


def evaluation_parser(description: str, checkpoint: CheckpointFlag = "none") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_backbone_args(p, checkpoint)
    add_data_args(p)
    add_matcher_args(p)
    add_protocol_args(p)
    add_output_args(p)
    return p


def read_best_parameters(path: str | Path, alpha: float) -> tuple[int, float, dict]:
    """(window, temperature) that a grid search found best at PCK@alpha, from its best_parameters.json,
    and the setting it searched with (model, image size, patch grid; what the file records of them)."""
    what = "a best_parameters.json written by grid_search_hyperparams.py"
    try:
        data = json.loads(Path(path).read_text())
        best = data["best"]
        found = {key: (int(entry["window"]), float(entry["temperature"])) for key, entry in best.items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"--params: no file {path} (expected {what})") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"--params: {path} is not {what} ({type(err).__name__}: {err})") from None
    if f"{alpha:g}" not in found:
        raise ValueError(
            f"--params: {path} has best parameters for alpha {', '.join(found)}, not {alpha:g}; "
            "choose one of those with --params-alpha"
        )
    return *found[f"{alpha:g}"], {key: data[key] for key in ("model", "image_size", "grid") if key in data}


def match_config(args: argparse.Namespace) -> tuple[MatchConfig, dict | None]:
    """The matcher the arguments ask for; --params supplies a grid search's best window and temperature,
    and then the setting that search ran with comes too (else None)."""
    default = MatchConfig()
    if not args.params:
        match = MatchConfig(
            matcher=args.matcher or default.matcher,
            window=default.window if args.window is None else args.window,
            temperature=default.temperature if args.temperature is None else args.temperature,
            descriptor=args.descriptor,
            window_border=args.window_border,
        )
        return match, None
    if args.matcher == "argmax" or args.window is not None or args.temperature is not None:
        raise ValueError(
            "--params sets the soft-argmax window and temperature: drop --matcher argmax, --window "
            "and --temperature, or drop --params"
        )
    window, temperature, searched = read_best_parameters(args.params, args.params_alpha)
    return MatchConfig("wsoftargmax", window, temperature, args.descriptor, args.window_border), searched


def eval_config(args: argparse.Namespace, match: MatchConfig | None = None) -> EvalConfig:
    """The EvalConfig that parsed arguments describe (`match` replaces the matcher arguments)."""
    checkpoint = getattr(args, "checkpoint", None)
    match, searched = (match, None) if match is not None else match_config(args)
    return EvalConfig(
        model=args.model or (None if checkpoint else EvalConfig.model),
        weights=args.weights,
        checkpoint=checkpoint,
        layer=args.layer,
        dataset=args.dataset,
        data_root=args.data_root,
        split=args.split,
        layout=args.layout,
        limit=args.limit,
        rescale_annotations=getattr(args, "rescale_annotations", False),
        image_size=args.image_size,
        resize=args.resize,
        match=match,
        match_params=f"{args.params} (best at PCK@{args.params_alpha:g})" if getattr(args, "params", None) else None,
        params_setting=searched,
        thresholds=distinct(args.thresholds, "--thresholds"),
        pck_norm=args.pck_norm,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        cache_dir=None if args.no_cache else args.cache_dir,
        output_dir=args.output_dir,
        save_vis=getattr(args, "save_vis", 0),
        seed=args.seed,
        progress=not args.quiet,
        **{name: getattr(args, name, None) for name in PROTOCOL_FLAGS},
        protocol=getattr(args, "protocol", "default"),
    )


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main: bad input and interruptions end with one clear line, not a traceback.

    Set SEMCORR_TRACEBACK=1 to see the full traceback instead. Warnings print as one line each.
    """
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    if os.environ.get("SEMCORR_TRACEBACK"):
        main()
        return
    try:
        main()
    except KeyboardInterrupt as stop:  # a flow that knows what it saved says so in the exception
        sys.exit(str(stop) or "interrupted: features extracted so far are in the feature cache; re-running resumes")
    except (ValueError, FileNotFoundError, PermissionError) as err:
        sys.exit(f"error: {err}")
