"""The fine-tuning engine: setup, then a loop that reads top to bottom (validation, checkpoints, resume, DDP).

The backbone is split in two (finetuning/model.py): a frozen trunk (patch embedding and the first
blocks, run without gradients) and a trainable head (the last N blocks and the final norm, or SAM's
neck). For each source keypoint the logits are scale x cosine similarity of its descriptor to every
target patch; the loss (finetuning/loss.py) is the cross-entropy against the patch holding the
ground-truth target keypoint (or a Gaussian around it), averaged over each pair's keypoints, then
over the pairs of the batch. How it optimises (batch, schedule, weight decay, clipping, selection)
is its protocol's (settings.PROTOCOLS), each part overridable.

Under `torchrun --nproc_per_node=G` the same code runs DistributedDataParallel: each process
takes its share of every global batch (G x batch size pairs), gradients are averaged, and only
rank 0 validates and writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import results
from evaluation import build_member, evaluable, predict_keypoints, resolve, score
from finetuning import FinetuneError
from finetuning.checkpoints import (
    BEST,
    LAST,
    TrainLog,
    checkpoint_error,
    known_model,
    read_training_state,
    record_resume,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from finetuning.data import TrainingPairs, checked, collate, epoch_batches
from finetuning.distributed import Process, all_mean, barrier, setup_distributed
from finetuning.loss import correspondence_loss
from finetuning.model import FrozenCache, SplitBackbone, learning_rate_factor, make_optimizer
from finetuning.presets import preset_for
from geometry import Preprocess
from helper_functions import backbone_preprocess
from models import Backbone, base_record, create_backbone, load_finetuned, weights_origin
from pairs import PairRecord, PairSet, load_pairs
from settings import TRAIN_CONVENTIONS, EvalConfig, MatchConfig, TrainConfig, get_protocol, resolve_protocol

# --- setting up -----------------------------------------------------------------------------------


def resolve_settings(cfg: TrainConfig, backbone: Backbone) -> TrainConfig:
    """The config with the model's preset filled in, checked against the backbone and itself."""
    preset = preset_for(backbone.name)
    cfg = TrainConfig.from_dict(asdict(cfg))
    cfg.model = backbone.name
    if cfg.trainable_blocks is None:
        cfg.trainable_blocks = preset.trainable_blocks
    if cfg.logit_scale is None:
        cfg.logit_scale = preset.logit_scale
    if cfg.cache_frozen and cfg.augment.active:
        raise FinetuneError(
            "--cache-frozen keeps each image's frozen-block output, which flipping or photometric jitter "
            "would change: drop --flip / --jitter, or drop --cache-frozen."
        )
    for name in ("epochs", "batch_size", "val_every", "log_every"):
        if getattr(cfg, name) < 1:
            raise FinetuneError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.val_alpha not in cfg.thresholds:
        cfg.thresholds = sorted([*cfg.thresholds, cfg.val_alpha])
    return cfg


def build_backbone(cfg: TrainConfig, device: str) -> Backbone:
    """The starting model: a fine-tuned checkpoint, or a named model with its weights, built and run as
    the (resolved) config's protocol says."""
    model = known_model(cfg.model) if cfg.model is not None else None
    return create_backbone(
        model,
        weights=cfg.weights,
        checkpoint=cfg.checkpoint,
        device=device,
        precision=cfg.precision or get_protocol(cfg.protocol).conventions.precision,
        build=cfg.build,
    )


def training_pairs(pairset: PairSet) -> list[PairRecord]:
    pairs, _ = evaluable(pairset)
    if not pairs:
        raise FinetuneError(
            f"{pairset.dataset} split {pairset.split!r} at {pairset.root} has no pairs with keypoints "
            f"({pairset.summary()}); training needs keypoint annotations: choose another split or dataset."
        )
    return pairs


def val_subset(pairset: PairSet, limit: int | None, seed: int) -> PairSet:
    """A fixed random subset of `limit` evaluable pairs (file order is sorted by category: no head)."""
    pairs, _ = evaluable(pairset)
    if limit is not None and limit < len(pairs):
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), limit, replace=False))
        pairs = [pairs[i] for i in keep]
    if not pairs:
        raise FinetuneError(
            f"validation split {pairset.split!r} of {pairset.dataset} has no pairs with keypoints; "
            "choose another --val-split, or --val-split none"
        )
    return PairSet(pairset.dataset, pairset.split, pairset.root, pairs)


def load_data(cfg: TrainConfig) -> tuple[PairSet, PairSet | None]:
    """The training pairs and the validation pairs the (resolved) config asks for. A custom pairs file
    has no splits: its validation pairs come from --val-data, or there is no validation."""
    keypoints = {
        "shift_one_based": cfg.pf_shift,
        "clamp": cfg.clamp_keypoints,
        "rescale_annotations": cfg.rescale_annotations,
    }
    train_set = load_pairs(
        cfg.dataset, root=cfg.data_root, split=cfg.train_split, layout=cfg.layout, limit=cfg.limit, **keypoints
    )
    if cfg.dataset == "custom" and cfg.val_data is None:
        return train_set, None
    root = cfg.val_data if cfg.val_data is not None else cfg.data_root
    if cfg.val_split is None:
        return train_set, None
    return train_set, load_pairs(cfg.dataset, root=root, split=cfg.val_split, layout=cfg.layout, **keypoints)


@dataclass
class Training:
    """Everything the loop works on, made once by `setup`; step, epoch and the best so far move as it runs."""

    cfg: TrainConfig
    protocol: dict  # the protocol record of config.json
    process: Process
    backbone: Backbone
    base: dict | None  # the base weights file checkpoints are written on top of (None: self-contained)
    split: SplitBackbone  # the model's frozen trunk and trainable head
    model: nn.Module  # the head as trained: `split` itself, or wrapped in DistributedDataParallel
    prep: Preprocess
    pairs: list[PairRecord]
    val_set: PairSet | None
    dataset: TrainingPairs
    cache: FrozenCache | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None  # fp16 autocast: gradients are scaled
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    run_dir: Path | None = None  # rank 0 only
    log: TrainLog | None = None  # rank 0 only
    step: int = 0
    epoch: int = 0
    best: float = -math.inf
    best_step: int | None = None
    last_saved: int | None = None  # the step of the last.pt on disk

    @property
    def val_key(self) -> str:
        return f"val_pck@{self.cfg.val_alpha:g}"

    @property
    def stop(self) -> int:
        """The last step of this invocation (--stop-after ends early without changing the schedule)."""
        return min(self.cfg.stop_after if self.cfg.stop_after is not None else self.total_steps, self.total_steps)

    @property
    def trained(self) -> set[str]:
        """The state-dict keys that training changes (what a checkpoint holds on top of its base)."""
        return {name for name, p in self.backbone.named_parameters() if p.requires_grad}


def grad_scaler(backbone: Backbone) -> torch.amp.GradScaler | None:
    """The gradient scaler that fp16 autocast needs (None under bf16 or fp32)."""
    return torch.amp.GradScaler(backbone.device.type) if backbone.autocast_dtype == torch.float16 else None


def starting_model(cfg: TrainConfig, process: Process, resume: Path | None) -> tuple[Backbone, dict | None]:
    """The model to train and, when resuming, the saved training state that goes with it."""
    if resume is None:
        return build_backbone(cfg, process.device), None
    precision = cfg.precision or get_protocol(cfg.protocol).conventions.precision
    try:
        backbone = load_finetuned(resume / LAST, device=process.device, precision=precision, build=cfg.build)
    except (ValueError, OSError, RuntimeError) as err:
        raise checkpoint_error(resume / LAST, err) from None
    return backbone, read_training_state(resume, backbone)


def setup(cfg: TrainConfig, train_set: PairSet, val_set: PairSet | None, resume: Path | None) -> Training:
    """The model, data, optimiser and schedule of a run (restored to the saved step when resuming)."""
    cfg, protocol = resolve_protocol(cfg, TRAIN_CONVENTIONS)
    process = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    backbone, saved = starting_model(cfg, process, resume)
    cfg = resolve_settings(cfg, backbone)
    split = SplitBackbone(backbone, cfg.trainable_blocks, train_neck=cfg.train_neck)
    prep = backbone_preprocess(backbone, cfg.image_size, cfg.resize, resample=cfg.resample, coordinates=cfg.coordinates)
    pairs = training_pairs(train_set)
    batches = epoch_batches(len(pairs), cfg.batch_size, 0, cfg.seed, rank=process.rank, world=process.world)
    total = cfg.epochs * len(batches)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.05 * total))
    optimizer = make_optimizer(split, cfg.lr, cfg.weight_decay, decay=cfg.decay)
    cache = None
    if cfg.cache_frozen:
        images = PairSet(train_set.dataset, train_set.split, train_set.root, pairs).unique_images()
        progress = cfg.progress and process.main
        cache = FrozenCache(
            split, images, prep, batch_size=2 * cfg.batch_size, num_workers=cfg.num_workers, progress=progress
        )
    training = Training(
        cfg=cfg,
        protocol=protocol,
        process=process,
        backbone=backbone,
        base=backbone.base if resume is not None else base_record(backbone),
        split=split,
        model=DistributedDataParallel(split, broadcast_buffers=False) if process.world > 1 else split,
        prep=prep,
        pairs=pairs,
        val_set=val_subset(val_set, cfg.val_limit, cfg.seed) if val_set is not None else None,
        dataset=TrainingPairs(pairs, prep, cfg.augment, cfg.seed, load_images=cache is None),
        cache=cache,
        optimizer=optimizer,
        schedule=torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(cfg.schedule, total, warmup)),
        scaler=grad_scaler(backbone),
        steps_per_epoch=len(batches),
        total_steps=total,
        warmup_steps=warmup,
        run_dir=resume,
    )
    if saved is not None:
        restore_training_state(saved, training.optimizer, training.schedule, training.scaler)
        backbone.training_state = None  # restored: the optimiser holds it now
        training.step, training.epoch, training.best = saved["step"], saved.get("epoch", 0), saved["best"]
        training.best_step, training.last_saved = saved.get("best_step"), saved["step"]
    if process.main:
        open_run_folder(training, resumed=saved is not None)
    return training


def open_run_folder(training: Training, resumed: bool) -> None:
    """Rank 0: the run folder (a new one, or the resumed one), its config.json, its log, the first lines."""
    cfg = training.cfg
    if resumed:
        training.log = TrainLog.resume(training.run_dir, training.val_key, training.step)
        print(f"resuming {training.run_dir} at step {training.step}/{training.total_steps}")
        return
    training.run_dir = results.new_run_dir(cfg.output_dir, [training.backbone.name])
    params = list(training.split.parameters())
    resolved = {
        "weights": str(training.backbone.weights_path),
        "weights_origin": weights_origin(training.backbone),
        "base": training.base,
        "image_size": [training.prep.height, training.prep.width],
        "grid": list(training.prep.grid),
        "train_pairs": len(training.pairs),
        "val_pairs": len(training.val_set.pairs) if training.val_set else 0,
        "processes": training.process.world,
        "global_batch": cfg.batch_size * training.process.world,
        "steps": training.total_steps,
        "warmup_steps": training.warmup_steps if cfg.schedule == "warmup-cosine" else 0,
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "frozen_parameters": sum(p.numel() for p in params if not p.requires_grad),
    }
    environment = results.environment(training.backbone.device)
    config = {"args": asdict(cfg), "protocol": training.protocol, "resolved": resolved, "environment": environment}
    results.write_config(training.run_dir, "finetune", config)
    training.log = TrainLog(training.run_dir, training.val_key)
    for line in first_lines(training):
        print(line)


def first_lines(training: Training) -> list[str]:
    """What a run says when it starts: the model, the data, the schedule, where it writes, and warnings."""
    cfg = training.cfg
    neck = "" if cfg.train_neck or training.backbone.spec.family != "sam" else " (neck frozen)"
    lines = [
        f"fine-tuning {training.backbone.name} ({weights_origin(training.backbone)} weights, protocol {cfg.protocol}): "
        f"last {cfg.trainable_blocks} blocks{neck}, logit scale {cfg.logit_scale:g}",
        f"{len(training.pairs)} training pairs, {training.total_steps} steps of {cfg.batch_size * training.process.world} "
        f"pairs, lr {cfg.lr:g} ({cfg.schedule}), validation on "
        + (f"{len(training.val_set.pairs)} pairs every {cfg.val_every} steps" if training.val_set else "nothing"),
        f"run folder {training.run_dir}",
    ]
    if training.val_set is None:
        lines.append("no validation: best.pt is not selected; last.pt is the model")
    elif cfg.select == "last":
        lines.append(
            "selection off (--select last, the original protocol): last.pt is the model; best.pt is not written"
        )
    if weights_origin(training.backbone) == "random":
        lines.append(
            "RANDOM weights: LayerScale starts near 1e-5, so the features barely change and the validation curve "
            "stays flat; use this only as a smoke test"
        )
    if training.base is None:
        lines.append("checkpoints hold every weight (no base weights file to build on)")
    return lines


# --- validation and checkpoints -------------------------------------------------------------------


def validate(backbone: Backbone, val_set: PairSet, cfg: TrainConfig) -> dict[str, float]:
    """PCK (per image and per keypoint, argmax) of the model being trained, by the evaluation engine."""
    eval_cfg, _ = resolve(
        EvalConfig(
            protocol=cfg.protocol, dataset=val_set.dataset, image_size=cfg.image_size, resize=cfg.resize,
            resample=cfg.resample, coordinates=cfg.coordinates, pck_norm=cfg.pck_norm, thresholds=cfg.thresholds,
            cache_dir=None, batch_size=2 * cfg.batch_size, num_workers=cfg.num_workers, progress=False,
        )
    )  # fmt: skip
    member, _ = build_member(eval_cfg, backbone, val_set)
    pred = predict_keypoints(val_set.pairs, [member], MatchConfig(), progress=False)
    _, summary = score(val_set.pairs, pred, cfg.thresholds, eval_cfg.pck_norm)
    out = {}
    for alpha in cfg.thresholds:
        out[f"val_pck@{alpha:g}"] = summary[f"pck@{alpha:g}"]["per_image"]
        out[f"val_pck@{alpha:g}_kpt"] = summary[f"pck@{alpha:g}"]["per_keypoint"]
    return out


def checkpoint(training: Training, validate_now: bool, bar: tqdm) -> None:
    """Rank 0: validate (when asked; one printed line), keep best.pt if it improved (--select best),
    write the log, then last.pt with the training state (a run killed in between resumes from the
    previous last.pt and drops the log's later rows), then the curves."""
    if training.process.main:
        cfg, val = training.cfg, {}
        progress = {"step": training.step, "epoch": training.epoch}
        files = {"base": training.base, "trained": training.trained, "self_contained": cfg.self_contained}
        if validate_now and training.val_set is not None:
            val = validate(training.backbone, training.val_set, cfg)
            training.log.add({"step": training.step, "epoch": training.epoch, **val})
            improved = val[training.val_key] > training.best
            if improved:
                training.best, training.best_step = val[training.val_key], training.step
                if cfg.select == "best":
                    save_checkpoint(
                        training.run_dir / BEST, training.backbone, cfg, progress=progress | {"val": val}, **files
                    )
            note = f"new best -> {BEST}" if improved and cfg.select == "best" else f"best {training.best:.2f}"
            bar.write(
                f"step {training.step}/{training.total_steps}: {training.val_key} {val[training.val_key]:.2f} ({note})"
            )
        state = training_state(
            step=training.step, epoch=training.epoch, best=training.best, best_step=training.best_step,
            optimizer=training.optimizer, schedule=training.schedule, scaler=training.scaler,
        )  # fmt: skip
        progress |= {"val": val}
        training.log.write()
        save_checkpoint(training.run_dir / LAST, training.backbone, cfg, progress=progress, training=state, **files)
        training.last_saved = training.step
        training.log.plot(training.best_step)
    barrier(training.process)


# --- the loop -------------------------------------------------------------------------------------


def run(cfg: TrainConfig, resume: str | Path | None = None, given: dict | None = None) -> Path:
    """Load the data the config names and train (continuing the run folder `resume`, whose config
    `read_resume_folder` gives, `given` the settings given again on its command line)."""
    if cfg.model is not None:
        known_model(cfg.model)  # before reading any data
    if resume is None:
        results.check_output_dir(cfg.output_dir)
    resolved, _ = resolve_protocol(cfg, TRAIN_CONVENTIONS)
    train_set, val_set = load_data(resolved)
    if resume is not None:
        record_resume(Path(resume), given or {})
    return train(cfg, train_set, val_set, resume)


@dataclass
class Interval:
    """Sums over the steps since the last log row (tensors stay on the device until logged)."""

    loss: Tensor | float = 0.0
    grad_norm: Tensor | float = 0.0
    steps: int = 0
    finite: Tensor | bool = True  # whether every loss and gradient of the interval was finite
    t0: float = field(default_factory=time.perf_counter)


def train(cfg: TrainConfig, train_set: PairSet, val_set: PairSet | None, resume: str | Path | None = None) -> Path:
    """Fine-tune on `train_set`, validating on `val_set`; returns the run folder (rank 0's)."""
    training = setup(cfg, train_set, val_set, Path(resume) if resume is not None else None)
    cfg, main = training.cfg, training.process.main
    if training.step == 0 and training.val_set is not None and main:  # the starting point of the PCK curve
        training.log.add({"step": 0, "epoch": 0, **validate(training.backbone, training.val_set, cfg)})
        training.log.write()
    barrier(training.process)
    bar = tqdm(total=training.total_steps, initial=training.step, desc="fine-tuning", unit="step",
               disable=not (cfg.progress and main))  # fmt: skip
    try:
        loop(training, bar)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(interrupted_message(training)) from None
    finally:
        bar.close()
    if main:
        for line in last_lines(training):
            print(line)
    return training.run_dir


def loop(training: Training, bar: tqdm) -> None:
    """The steps from where the run stands to its stop."""
    cfg = training.cfg
    interval = Interval()
    while training.step < training.stop:
        training.epoch, done = divmod(training.step, training.steps_per_epoch)
        batches = epoch_batches(
            len(training.pairs), cfg.batch_size, training.epoch, cfg.seed, rank=training.process.rank,
            world=training.process.world,
        )  # fmt: skip
        loader = DataLoader(
            training.dataset,
            batch_sampler=batches[done:],  # a resumed epoch skips the batches already trained on
            collate_fn=collate,
            num_workers=cfg.num_workers,
            pin_memory=training.backbone.device.type == "cuda",
        )
        for batch in loader:
            # forward, backward, update; then the learning rate of the next step (the protocol's schedule)
            loss, grad_norm = train_step(training, checked(batch))
            training.schedule.step()
            training.step += 1
            interval.loss, interval.grad_norm = interval.loss + loss, interval.grad_norm + grad_norm
            interval.finite = interval.finite & torch.isfinite(loss) & torch.isfinite(grad_norm)
            interval.steps += 1
            end_of_epoch = training.step % training.steps_per_epoch == 0
            checkpoint_now = training.step % cfg.val_every == 0 or end_of_epoch or training.step == training.stop

            # logging: the mean over the interval, over all processes; a non-finite loss stops the run
            if training.step % cfg.log_every == 0 or checkpoint_now:
                log_interval(training, interval, bar)
                interval = Interval()
            bar.update(1)

            # validation and checkpoint (their time does not count in pairs/s)
            if checkpoint_now:
                paused = time.perf_counter()
                checkpoint(training, training.step % cfg.val_every == 0 or end_of_epoch, bar)
                interval.t0 += time.perf_counter() - paused

            # termination: --stop-after ends this invocation mid-schedule; --resume continues it
            if training.step >= training.stop:
                break


def log_interval(training: Training, interval: Interval, bar: tqdm) -> None:
    """One train_log.csv row: mean loss and gradient norm since the last row, learning rate, pairs/s.
    A non-finite loss or gradient in the interval ends the run, keeping the last finite checkpoint."""
    n = interval.steps
    means = [float(bool(interval.finite)), float(interval.loss) / n, float(interval.grad_norm) / n]
    finite, mean_loss, mean_norm = all_mean(means, training.process)
    if finite != 1.0:  # some process saw a non-finite loss or gradient
        raise FinetuneError(diverged_message(training, training.step - n + 1))
    lr = training.schedule.get_last_lr()[0]
    if training.process.main:
        pairs_per_s = n * training.cfg.batch_size * training.process.world / (time.perf_counter() - interval.t0)
        row = {"step": training.step, "epoch": training.epoch, "loss": mean_loss, "lr": lr, "grad_norm": mean_norm}
        training.log.add(row | {"pairs_per_s": pairs_per_s})
        bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}")


def train_step(training: Training, batch: dict) -> tuple[Tensor, Tensor]:
    """One optimisation step on one batch; returns (loss, gradient norm before clipping) as
    tensors on the device (reading them waits for the GPU: done only when logging)."""
    device = training.backbone.device
    if training.cache is not None:
        state = training.cache.states(batch["keys"], device)
    else:
        state = training.split.trunk(batch["images"].to(device, non_blocking=True))
    src_feats, trg_feats = training.model(state).chunk(2)
    loss = correspondence_loss(
        src_feats,
        trg_feats,
        batch["src_pq"].to(device),
        batch["trg_pq"].to(device),
        batch["mask"].to(device),
        scale=training.cfg.logit_scale,
        soft_sigma=training.cfg.soft_sigma,
    )
    training.optimizer.zero_grad(set_to_none=True)
    scaler = training.scaler
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(training.optimizer)  # the norm and the clipping see the true gradients
    clip = training.cfg.grad_clip if training.cfg.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(training.split.trainable_parameters(), clip)
    if scaler is not None:
        scaler.step(training.optimizer)  # skipped when fp16 overflowed; the scale then shrinks
        scaler.update()
        norm = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))  # an overflow is no divergence
    else:
        training.optimizer.step()
    return loss.detach(), norm


# --- what a run says when it ends ------------------------------------------------------------------


def last_lines(training: Training) -> list[str]:
    """The step reached, the model to evaluate, and the command that evaluates it."""
    model = training.run_dir / (BEST if training.cfg.select == "best" and training.best_step is not None else LAST)
    lines = [f"done at step {training.step}/{training.total_steps}: {training.run_dir}"]
    if training.best_step is not None:
        lines.append(f"best {training.val_key} {training.best:.2f} at step {training.best_step}")
    split = "val" if training.cfg.dataset != "custom" else "test"
    lines.append(f"model: {model}")
    lines.append(
        f"evaluate it: python evaluate.py --checkpoint {model} --dataset {training.cfg.dataset} --split {split}"
        + (" --protocol original" if training.cfg.protocol == "original" else "")
    )
    return lines


def diverged_message(training: Training, first_step: int) -> str:
    saved = (
        f"The last finite checkpoint is {training.run_dir / LAST} (step {training.last_saved})."
        if training.last_saved
        else "No checkpoint had been written yet."
    )
    return (
        f"the loss or a gradient became NaN or infinite between steps {first_step} and {training.step}: training "
        f"diverged (lower --lr, keep --grad-clip > 0, check --logit-scale). {saved}"
    )


def interrupted_message(training: Training) -> str:
    if training.last_saved is None:
        return f"interrupted at step {training.step}, before the first checkpoint: nothing to resume"
    return (
        f"interrupted at step {training.step}; the last checkpoint is {training.run_dir / LAST} (step "
        f"{training.last_saved}). Continue with: python finetuning/finetune.py --resume {training.run_dir}"
    )
