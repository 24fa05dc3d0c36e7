"""Fine-tune a backbone for semantic correspondence (one engine; per-model presets in presets.py).

    python finetuning/finetune.py --model dinov3 --data-root SPair71k/SPair-71k
    python finetuning/finetune.py --model sam --trainable-blocks 6 --flip --jitter 0.2
    python finetuning/finetune.py --model dinov3 --protocol original --trainable-blocks 3 --logit-scale 15
    python finetuning/finetune.py --resume results/finetune/20260101-120000_dinov3_vitb16
    torchrun --nproc_per_node=4 finetuning/finetune.py --model dinov3 --batch-size 8   # 32 pairs a step

Writes results/finetune/<timestamp>_<model>/: best.pt (best validation PCK) and last.pt (the latest
step, with everything --resume needs), both holding the trained weights on top of the base weights
file (--self-contained: every weight); load them with `python evaluate.py --checkpoint .../best.pt`.
Also config.json, train_log.csv and train_curves.png.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli import (
    HelpFormatter,
    add_protocol_args,
    add_rescale_arg,
    alpha,
    count,
    device,
    distinct,
    image_size,
    non_negative_float,
    path,
    positive_float,
    positive_int,
    run_main,
)
from finetuning import FinetuneError
from finetuning.presets import PRESETS
from pairs import LOADERS
from settings import DECAY_GROUPS, PCK_NORMS, PROTOCOLS, RESIZE_MODES, SCHEDULES, SELECTIONS, TrainConfig

# Flags that may accompany --resume (they change neither the model nor the training) and the
# TrainConfig fields they set; the run keeps every other saved setting.
RESUME_FLAGS = {
    "--device": "device",
    "--num-workers": "num_workers",
    "--quiet": "progress",
    "--stop-after": "stop_after",
}
DEFAULTS = TrainConfig()


def protocol_default(name: str) -> str:
    """The help text's default of a protocol-set field: its value in each protocol."""
    values = [f"{p}: {getattr(protocol.training, name):g}" if isinstance(getattr(protocol.training, name), float)
              else f"{p}: {getattr(protocol.training, name)}" for p, protocol in PROTOCOLS.items()]  # fmt: skip
    return "default " + ", ".join(values)


def optional_split(text: str) -> str | None:
    return None if text.lower() == "none" else text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_model_args(p.add_argument_group("model"))
    add_data_args(p.add_argument_group("data"))
    add_optimisation_args(p.add_argument_group("optimisation (a flag given overrides the protocol's value)"))
    add_output_args(p.add_argument_group("validation, checkpoints and output"))
    add_protocol_args(p, evaluation=False)
    return p


def add_model_args(g: argparse._ArgumentGroup) -> None:
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
        default=DEFAULTS.soft_sigma,
        help="> 0: Gaussian soft targets with this std in patches instead of one-hot",
    )
    g.add_argument(
        "--train-neck",
        action=argparse.BooleanOptionalAction,
        help="SAM: train the neck with the last blocks (default protocol; the original left it frozen)",
    )


def add_data_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--dataset", choices=tuple(LOADERS), default=DEFAULTS.dataset, help="benchmark to train on")
    g.add_argument("--data-root", type=path, help="dataset folder (default: the folder download.py fills)")
    g.add_argument("--layout", choices=("large", "small"), default=DEFAULTS.layout, help="SPair-71k layout")
    add_rescale_arg(g)
    g.add_argument("--train-split", default=DEFAULTS.train_split, help="split to train on")
    g.add_argument("--val-split", type=optional_split, default=DEFAULTS.val_split, help="'none': no validation")
    g.add_argument(
        "--val-data",
        type=path,
        help="the validation pairs' root when it is not --data-root (a custom dataset's validation file)",
    )
    g.add_argument("--limit", type=positive_int, help="train on the first N pairs only")
    g.add_argument(
        "--val-limit",
        type=count,
        default=DEFAULTS.val_limit,
        help="validate on a fixed random subset of N pairs; 0: all",
    )
    g.add_argument("--image-size", type=image_size, help="N or HxW (default: 518 DINOv2, 512 DINOv3 and SAM)")
    g.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=DEFAULTS.resize,
        help="squash = resize ignoring aspect (original project); pad = keep aspect, pad",
    )
    g.add_argument("--flip", action="store_true", help="mirror both images of a pair together, half of the time")
    g.add_argument("--jitter", type=non_negative_float, default=DEFAULTS.jitter, help="photometric jitter strength")
    g.add_argument(
        "--cache-frozen",
        action="store_true",
        help="compute each image's frozen blocks once and reuse them (no --flip / --jitter)",
    )


def add_optimisation_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--epochs", type=positive_int, help=f"passes over the training pairs ({protocol_default('epochs')})")
    g.add_argument(
        "--batch-size", type=positive_int, help=f"pairs per step per process ({protocol_default('batch_size')})"
    )
    g.add_argument("--lr", type=positive_float, help=f"peak learning rate, AdamW ({protocol_default('lr')})")
    g.add_argument("--weight-decay", type=non_negative_float, help=f"AdamW ({protocol_default('weight_decay')})")
    g.add_argument(
        "--decay", choices=DECAY_GROUPS, help=f"which tensors weight decay applies to ({protocol_default('decay')})"
    )
    g.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule ({protocol_default('schedule')})")
    g.add_argument("--warmup-steps", type=count, help="warmup-cosine: linear warmup steps (default: 5%% of the steps)")
    g.add_argument(
        "--grad-clip", type=non_negative_float, help=f"max gradient norm, 0: off ({protocol_default('grad_clip')})"
    )
    g.add_argument("--seed", type=int, default=DEFAULTS.seed, help="data order, augmentation and validation subset")


def add_output_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--val-every", type=positive_int, default=DEFAULTS.val_every, help="steps between validations / checkpoints"
    )
    g.add_argument("--val-alpha", type=alpha, default=DEFAULTS.val_alpha, help="PCK alpha that picks best.pt")
    g.add_argument(
        "--select",
        choices=SELECTIONS,
        help=f"keep the best validation step as best.pt, or the last ({protocol_default('select')})",
    )
    g.add_argument("--thresholds", type=alpha, nargs="+", default=DEFAULTS.thresholds, help="PCK alphas to log")
    g.add_argument("--pck-norm", choices=PCK_NORMS, help="default: the protocol's for the dataset")
    g.add_argument(
        "--log-every", type=positive_int, default=DEFAULTS.log_every, help="steps between train_log.csv rows"
    )
    g.add_argument(
        "--stop-after", type=positive_int, help="stop after this global step (saving last.pt); --resume continues"
    )
    g.add_argument("--resume", type=path, help="continue the run in this folder exactly where its last.pt left off")
    g.add_argument("--self-contained", action="store_true", help="checkpoints hold every weight (for sharing)")
    g.add_argument("--num-workers", type=count, default=DEFAULTS.num_workers, help="image decoding processes")
    g.add_argument(
        "--device", type=device, default=DEFAULTS.device, help="auto | cpu | cuda (torchrun: one GPU per process)"
    )
    g.add_argument(
        "--output-dir", type=path, default=DEFAULTS.output_dir, help="a new <timestamp>_<model> folder is made inside"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def config(args: argparse.Namespace, default_model: str) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet")}
    values["model"] = args.model or (None if args.checkpoint else default_model)
    values["val_limit"] = args.val_limit or None
    values["thresholds"] = distinct(args.thresholds, "--thresholds")
    return TrainConfig.from_dict(values | {"progress": not args.quiet})


def given_flags(argv: list[str]) -> set[str]:
    return {a.split("=")[0] for a in argv if a.startswith("--")}


def resume_config(args: argparse.Namespace, argv: list[str], saved: TrainConfig) -> tuple[TrainConfig, dict]:
    """The `saved` config of the run to resume, with the flags given again that change nothing of the
    training (device, workers, progress, stop); any other flag is refused. Returns it and those flags."""
    extra = sorted(given_flags(argv) - set(RESUME_FLAGS) - {"--resume", "--model"})
    if extra:
        raise FinetuneError(
            f"--resume continues a run with its saved settings; {', '.join(extra)} cannot change them. "
            f"Allowed with --resume: {', '.join(sorted(RESUME_FLAGS))}."
        )
    values = {"device": args.device, "num_workers": args.num_workers}
    given = {RESUME_FLAGS[f]: values[RESUME_FLAGS[f]] for f in given_flags(argv) & {"--device", "--num-workers"}}
    invocation = {"stop_after": args.stop_after, "progress": not args.quiet}  # of this run of the script only
    return TrainConfig.from_dict(asdict(saved) | given | invocation), given


def main(argv: list[str] | None = None, script_model: str | None = None) -> Path:
    """finetune.py; the per-model scripts (finetune_dinov2.py, ...) pass their model as `script_model`."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    from finetuning.checkpoints import known_model, read_resume_folder  # torch loads after the arguments are parsed
    from finetuning.training import run

    if not args.resume:
        return run(config(args, script_model or DEFAULTS.model))
    saved = read_resume_folder(Path(args.resume), args.model)
    if script_model is not None and args.model is None and known_model(script_model) != saved.model:
        raise FinetuneError(
            f"{Path(sys.argv[0]).name} fine-tunes {known_model(script_model)}, but {args.resume} is a run of "
            f"{saved.model}: resume it with python finetuning/finetune.py --resume {args.resume}"
        )
    cfg, given = resume_config(args, argv, saved)
    return run(cfg, resume=args.resume, given=given)


if __name__ == "__main__":
    run_main(main)
