"""Command-line flags shared by the scripts (one definition, many scripts): their types (validated, `~` and
`$VARS` expanded in paths) and groups. Every parser leaves out the flags that were not given
(argparse.SUPPRESS), so that `vars(args)` is exactly what semcorr/cli/resolve.py lays over the defaults and
the protocol; a flag's help shows its default, read from semcorr/config/settings.py.

Only light modules are imported here: a script parses its arguments before torch loads.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Literal

from semcorr.config.protocols import PROTOCOLS
from semcorr.config.settings import (
    BUILDS,
    COORDINATE_CONVENTIONS,
    DESCRIPTORS,
    FEATURE_DTYPE_NAMES,
    FLIP_ALIGN_MODES,
    LAYOUTS,
    PAD_FILLS,
    PCK_NORMS,
    PRECISION_NAMES,
    RESAMPLE_METHODS,
    RESIZE_MODES,
    WINDOW_BORDERS,
    BackboneSettings,
    EvalSettings,
    MemberSettings,
)

CheckpointFlag = Literal["none", "optional", "either"]
# semcorr/data/datasets.py's LOADERS (checked there too)
DATASETS = ("spair", "pf-pascal", "pf-willow", "ap10k", "spair-u", "custom")


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member as written on the command line: MODEL[:WEIGHTS][:WEIGHT][@SIZE]."""

    model: str
    weights: str | None = None  # a weights file or a fine-tuned checkpoint of `model`
    weight: float | None = None
    image_size: tuple[int, ...] | None = None

    def __str__(self) -> str:
        parts = [self.model, *([self.weights] if self.weights else [])]
        parts += [f"{self.weight:g}"] if self.weight is not None else []
        return ":".join(parts) + ("@" + "x".join(map(str, self.image_size)) if self.image_size else "")


def parser(description: str, formatter: type = argparse.HelpFormatter) -> argparse.ArgumentParser:
    """A parser that records only the flags given."""
    return argparse.ArgumentParser(
        description=description, formatter_class=formatter, argument_default=argparse.SUPPRESS
    )


def given(args: argparse.Namespace) -> dict:
    """The flags given, by name (lists as tuples: settings are frozen)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()}


def shown(value: object) -> str:
    if isinstance(value, tuple | list):
        return " ".join(map(str, value))
    return str(value)


def default_text(path: str, root: type = EvalSettings) -> str:
    """' (default: X)' for the setting at `path` (semcorr/cli/resolve.py's PATHS)."""
    from semcorr.cli.resolve import default

    group, _, name = path.partition(".")
    if group in ("backbone", "member") and root is EvalSettings:  # a member's settings, in EvalSettings.members
        root, path = {"backbone": BackboneSettings, "member": MemberSettings}[group], name
    return f" (default: {shown(default(root, path))})"


def protocol_default(name: str, dataset: str = "spair") -> str:
    """' (default: per protocol: default X, original Y)' for a setting each protocol fixes."""
    values = ", ".join(
        f"{p} {shown(protocol.values(dataset, training=True)[name])}" for p, protocol in PROTOCOLS.items()
    )
    return f" (default: per protocol: {values})"


def path(text: str) -> str:
    """A path flag's value with `~` and environment variables expanded (bash leaves `--flag=~/x` as is)."""
    return os.path.expandvars(os.path.expanduser(text))


def device(text: str) -> str:
    """auto, cpu, mps, cuda or cuda:N."""
    if text in ("auto", "cpu", "mps", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda, cuda:N or mps")


def image_size(text: str) -> tuple[int, ...]:
    """'518' -> (518,); '518x700' -> (518, 700) (height x width)."""
    try:
        sides = [int(s) for s in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}") from None
    if len(sides) not in (1, 2) or min(sides) <= 0:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}")
    return tuple(sides)


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


def points(text: str) -> tuple[tuple[float, float], ...]:
    """'x,y;x,y' -> ((x, y), ...) (match_pair.py --points)."""
    try:
        values = [tuple(float(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        values = []
    if not values or any(len(p) != 2 for p in values) or not all(math.isfinite(v) for p in values for v in p):
        raise argparse.ArgumentTypeError(f"must look like 'x,y;x,y' (pixels of the source image), got {text!r}")
    return tuple(values)


def benchmark(text: str) -> str:
    """A dataset, or DATASET:LAYOUT (ap10k:cross-species) for one of its pair lists."""
    name, _, layout = text.partition(":")
    if name not in DATASETS:
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(DATASETS)})")
    if layout and layout not in LAYOUTS.get(name, ()):
        has = ", ".join(LAYOUTS.get(name, ())) or "none"
        raise argparse.ArgumentTypeError(f"{text!r}: {name} has no layout {layout!r} (its layouts: {has})")
    return text


def add_data_args(
    p: argparse.ArgumentParser,
    *,
    split: str = "test",
    root: type = EvalSettings,
    kap: bool = True,
    several: bool = False,
) -> None:
    """The data flags; `several`: --dataset takes several benchmarks (DATASET[:LAYOUT] each) in one run."""
    g = p.add_argument_group("data")
    if several:
        g.add_argument(
            "--dataset",
            type=benchmark,
            nargs="+",
            metavar="DATASET[:LAYOUT]",
            help=f"benchmark(s) to evaluate on, of {', '.join(DATASETS)}; several: each its own run with its own "
            "threshold and split, and one table of them all (PCK at 0.05 0.1 0.15 unless --thresholds)"
            + default_text("data.dataset", root),
        )
        g.add_argument(
            "--data-root",
            type=path,
            nargs="+",
            metavar="PATH|DATASET=PATH",
            help="dataset folder (default: the folder download.py fills); for custom, the pairs file; with several "
            "datasets, DATASET=PATH for each one elsewhere",
        )
    else:
        g.add_argument(
            "--dataset", choices=DATASETS, help="benchmark to evaluate on" + default_text("data.dataset", root)
        )
        g.add_argument(
            "--data-root",
            type=path,
            help="dataset folder (default: the folder download.py fills); for custom, the pairs file",
        )
    g.add_argument("--split", help=f"trn | val | test (default: {split})")
    add_layout_arg(g)
    add_rescale_arg(g)
    g.add_argument("--limit", type=positive_int, help="evaluate only the first N pairs")
    g.add_argument("--thresholds", type=alpha, nargs="+", help="PCK alphas" + default_text("data.thresholds", root))
    norms = ", ".join(f"{dataset} {norm}" for dataset, norm in PROTOCOLS["default"].conventions.pck_norms.items())
    g.add_argument(
        "--pck-norm",
        choices=PCK_NORMS,
        help="PCK threshold length L: bbox = target bbox max side, image = target image max side, kpbox = target "
        f"keypoint box max side (default: per protocol and dataset; default protocol: {norms})",
    )
    if kap:
        g.add_argument(
            "--kap",
            action="store_true",
            help="also KAP (Jamais Vu's keypoint average precision): every keypoint visible in a source image scored "
            "on its similarity map, into per_keypoint_kap.csv; 1.4 to 2 times what matching and PCK take "
            "(PCK-dagger is always reported)",
        )


def add_layout_arg(g: argparse._ArgumentGroup) -> None:
    """--layout: the pair list of a dataset that has several (config/settings.py:LAYOUTS)."""
    lists = "; ".join(f"{dataset} {' | '.join(layouts)}" for dataset, layouts in LAYOUTS.items())
    g.add_argument(
        "--layout",
        choices=[layout for layouts in LAYOUTS.values() for layout in layouts],
        help=f"the dataset's pair list: {lists} (default: the first)",
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
        "--model",
        help="dinov2 | dinov2_reg | dinov3 | sam, or a sized name like dinov2_vitl14" + default_text("backbone.model"),
    )
    files.add_argument(
        "--weights",
        type=path,
        help="weights file of --model: official, timm or .safetensors (default: the official file under "
        "models/<family>/weights/); 'random' only for smoke tests",
    )
    g.add_argument("--layer", type=integer, help="take features from this block (0-based, negative from the end)")
    add_extraction_args(g)


def add_extraction_args(g: argparse._ArgumentGroup, root: type = EvalSettings) -> None:
    """How images become features: size, resize mode, batching, device, cache."""
    g.add_argument(
        "--image-size",
        type=image_size,
        help="N or HxW, rounded to the patch size (default: a checkpoint's trained size, else 518 DINOv2, 512 "
        "DINOv3 and SAM)",
    )
    g.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        help="squash = resize to the square ignoring aspect (original project); pad = keep aspect, pad "
        "(default: a checkpoint's trained mode, else squash)",
    )
    if root is EvalSettings:
        g.add_argument(
            "--batch-size",
            type=positive_int,
            help="images per backbone forward pass" + default_text("extract.batch_size"),
        )
    g.add_argument(
        "--num-workers", type=count, help="image decoding processes" + default_text("extract.num_workers", root)
    )
    g.add_argument("--device", type=device, help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    if root is EvalSettings:
        g.add_argument(
            "--cache-dir", type=path, help="disk cache of per-image features" + default_text("extract.cache_dir")
        )
        g.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
        g.add_argument(
            "--feature-memory",
            type=positive_float,
            metavar="GB",
            help="features held in memory; beyond, they are read from the disk cache one image at a time, so that "
            "a dataset of any size fits (default: 1 on the CPU, half the free memory of a GPU)",
        )


def add_matcher_args(p: argparse.ArgumentParser, *, grid: bool = False) -> None:
    g = p.add_argument_group("matching")
    g.add_argument(
        "--matcher",
        metavar="NAME",
        help="a matcher of matching_strategies.MATCHERS: argmax, wsoftargmax, ..."
        + (" (default: wsoftargmax)" if grid else default_text("match.matcher") + "; with --params: its matcher"),
    )
    if not grid:
        g.add_argument(
            "--window", type=odd_window, help="soft-argmax window K (odd), in patches" + default_text("match.window")
        )
        g.add_argument(
            "--temperature", type=temperature, help="soft-argmax temperature T" + default_text("match.temperature")
        )
        g.add_argument(
            "--params",
            type=path,
            metavar="JSON",
            help="take the matcher, K and T from a grid search's best_parameters.json (grid_search_hyperparams.py)",
        )
        g.add_argument(
            "--params-alpha", type=alpha, help="use the K and T that were best at this PCK alpha (default: 0.1)"
        )
    if not grid:
        g.add_argument(
            "--sigma",
            type=positive_float,
            help="the Gaussian matcher's width, in patches" + default_text("match.sigma"),
        )
    g.add_argument(
        "--descriptor",
        choices=DESCRIPTORS,
        help="source descriptor: the keypoint's patch, or bilinear between patch centres"
        + default_text("match.descriptor"),
    )
    g.add_argument(
        "--window-border",
        choices=WINDOW_BORDERS,
        help="soft-argmax window at the image border: shrink symmetrically or clip" + protocol_default("window_border"),
    )


def add_flip_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pose alignment")
    g.add_argument(
        "--flip-align",
        choices=FLIP_ALIGN_MODES,
        help="match the mirrored source too, and keep its predictions where its distance to the target is lower "
        "(GeoAware-SC's ADAPT_FLIP): by mutual nearest neighbours (mutual-nn), or within masks (mask, --flip-masks)"
        + default_text("flip_align"),
    )
    g.add_argument(
        "--flip-masks",
        type=path,
        metavar="DIR",
        help="--flip-align mask: the source images' masks, DIR/<category>/<image>_mask.png and _mask_flip.png (the "
        "layout GeoAware-SC's preprocess_mask_sam.py writes)",
    )


def add_output_args(
    p: argparse.ArgumentParser,
    *,
    save_vis: bool = True,
    seed: bool = True,
    baseline: bool = False,
    root: type = EvalSettings,
) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "--output-dir",
        type=path,
        help="a new timestamped folder is made inside" + default_text("output.output_dir", root),
    )
    if save_vis:
        g.add_argument(
            "--save-vis",
            type=count,
            metavar="N",
            help="draw the matches of the N best and N worst pairs into <run>/vis/",
        )
    if seed:
        g.add_argument("--seed", type=int, help="random seed" + default_text("output.seed", root))
    if baseline:
        g.add_argument(
            "--baseline",
            type=path,
            metavar="RUN",
            help="an evaluation's results folder to compare with: the summary and metrics.json give the difference "
            "(default: for a run that is not zero-shot, the newest zero-shot run of the same setting in --output-dir)",
        )
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_protocol_args(p: argparse.ArgumentParser, *, evaluation: bool = True, dataset: bool = True) -> None:
    """--protocol, and a flag for each convention it sets (given: overrides that part of it); `dataset`: also
    the conventions of the benchmarks' annotations (not for images of the user's own)."""
    g = p.add_argument_group(
        "protocol", "--protocol sets every convention below at once; a flag given overrides that part of it"
    )
    g.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        help="default: this toolkit's corrected conventions; original: the original project's, to reproduce its "
        "numbers; geoaware: GeoAware-SC's evaluation, the field's (default: default)",
    )
    g.add_argument("--resample", choices=RESAMPLE_METHODS, help="how images are resized" + protocol_default("resample"))
    g.add_argument(
        "--pad-fill",
        choices=PAD_FILLS,
        help="--resize pad: the ImageNet mean around the image, or black" + protocol_default("pad_fill"),
    )
    g.add_argument(
        "--final-norm",
        action=argparse.BooleanOptionalAction,
        help="DINO features through the final LayerNorm (--no-final-norm: the block's raw output)"
        + protocol_default("final_norm"),
    )
    g.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        help="a keypoint is correct when its distance is < alpha L (--strict) or <= alpha L"
        + protocol_default("strict"),
    )
    g.add_argument(
        "--coordinates",
        choices=COORDINATE_CONVENTIONS,
        help="pixel 0 at the pixel's centre, or at its edge; canvas: scaled onto the padded canvas in float32 as "
        "GeoAware-SC does" + protocol_default("coordinates"),
    )
    if dataset:
        g.add_argument(
            "--pf-shift",
            action=argparse.BooleanOptionalAction,
            help="shift PF-Pascal / PF-Willow 1-based coordinates by -1" + protocol_default("pf_shift"),
        )
        g.add_argument(
            "--clamp-keypoints",
            action=argparse.BooleanOptionalAction,
            help="move keypoints outside their image into it" + protocol_default("clamp_keypoints"),
        )
    g.add_argument(
        "--precision",
        choices=PRECISION_NAMES,
        help="autocast dtype of every backbone; auto = bf16 on CUDA, fp32 elsewhere (default: per protocol: default "
        "auto; original fp32 for DINO, fp16 for SAM; geoaware fp32)",
    )
    g.add_argument(
        "--build",
        choices=BUILDS,
        help="backbones as Meta's hub builds them, or as the original did" + protocol_default("build"),
    )
    if evaluation:
        g.add_argument(
            "--feature-dtype",
            choices=FEATURE_DTYPE_NAMES,
            help="features in memory and cache" + protocol_default("feature_dtype"),
        )


def evaluation_parser(description: str, checkpoint: CheckpointFlag = "none") -> argparse.ArgumentParser:
    p = parser(description)
    add_backbone_args(p, checkpoint)
    add_data_args(p, several=True)
    add_matcher_args(p)
    add_flip_args(p)
    add_protocol_args(p)
    add_output_args(p, baseline=True)
    return p
