"""Fine-tune a backbone for semantic correspondence (one engine; per-model presets in presets.py).

    python finetuning/finetune.py --model dinov3 --data-root SPair71k/SPair-71k
    python finetuning/finetune.py --model sam --trainable-blocks 6 --flip --jitter 0.2
    python finetuning/finetune.py --resume results/finetune/20260101-120000_dinov3_vitb16
    torchrun --nproc_per_node=4 finetuning/finetune.py --model dinov3 --batch-size 8   # 32 pairs a step

Writes results/finetune/<timestamp>_<model>/: best.pt and last.pt (load with
`python evaluate.py --checkpoint .../best.pt`), training_state.pt (for --resume), config.json,
train_log.csv and train_curves.png.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli import HelpFormatter, image_size, run_main
from finetuning import FinetuneError
from finetuning.presets import PRESETS
from pairs import LOADERS
from settings import PCK_NORMS, RESIZE_MODES, TrainConfig

# Flags that may accompany --resume: they change neither the model nor the training.
RESUME_FLAGS = {"--resume", "--model", "--device", "--num-workers", "--quiet", "--stop-after"}
DEFAULTS = TrainConfig()


def optional_split(text: str) -> str | None:
    return None if text.lower() == "none" else text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_model_args(p.add_argument_group("model"))
    add_data_args(p.add_argument_group("data"))
    add_optimisation_args(p.add_argument_group("optimisation"))
    add_output_args(p.add_argument_group("validation, checkpoints and output"))
    return p


def add_model_args(g: argparse._ArgumentGroup) -> None:
    presets = "; ".join(f"{k}: {v.trainable_blocks} blocks, scale {v.logit_scale:g}" for k, v in PRESETS.items())
    g.add_argument("--model", help="dinov2 | dinov3 | sam, or a sized name like dinov2_vitl14 (default: dinov2)")
    g.add_argument("--weights", help="weights file (default: the official file under models/<family>/weights/)")
    g.add_argument("--checkpoint", help="start from a checkpoint of this project (e.g. an earlier best.pt)")
    g.add_argument(
        "--precision",
        default=DEFAULTS.precision,
        choices=("auto", "fp32", "bf16", "fp16"),
        help="autocast dtype; auto = bf16 on CUDA, fp32 on CPU",
    )
    g.add_argument(
        "--trainable-blocks", type=int, help=f"train the last N blocks (+ final norm / SAM neck); presets: {presets}"
    )
    g.add_argument(
        "--logit-scale", type=float, help="logits = cosine similarity x scale (1 / temperature); default: preset"
    )
    g.add_argument(
        "--soft-sigma",
        type=float,
        default=DEFAULTS.soft_sigma,
        help="> 0: Gaussian soft targets with this std in patches instead of one-hot",
    )


def add_data_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--dataset", choices=tuple(LOADERS), default=DEFAULTS.dataset, help="benchmark to train on")
    g.add_argument("--data-root", help="dataset folder (default: the folder download.py fills)")
    g.add_argument("--layout", choices=("large", "small"), default=DEFAULTS.layout, help="SPair-71k layout")
    g.add_argument("--train-split", default=DEFAULTS.train_split, help="split to train on")
    g.add_argument("--val-split", type=optional_split, default=DEFAULTS.val_split, help="'none': no validation")
    g.add_argument("--limit", type=int, help="train on the first N pairs only")
    g.add_argument(
        "--val-limit", type=int, default=DEFAULTS.val_limit, help="validate on a fixed random subset of N pairs; 0: all"
    )
    g.add_argument("--image-size", type=image_size, help="N or HxW (default: 518 DINOv2, 512 DINOv3 and SAM)")
    g.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=DEFAULTS.resize,
        help="squash = resize ignoring aspect (original project); pad = keep aspect, pad",
    )
    g.add_argument("--flip", action="store_true", help="mirror both images of a pair together, half of the time")
    g.add_argument("--jitter", type=float, default=DEFAULTS.jitter, help="photometric jitter strength (e.g. 0.2)")
    g.add_argument(
        "--cache-frozen",
        action="store_true",
        help="compute each image's frozen blocks once and reuse them (no --flip / --jitter)",
    )


def add_optimisation_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="passes over the training pairs")
    g.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="pairs per step per process")
    g.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="AdamW, on weight matrices only")
    g.add_argument("--warmup-steps", type=int, help="linear warmup, then cosine decay (default: 5%% of the steps)")
    g.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip, help="max gradient norm; 0: off")
    g.add_argument("--seed", type=int, default=DEFAULTS.seed, help="data order, augmentation and validation subset")


def add_output_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--val-every", type=int, default=DEFAULTS.val_every, help="steps between validations / checkpoints")
    g.add_argument("--val-alpha", type=float, default=DEFAULTS.val_alpha, help="PCK alpha that picks best.pt")
    g.add_argument("--thresholds", type=float, nargs="+", default=DEFAULTS.thresholds, help="PCK alphas to log")
    g.add_argument("--pck-norm", choices=PCK_NORMS, help="default: the dataset's standard")
    g.add_argument("--log-every", type=int, default=DEFAULTS.log_every, help="steps between train_log.csv rows")
    g.add_argument("--stop-after", type=int, help="stop after this global step (saving last.pt); --resume continues")
    g.add_argument("--resume", help="continue the run in this folder exactly where its last.pt left off")
    g.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers, help="image decoding processes")
    g.add_argument("--device", default=DEFAULTS.device, help="auto | cpu | cuda (torchrun: one GPU per process)")
    g.add_argument("--output-dir", default=DEFAULTS.output_dir, help="a new <timestamp>_<model> folder is made inside")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def config(args: argparse.Namespace) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet")}
    values["model"] = args.model or (None if args.checkpoint else DEFAULTS.model)
    values["val_limit"] = args.val_limit or None
    return TrainConfig.from_dict(values | {"progress": not args.quiet})


def resume_config(args: argparse.Namespace, argv: list[str], saved: TrainConfig) -> TrainConfig:
    """The `saved` config of the run to resume; only flags that change nothing may be given with it."""
    extra = sorted({a.split("=")[0] for a in argv if a.startswith("--")} - RESUME_FLAGS)
    if extra:
        raise FinetuneError(
            f"--resume continues a run with its saved settings; {', '.join(extra)} cannot change them. "
            f"Allowed with --resume: {', '.join(sorted(RESUME_FLAGS - {'--resume'}))}."
        )
    overrides = {"device": args.device, "num_workers": args.num_workers, "stop_after": args.stop_after}
    return TrainConfig.from_dict(asdict(saved) | overrides | {"progress": not args.quiet})


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    from finetuning.checkpoints import read_resume_folder  # torch loads after the arguments are parsed
    from finetuning.training import run

    if args.resume:
        cfg = resume_config(args, argv, read_resume_folder(Path(args.resume), args.model))
    else:
        cfg = config(args)
    return run(cfg, resume=args.resume)


if __name__ == "__main__":
    run_main(main)
