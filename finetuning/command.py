"""The fine-tuning command line, shared by finetuning/finetune.py and the per-model scripts: its flags, and
how they become TrainSettings (a new run) or the saved settings of a run to resume."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from finetuning import FinetuneError
from finetuning.presets import PRESETS
from semcorr.cli.flags import (
    DATASETS,
    add_layout_arg,
    add_protocol_args,
    add_rescale_arg,
    alpha,
    count,
    default_text,
    device,
    given,
    image_size,
    non_negative_float,
    parser,
    path,
    positive_float,
    positive_int,
    protocol_default,
)
from semcorr.config.settings import DECAY_GROUPS, PCK_NORMS, RESIZE_MODES, SCHEDULES, SELECTIONS, TrainSettings

# Flags that may accompany --resume (they change neither the model nor the training); the run keeps every
# other saved setting.
RESUME_FLAGS = ("--device", "--num-workers", "--quiet", "--stop-after")


def train_default(path: str) -> str:
    return default_text(path, TrainSettings)


def optional_split(text: str) -> str | None:
    return None if text.lower() == "none" else text


def arguments(description: str) -> argparse.ArgumentParser:
    p = parser(description)
    model_flags(p.add_argument_group("model"))
    data_flags(p.add_argument_group("data"))
    optimisation_flags(p.add_argument_group("optimisation (a flag given overrides the protocol's value)"))
    output_flags(p.add_argument_group("validation, checkpoints and output"))
    add_protocol_args(p, evaluation=False)
    return p


def model_flags(g: argparse._ArgumentGroup) -> None:
    presets = "; ".join(f"{k}: {v.trainable_blocks} blocks, scale {v.logit_scale:g}" for k, v in PRESETS.items())
    g.add_argument("--model", help="dinov2 | dinov3 | sam, or a sized name like dinov2_vitl14 (default: dinov2)")
    g.add_argument(
        "--weights", type=path, help="weights file (default: the official file under models/<family>/weights/)"
    )
    g.add_argument("--checkpoint", type=path, help="start from a fine-tuned checkpoint (e.g. an earlier best.pt)")
    g.add_argument(
        "--trainable-blocks", type=count, help=f"train the last N blocks (+ final norm / SAM neck); presets: {presets}"
    )
    g.add_argument(
        "--logit-scale",
        type=positive_float,
        help="logits = cosine similarity x scale (1 / temperature); default: preset",
    )
    g.add_argument(
        "--soft-sigma",
        type=non_negative_float,
        help="> 0: Gaussian soft targets with this std in patches instead of one-hot" + train_default("soft_sigma"),
    )
    g.add_argument(
        "--train-neck",
        action=argparse.BooleanOptionalAction,
        help="SAM: train the neck with the last blocks" + protocol_default("train_neck"),
    )


def data_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--dataset", choices=DATASETS, help="benchmark to train on" + train_default("data.dataset"))
    g.add_argument("--data-root", type=path, help="dataset folder (default: the folder download.py fills)")
    add_layout_arg(g)
    add_rescale_arg(g)
    g.add_argument("--train-split", help="split to train on" + train_default("data.split"))
    g.add_argument("--val-split", type=optional_split, help="'none': no validation" + train_default("val_split"))
    g.add_argument(
        "--val-data",
        type=path,
        help="the validation pairs' root when it is not --data-root (a custom dataset's validation file)",
    )
    g.add_argument("--limit", type=positive_int, help="train on the first N pairs only")
    g.add_argument(
        "--val-limit",
        type=count,
        help="validate on a fixed random subset of N pairs; 0: all" + train_default("val_limit"),
    )
    g.add_argument(
        "--image-size",
        type=image_size,
        help="N or HxW (default: a checkpoint's size, else 518 DINOv2, 512 DINOv3 and SAM)",
    )
    g.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        help="squash = resize ignoring aspect (original project); pad = keep aspect, pad (default: squash)",
    )
    g.add_argument("--flip", action="store_true", help="mirror both images of a pair together, half of the time")
    g.add_argument(
        "--jitter", type=non_negative_float, help="photometric jitter strength" + train_default("augment.jitter")
    )
    g.add_argument(
        "--cache-frozen",
        action="store_true",
        help="compute each image's frozen blocks once and reuse them (no --flip / --jitter)",
    )


def optimisation_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--epochs", type=positive_int, help="passes over the training pairs" + protocol_default("epochs"))
    g.add_argument(
        "--batch-size", type=positive_int, help="pairs per step per process" + protocol_default("batch_size")
    )
    g.add_argument("--lr", type=positive_float, help="peak learning rate, AdamW" + protocol_default("lr"))
    g.add_argument("--weight-decay", type=non_negative_float, help="AdamW" + protocol_default("weight_decay"))
    g.add_argument(
        "--decay", choices=DECAY_GROUPS, help="which tensors weight decay applies to" + protocol_default("decay")
    )
    g.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule" + protocol_default("schedule"))
    g.add_argument(
        "--warmup-steps",
        type=count,
        help="warmup-cosine: linear warmup steps" + protocol_default("warmup_steps") + "; None: 5%% of the steps",
    )
    g.add_argument(
        "--grad-clip", type=non_negative_float, help="max gradient norm, 0: off" + protocol_default("grad_clip")
    )
    g.add_argument(
        "--seed", type=int, help="data order, augmentation and validation subset" + train_default("output.seed")
    )


def output_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--val-every", type=positive_int, help="steps between validations / checkpoints" + train_default("val_every")
    )
    g.add_argument("--val-alpha", type=alpha, help="PCK alpha that picks best.pt" + train_default("val_alpha"))
    g.add_argument(
        "--select",
        choices=SELECTIONS,
        help="keep the best validation step as best.pt, or the last" + protocol_default("select"),
    )
    g.add_argument("--thresholds", type=alpha, nargs="+", help="PCK alphas to log" + train_default("data.thresholds"))
    g.add_argument("--pck-norm", choices=PCK_NORMS, help="default: the protocol's for the dataset")
    g.add_argument(
        "--log-every", type=positive_int, help="steps between train_log.csv rows" + train_default("log_every")
    )
    g.add_argument(
        "--stop-after", type=positive_int, help="stop after this global step (saving last.pt); --resume continues"
    )
    g.add_argument("--resume", type=path, help="continue the run in this folder exactly where its last.pt left off")
    g.add_argument("--self-contained", action="store_true", help="checkpoints hold every weight (for sharing)")
    g.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="write no TensorBoard event files (default: loss, learning rate, validation PCK and match pictures in "
        "the run folder; tensorboard --logdir <output dir>)",
    )
    g.add_argument("--num-workers", type=count, help="image decoding processes" + train_default("extract.num_workers"))
    g.add_argument("--device", type=device, help="auto | cpu | cuda (torchrun: one GPU per process) (default: auto)")
    g.add_argument(
        "--output-dir",
        type=path,
        help="a new <timestamp>_finetune_<model>_... folder is made inside" + train_default("output.output_dir"),
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def resume_settings(flags: dict, argv: list[str], saved: TrainSettings) -> tuple[TrainSettings, dict]:
    """The `saved` settings of the run to resume, with the flags given again that change nothing of the
    training (device, workers, progress, stop); any other flag is refused. Returns them and those flags."""
    from semcorr.cli.resolve import concrete_device

    extra = sorted({a.split("=")[0] for a in argv if a.startswith("--")} - set(RESUME_FLAGS) - {"--resume", "--model"})
    if extra:
        raise FinetuneError(
            f"--resume continues a run with its saved settings; {', '.join(extra)} cannot change them. "
            f"Allowed with --resume: {', '.join(RESUME_FLAGS)}."
        )
    again = {name: flags[name] for name in ("device", "num_workers") if name in flags}
    settings = replace(
        saved,
        backbone=replace(saved.backbone, device=concrete_device(flags.get("device", saved.backbone.device))),
        extract=replace(saved.extract, num_workers=flags.get("num_workers", saved.extract.num_workers)),
        output=replace(saved.output, progress=not flags.get("quiet", False)),
        stop_after=flags.get("stop_after"),  # of this invocation only
    )
    return settings, again


def main(argv: list[str] | None = None, script_model: str | None = None) -> Path:
    """finetune.py; the per-model scripts (finetune_dinov2.py, ...) pass their model as `script_model`."""
    argv = sys.argv[1:] if argv is None else argv
    flags = given(arguments(DESCRIPTION).parse_args(argv))
    from finetuning.checkpoints import known_model, read_resume_folder  # torch loads after the arguments are parsed
    from finetuning.training import run
    from semcorr.cli.resolve import resolve

    if "resume" not in flags:
        if script_model is not None and "checkpoint" not in flags:
            flags = {"model": script_model, **flags}
        if "val_limit" in flags:
            flags["val_limit"] = flags["val_limit"] or None
        return run(resolve("finetune", flags))
    resume = Path(flags["resume"])
    saved = read_resume_folder(resume, flags.get("model"))
    if script_model is not None and "model" not in flags and known_model(script_model) != saved.backbone.model:
        raise FinetuneError(
            f"{Path(sys.argv[0]).name} fine-tunes {known_model(script_model)}, but {resume} is a run of "
            f"{saved.backbone.model}: resume it with python finetuning/finetune.py --resume {resume}"
        )
    settings, again = resume_settings(flags, argv, saved)
    return run(settings, resume=resume, given=again)


DESCRIPTION = "Fine-tune a backbone for semantic correspondence (one engine; per-model presets in presets.py)."
