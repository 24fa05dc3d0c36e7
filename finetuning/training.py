"""The fine-tuning engine: setup, then a loop that reads top to bottom (validation, checkpoints, resume, DDP).

The backbone is split in two (finetuning/model.py): a frozen trunk (patch embedding and the first
blocks, run without gradients) and a trainable head (the last N blocks and the final norm, or SAM's
neck). For each source keypoint the logits are scale x cosine similarity of its descriptor to every
target patch; the loss (finetuning/loss.py) is the cross-entropy against the patch holding the
ground-truth target keypoint (or a Gaussian around it), averaged over each pair's keypoints, then
over the pairs of the batch.

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

import pck
import results
from evaluation import build_member, evaluable, predict_keypoints, score
from finetuning import FinetuneError
from finetuning.checkpoints import (
    TrainLog,
    known_model,
    read_training_state,
    restore_training_state,
    save_model,
    save_training_state,
)
from finetuning.data import TrainingPairs, collate, epoch_batches
from finetuning.distributed import Process, all_mean, barrier, setup_distributed
from finetuning.loss import correspondence_loss
from finetuning.model import FrozenCache, SplitBackbone, make_optimizer, warmup_cosine
from finetuning.presets import preset_for
from geometry import Preprocess
from helper_functions import backbone_preprocess
from models import Backbone, create_backbone, load_finetuned
from pairs import PairRecord, PairSet, load_pairs
from settings import MatchConfig, TrainConfig

# --- setting up -----------------------------------------------------------------------------------


def resolve(cfg: TrainConfig, backbone: Backbone) -> TrainConfig:
    """The config with the preset's values filled in, checked against the backbone and itself."""
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
    """The starting model: a fine-tuned checkpoint, or a named model with its weights."""
    model = known_model(cfg.model) if cfg.model is not None else None
    return create_backbone(
        model, weights=cfg.weights, checkpoint=cfg.checkpoint, device=device, precision=cfg.precision
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
    """The training pairs and the validation pairs the config asks for."""
    train_set = load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.train_split, layout=cfg.layout, limit=cfg.limit)
    if cfg.val_split is None:
        return train_set, None
    return train_set, load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.val_split, layout=cfg.layout)


@dataclass
class Training:
    """Everything the loop works on, made once by `setup`; `step` and `best` move as it runs."""

    cfg: TrainConfig
    process: Process
    backbone: Backbone
    split: SplitBackbone  # the model's frozen trunk and trainable head
    model: nn.Module  # the head as trained: `split` itself, or wrapped in DistributedDataParallel
    prep: Preprocess
    pairs: list[PairRecord]
    val_set: PairSet | None
    dataset: TrainingPairs
    cache: FrozenCache | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    run_dir: Path | None = None  # rank 0 only
    log: TrainLog | None = None  # rank 0 only
    step: int = 0
    best: float = -math.inf
    saved_state: dict | None = field(default=None, repr=False)  # what --resume restores

    @property
    def val_key(self) -> str:
        return f"val_pck@{self.cfg.val_alpha:g}"

    @property
    def stop(self) -> int:
        """The last step of this invocation (--stop-after ends early without changing the schedule)."""
        return min(self.cfg.stop_after if self.cfg.stop_after is not None else self.total_steps, self.total_steps)


def starting_model(cfg: TrainConfig, process: Process, resume: Path | None) -> tuple[Backbone, dict | None]:
    """The model to train and, when resuming, the saved training state that goes with it."""
    if resume is None:
        return build_backbone(cfg, process.device), None
    backbone = load_finetuned(resume / "last.pt", device=process.device, precision=cfg.precision)
    saved = read_training_state(resume)
    if backbone.extra.get("step") != saved["step"]:
        raise FinetuneError(
            f"{resume}: last.pt (step {backbone.extra.get('step')}) and its training state "
            f"(step {saved['step']}) disagree; the run was interrupted while saving."
        )
    return backbone, saved


def setup(cfg: TrainConfig, train_set: PairSet, val_set: PairSet | None, resume: Path | None) -> Training:
    """The model, data, optimiser and schedule of a run (restored to the saved step when resuming)."""
    process = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    backbone, saved = starting_model(cfg, process, resume)
    cfg = resolve(cfg, backbone)
    split = SplitBackbone(backbone, cfg.trainable_blocks)
    prep = backbone_preprocess(backbone, cfg.image_size, cfg.resize)
    pairs = training_pairs(train_set)
    steps_per_epoch = len(
        epoch_batches(len(pairs), cfg.batch_size, 0, cfg.seed, rank=process.rank, world=process.world)
    )
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.05 * total))
    optimizer = make_optimizer(split, cfg.lr, cfg.weight_decay)
    cache = None
    if cfg.cache_frozen:
        images = PairSet(train_set.dataset, train_set.split, train_set.root, pairs).unique_images()
        cache = FrozenCache(
            split, images, prep, batch_size=2 * cfg.batch_size, num_workers=cfg.num_workers,
            progress=cfg.progress and process.main,
        )  # fmt: skip
    training = Training(
        cfg=cfg,
        process=process,
        backbone=backbone,
        split=split,
        model=DistributedDataParallel(split, broadcast_buffers=False) if process.world > 1 else split,
        prep=prep,
        pairs=pairs,
        val_set=val_subset(val_set, cfg.val_limit, cfg.seed) if val_set is not None else None,
        dataset=TrainingPairs(pairs, prep, cfg.augment, cfg.seed, load_images=cache is None),
        cache=cache,
        optimizer=optimizer,
        schedule=torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup)),
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=warmup,
        run_dir=resume,
        saved_state=saved,
    )
    if saved is not None:
        training.step, training.best = restore_training_state(saved, training.optimizer, training.schedule)
    if process.main:
        open_run_folder(training)
    return training


def open_run_folder(training: Training) -> None:
    """Rank 0: the run folder (a new one, or the resumed one), its config.json and its log."""
    if training.run_dir is None:
        training.run_dir = results.new_run_dir(training.cfg.output_dir, [training.backbone.name])
    params = list(training.split.parameters())
    resolved = {
        "weights": str(training.backbone.weights_path),
        "image_size": [training.prep.height, training.prep.width],
        "grid": list(training.prep.grid),
        "train_pairs": len(training.pairs),
        "val_pairs": len(training.val_set.pairs) if training.val_set else 0,
        "processes": training.process.world,
        "global_batch": training.cfg.batch_size * training.process.world,
        "steps": training.total_steps,
        "warmup_steps": training.warmup_steps,
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "frozen_parameters": sum(p.numel() for p in params if not p.requires_grad),
    }
    config = {
        "args": asdict(training.cfg),
        "resolved": resolved,
        "environment": results.environment(training.backbone.device),
    }
    results.write_config(training.run_dir, "finetune", config)
    resumed = training.saved_state is not None
    training.log = (
        TrainLog.resume(training.run_dir, training.val_key, training.step)
        if resumed
        else TrainLog(training.run_dir, training.val_key)
    )
    print(
        f"fine-tuning {training.backbone.name}: last {training.cfg.trainable_blocks} blocks, scale {training.cfg.logit_scale}, "
        f"{len(training.pairs)} pairs, {training.total_steps} steps of {training.cfg.batch_size * training.process.world} pairs; "
        f"run folder {training.run_dir}"
    )


# --- validation and checkpoints -------------------------------------------------------------------


def validate(backbone: Backbone, val_set: PairSet, cfg: TrainConfig) -> dict[str, float]:
    """PCK (per image and per keypoint, argmax) of the model being trained, by the evaluation engine."""
    norm = pck.default_norm(val_set.dataset, cfg.pck_norm)
    member, _ = build_member(
        backbone,
        val_set,
        image_size=cfg.image_size,
        resize=cfg.resize,
        batch_size=2 * cfg.batch_size,
        num_workers=cfg.num_workers,
        progress=False,
    )
    pred = predict_keypoints(val_set.pairs, [member], MatchConfig(), progress=False)
    _, summary = score(val_set.pairs, pred, cfg.thresholds, norm)
    out = {}
    for alpha in cfg.thresholds:
        out[f"val_pck@{alpha:g}"] = summary[f"pck@{alpha:g}"]["per_image"]
        out[f"val_pck@{alpha:g}_kpt"] = summary[f"pck@{alpha:g}"]["per_keypoint"]
    return out


def checkpoint(training: Training, epoch: int, validate_now: bool) -> None:
    """Rank 0: validate (when asked), keep best.pt if it improved, then write last.pt and the training state."""
    if training.process.main:
        val = {}
        if validate_now and training.val_set is not None:
            val = validate(training.backbone, training.val_set, training.cfg)
            training.log.add({"step": training.step, "epoch": epoch, **val})
            if val[training.val_key] > training.best:
                training.best = val[training.val_key]
                save_model(
                    training.run_dir, "best", training.backbone, training.cfg, step=training.step, epoch=epoch, val=val
                )
        save_model(training.run_dir, "last", training.backbone, training.cfg, step=training.step, epoch=epoch, val=val)
        save_training_state(
            training.run_dir,
            step=training.step,
            best=training.best,
            optimizer=training.optimizer,
            schedule=training.schedule,
        )
        training.log.write(plot=True)
    barrier(training.process)


# --- the loop -------------------------------------------------------------------------------------


def run(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    """Load the data the config names and train (continuing the run folder `resume`, whose config
    `read_resume_folder` gives); returns the run folder."""
    if cfg.model is not None:
        known_model(cfg.model)  # before reading any data
    train_set, val_set = load_data(cfg)
    return train(cfg, train_set, val_set, resume)


@dataclass
class Interval:
    """Sums over the steps since the last log row (tensors stay on the device until logged)."""

    loss: Tensor | float = 0.0
    grad_norm: Tensor | float = 0.0
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)


def train(cfg: TrainConfig, train_set: PairSet, val_set: PairSet | None, resume: str | Path | None = None) -> Path:
    """Fine-tune on `train_set`, validating on `val_set`; returns the run folder (rank 0's)."""
    training = setup(cfg, train_set, val_set, Path(resume) if resume is not None else None)
    cfg, main = training.cfg, training.process.main
    if training.step == 0 and training.val_set is not None and main:  # the starting point of the PCK curve
        training.log.add({"step": 0, "epoch": 0, **validate(training.backbone, training.val_set, cfg)})
        training.log.write(plot=False)
    barrier(training.process)
    bar = tqdm(
        total=training.total_steps,
        initial=training.step,
        desc="fine-tuning",
        unit="step",
        disable=not (cfg.progress and main),
    )
    interval = Interval()
    while training.step < training.stop:
        epoch, done = divmod(training.step, training.steps_per_epoch)
        batches = epoch_batches(
            len(training.pairs),
            cfg.batch_size,
            epoch,
            cfg.seed,
            rank=training.process.rank,
            world=training.process.world,
        )
        loader = DataLoader(
            training.dataset,
            batch_sampler=batches[done:],  # a resumed epoch skips the batches already trained on
            collate_fn=collate,
            num_workers=cfg.num_workers,
            pin_memory=training.backbone.device.type == "cuda",
        )
        for batch in loader:
            # forward, backward, update; then the learning rate of the next step (warmup, cosine decay)
            loss, grad_norm = train_step(training, batch)
            training.schedule.step()
            training.step += 1
            interval.loss, interval.grad_norm = interval.loss + loss, interval.grad_norm + grad_norm
            interval.steps += 1
            end_of_epoch = training.step % training.steps_per_epoch == 0

            # logging: the mean over the interval, over all processes
            if training.step % cfg.log_every == 0 or end_of_epoch or training.step == training.stop:
                log_interval(training, interval, epoch, bar)
                interval = Interval()
            bar.update(1)

            # validation and checkpoint (their time does not count in pairs/s)
            if training.step % cfg.val_every == 0 or end_of_epoch or training.step == training.stop:
                paused = time.perf_counter()
                checkpoint(training, epoch, validate_now=training.step % cfg.val_every == 0 or end_of_epoch)
                interval.t0 += time.perf_counter() - paused

            # termination: --stop-after ends this invocation mid-schedule; --resume continues it
            if training.step >= training.stop:
                break
    bar.close()
    if main:
        best = f"; best {training.val_key} {training.best:.2f}" if training.best > -math.inf else ""
        print(f"done at step {training.step}/{training.total_steps}: {training.run_dir}{best}")
    return training.run_dir


def log_interval(training: Training, interval: Interval, epoch: int, bar: tqdm) -> None:
    """One train_log.csv row: mean loss and gradient norm since the last row, learning rate, pairs/s."""
    n = interval.steps
    mean_loss, mean_norm = all_mean([float(interval.loss) / n, float(interval.grad_norm) / n], training.process)
    lr = training.schedule.get_last_lr()[0]
    if training.process.main:
        pairs_per_s = n * training.cfg.batch_size * training.process.world / (time.perf_counter() - interval.t0)
        training.log.add(
            {
                "step": training.step,
                "epoch": epoch,
                "loss": mean_loss,
                "lr": lr,
                "grad_norm": mean_norm,
                "pairs_per_s": pairs_per_s,
            }
        )
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
    loss.backward()
    clip = training.cfg.grad_clip if training.cfg.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(training.split.trainable_parameters(), clip)
    training.optimizer.step()
    return loss.detach(), norm
