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
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import pck
from finetuning import FinetuneError
from finetuning.checkpoints import (
    BEST,
    LAST,
    TrainLog,
    checkpoint_error,
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
from helper_functions import member_preprocess
from models import Backbone, base_record, create_backbone, weights_origin
from semcorr.cli.errors import command_line, script_path
from semcorr.config.settings import DataSettings, EvalSettings, MatchSettings, MemberSettings, TrainSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.geometry import Preprocess
from semcorr.data.images import load_image
from semcorr.data.pairs import PairRecord, PairSet
from semcorr.engine.evaluation import evaluable
from semcorr.engine.matching import predict_keypoints
from semcorr.engine.members import build_member
from semcorr.report import labels
from semcorr.runs import folders
from semcorr.runs.record import RunContext, run_record, start_run
from semcorr.storage.files import WriteError

# --- setting up -----------------------------------------------------------------------------------


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


def load_data(settings: TrainSettings) -> tuple[PairSet, PairSet | None]:
    """The training pairs and the validation pairs the settings ask for. A custom pairs file has no splits:
    its validation pairs come from --val-data, or there is no validation."""
    train_set = load_pairs(settings.data)
    if settings.val_split is None or (settings.data.dataset == "custom" and settings.val_root is None):
        return train_set, None
    root = settings.val_root if settings.val_root is not None else settings.data.root
    return train_set, load_pairs(settings.data, split=settings.val_split, root=root, limit=None)


@dataclass
class TrainingRun:
    """Everything the loop works on, made once by `setup`; step, epoch and the best so far move as it runs."""

    settings: TrainSettings
    context: RunContext
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
        return f"val_pck@{self.settings.val_alpha:g}"

    @property
    def stop(self) -> int:
        """The last step of this invocation (--stop-after ends early without changing the schedule)."""
        stop_after = self.settings.stop_after
        return min(stop_after if stop_after is not None else self.total_steps, self.total_steps)

    @property
    def trained(self) -> set[str]:
        """The state-dict keys that training changes (what a checkpoint holds on top of its base)."""
        return {name for name, p in self.backbone.named_parameters() if p.requires_grad}


def grad_scaler(backbone: Backbone) -> torch.amp.GradScaler | None:
    """The gradient scaler that fp16 autocast needs (None under bf16 or fp32)."""
    return torch.amp.GradScaler(backbone.device.type) if backbone.autocast_dtype == torch.float16 else None


def starting_model(settings: TrainSettings, resume: Path | None) -> tuple[Backbone, dict | None]:
    """The model to train and, when resuming, the saved training state that goes with it."""
    if resume is None:
        return create_backbone(settings.backbone), None
    try:
        backbone = create_backbone(replace(settings.backbone, weights=None, checkpoint=str(resume / LAST), layer=None))
    except (ValueError, OSError, RuntimeError) as err:
        raise checkpoint_error(resume / LAST, err) from None
    return backbone, read_training_state(resume, backbone)


def setup(settings: TrainSettings, train_set: PairSet, val_set: PairSet | None, resume: Path | None) -> TrainingRun:
    """The model, data, optimiser and schedule of a run (restored to the saved step when resuming)."""
    process = setup_distributed(settings.backbone.device)
    settings = replace(settings, backbone=replace(settings.backbone, device=process.device))
    opt = settings.optimisation
    torch.manual_seed(settings.output.seed)
    backbone, saved = starting_model(settings, resume)
    split = SplitBackbone(backbone, settings.trainable_blocks, train_neck=opt.train_neck)
    prep = member_preprocess(settings.image_size, settings.resize, settings.extract, backbone.patch_size)
    pairs = training_pairs(train_set)
    seed = settings.output.seed
    batches = epoch_batches(len(pairs), opt.batch_size, 0, seed, rank=process.rank, world=process.world)
    total = opt.epochs * len(batches)
    warmup = opt.warmup_steps if opt.warmup_steps is not None else max(1, round(0.05 * total))
    optimizer = make_optimizer(split, opt.lr, opt.weight_decay, decay=opt.decay)
    cache = None
    if settings.cache_frozen:
        images = PairSet(train_set.dataset, train_set.split, train_set.root, pairs).unique_images()
        cache = FrozenCache(
            split, images, prep, batch_size=2 * opt.batch_size, num_workers=settings.extract.num_workers,
            progress=settings.output.progress and process.main,
        )  # fmt: skip
    run = TrainingRun(
        settings=settings,
        context=RunContext(),
        process=process,
        backbone=backbone,
        base=backbone.base if resume is not None else base_record(backbone),
        split=split,
        model=DistributedDataParallel(split, broadcast_buffers=False) if process.world > 1 else split,
        prep=prep,
        pairs=pairs,
        val_set=val_subset(val_set, settings.val_limit, seed) if val_set is not None else None,
        dataset=TrainingPairs(pairs, prep, settings.augment, seed, load_images=cache is None),
        cache=cache,
        optimizer=optimizer,
        schedule=torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(opt.schedule, total, warmup)),
        scaler=grad_scaler(backbone),
        steps_per_epoch=len(batches),
        total_steps=total,
        warmup_steps=warmup,
        run_dir=resume,
    )
    if saved is not None:
        restore_training_state(saved, run.optimizer, run.schedule, run.scaler)
        backbone.training_state = None  # restored: the optimiser holds it now
        run.step, run.epoch, run.best = saved["step"], saved.get("epoch", 0), saved["best"]
        run.best_step, run.last_saved = saved.get("best_step"), saved["step"]
    if process.main:
        open_run_folder(run, resumed=saved is not None)
    return run


def open_run_folder(training: TrainingRun, resumed: bool) -> None:
    """Rank 0: the run folder (a new one, or the resumed one), its config.json, its log, the first lines."""
    settings = training.settings
    if resumed:
        training.log = TrainLog.resume(training.run_dir, training.val_key, training.step, settings.tensorboard)
        print(f"resuming {training.run_dir} at step {training.step}/{training.total_steps}")
        return
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
        "global_batch": settings.optimisation.batch_size * training.process.world,
        "steps": training.total_steps,
        "warmup_steps": training.warmup_steps if settings.optimisation.schedule == "warmup-cosine" else 0,
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "frozen_parameters": sum(p.numel() for p in params if not p.requires_grad),
    }
    config = run_record(
        "finetune", settings, resolved=resolved, context=training.context, device=training.backbone.device
    )
    training.run_dir = folders.new_run_dir(
        settings.output.output_dir, labels.folder_parts(config), training.context.started
    )
    folders.write_config(training.run_dir, "finetune", config)
    training.log = TrainLog(training.run_dir, training.val_key, tensorboard=settings.tensorboard)
    for line in first_lines(training):
        print(line)


def first_lines(training: TrainingRun) -> list[str]:
    """What a run says when it starts: the model, the data, the schedule, where it writes, and warnings."""
    settings, opt = training.settings, training.settings.optimisation
    neck = "" if opt.train_neck or training.backbone.spec.family != "sam" else " (neck frozen)"
    lines = [
        f"fine-tuning {training.backbone.name} ({weights_origin(training.backbone)} weights, protocol "
        f"{settings.protocol.name}): last {settings.trainable_blocks} blocks{neck}, logit scale {settings.logit_scale:g}",
        f"{len(training.pairs)} training pairs, {training.total_steps} steps of "
        f"{opt.batch_size * training.process.world} pairs, lr {opt.lr:g} ({opt.schedule}), validation on "
        + (f"{len(training.val_set.pairs)} pairs every {settings.val_every} steps" if training.val_set else "nothing"),
        f"run folder {training.run_dir}",
    ]
    if training.val_set is None:
        lines.append("no validation: best.pt is not selected; last.pt is the model")
    elif opt.select == "last":
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


def validation_settings(settings: TrainSettings, val_set: PairSet) -> EvalSettings:
    """How the model being trained is validated: the run's input and conventions, argmax, no feature cache."""
    member = MemberSettings(settings.backbone, settings.image_size, settings.resize)
    extract = replace(settings.extract, cache_dir=None, batch_size=2 * settings.optimisation.batch_size)
    data = replace(settings.data, dataset=val_set.dataset, split=val_set.split)
    return EvalSettings(
        members=(member,), data=data, extract=extract, match=MatchSettings(), protocol=settings.protocol
    )


def validate(backbone: Backbone, val_set: PairSet, settings: TrainSettings) -> tuple[dict[str, float], pd.DataFrame]:
    """PCK (per image and per keypoint, argmax) of the model being trained, by the evaluation engine, and its
    per-keypoint table."""
    evaluation = validation_settings(settings, val_set)
    member, _ = build_member(evaluation.member, evaluation.extract, backbone, val_set.unique_images(), progress=False)
    pred = predict_keypoints(val_set.pairs, [member], evaluation.match, progress=False)
    data = evaluation.data
    table = pck.keypoint_table(val_set.pairs, pred, data.thresholds, data.pck_norm, strict=data.strict)
    scores = pck.overall(table, evaluation.data.thresholds)
    out = {}
    for alpha in evaluation.data.thresholds:
        out[f"val_pck@{alpha:g}"] = scores[f"pck@{alpha:g}"]["per_image"]
        out[f"val_pck@{alpha:g}_kpt"] = scores[f"pck@{alpha:g}"]["per_keypoint"]
    return out, table


MATCH_PICTURES = 2  # validation pairs drawn into TensorBoard at each validation (the same pairs every time)


def log_validation(training: TrainingRun, val: dict[str, float], table: pd.DataFrame) -> None:
    """A validation's row in the log (and TensorBoard), and pictures of the first validation pairs' matches."""
    training.log.add({"step": training.step, "epoch": training.epoch, **val})
    if training.log.board is None:
        return
    from semcorr.viz import figures, viz2d  # matplotlib loads only for pictures

    alpha = training.settings.val_alpha
    rows = dict(tuple(table.groupby("pair_id", sort=False)))
    for pair in training.val_set.pairs[:MATCH_PICTURES]:
        fig = figures.draw_pair_rows(rows[pair.pair_id], load_image(pair.src), load_image(pair.trg), alpha)
        training.log.add_picture(f"validation matches/{pair.pair_id}", viz2d.figure_image(fig), training.step)


def checkpoint(training: TrainingRun, validate_now: bool, bar: tqdm) -> None:
    """Rank 0: validate (when asked; one printed line), keep best.pt if it improved (--select best),
    write the log, then last.pt with the training state (a run killed in between resumes from the
    previous last.pt and drops the log's later rows), then the curves."""
    if training.process.main:
        settings, val = training.settings, {}
        select = settings.optimisation.select
        progress = {"step": training.step, "epoch": training.epoch}
        files = {"base": training.base, "trained": training.trained, "self_contained": settings.self_contained}
        if validate_now and training.val_set is not None:
            val, table = validate(training.backbone, training.val_set, settings)
            log_validation(training, val, table)
            improved = val[training.val_key] > training.best
            if improved:
                training.best, training.best_step = val[training.val_key], training.step
                if select == "best":
                    save_checkpoint(
                        training.run_dir / BEST, training.backbone, settings, progress=progress | {"val": val}, **files
                    )
            note = f"new best -> {BEST}" if improved and select == "best" else f"best {training.best:.2f}"
            bar.write(
                f"step {training.step}/{training.total_steps}: {training.val_key} {val[training.val_key]:.2f} ({note})"
            )
        state = training_state(
            step=training.step, epoch=training.epoch, best=training.best, best_step=training.best_step,
            optimizer=training.optimizer, schedule=training.schedule, scaler=training.scaler,
        )  # fmt: skip
        progress |= {"val": val}
        training.log.write()
        save_checkpoint(
            training.run_dir / LAST, training.backbone, settings, progress=progress, training=state, **files
        )
        training.last_saved = training.step
        training.log.plot(training.best_step)
    barrier(training.process)


# --- the loop -------------------------------------------------------------------------------------


def run(settings: TrainSettings, resume: str | Path | None = None, given: dict | None = None) -> Path:
    """Load the data the settings name and train (continuing the run folder `resume`, whose settings
    `read_resume_folder` gives, `given` the settings given again on its command line)."""
    if resume is None:
        start_run(settings.output)
    train_set, val_set = load_data(settings)
    if resume is not None:
        record_resume(Path(resume), given or {})
    return train(settings, train_set, val_set, resume)


@dataclass
class Interval:
    """Sums over the steps since the last log row (tensors stay on the device until logged)."""

    loss: Tensor | float = 0.0
    grad_norm: Tensor | float = 0.0
    steps: int = 0
    finite: Tensor | bool = True  # whether every loss and gradient of the interval was finite
    t0: float = field(default_factory=time.perf_counter)


def train(
    settings: TrainSettings, train_set: PairSet, val_set: PairSet | None, resume: str | Path | None = None
) -> Path:
    """Fine-tune on `train_set`, validating on `val_set`; returns the run folder (rank 0's)."""
    training = setup(settings, train_set, val_set, Path(resume) if resume is not None else None)
    settings, main = training.settings, training.process.main
    bar = tqdm(total=training.total_steps, initial=training.step, desc="fine-tuning", unit="step",
               disable=not (settings.output.progress and main))  # fmt: skip
    try:
        if training.step == 0 and training.val_set is not None and main:  # the starting point of the PCK curve
            log_validation(training, *validate(training.backbone, training.val_set, settings))
            training.log.write()
        barrier(training.process)
        loop(training, bar)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(interrupted_message(training)) from None
    except WriteError as err:  # a full disk while checkpointing: the previous last.pt is intact
        raise FinetuneError(f"{err}. {resume_hint(training)}") from None
    finally:
        bar.close()
        if main:
            training.log.close()
    if main:
        for line in last_lines(training):
            print(line)
    return training.run_dir


def loop(training: TrainingRun, bar: tqdm) -> None:
    """The steps from where the run stands to its stop."""
    settings = training.settings
    interval = Interval()
    while training.step < training.stop:
        training.epoch, done = divmod(training.step, training.steps_per_epoch)
        batches = epoch_batches(
            len(training.pairs), settings.optimisation.batch_size, training.epoch, settings.output.seed,
            rank=training.process.rank, world=training.process.world,
        )  # fmt: skip
        loader = DataLoader(
            training.dataset,
            batch_sampler=batches[done:],  # a resumed epoch skips the batches already trained on
            collate_fn=collate,
            num_workers=settings.extract.num_workers,
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
            checkpoint_now = training.step % settings.val_every == 0 or end_of_epoch or training.step == training.stop

            # logging: the mean over the interval, over all processes; a non-finite loss stops the run
            if training.step % settings.log_every == 0 or checkpoint_now:
                log_interval(training, interval, bar)
                interval = Interval()
            bar.update(1)

            # validation and checkpoint (their time does not count in pairs/s)
            if checkpoint_now:
                paused = time.perf_counter()
                checkpoint(training, training.step % settings.val_every == 0 or end_of_epoch, bar)
                interval.t0 += time.perf_counter() - paused

            # termination: --stop-after ends this invocation mid-schedule; --resume continues it
            if training.step >= training.stop:
                break


def log_interval(training: TrainingRun, interval: Interval, bar: tqdm) -> None:
    """One train_log.csv row: mean loss and gradient norm since the last row, learning rate, pairs/s.
    A non-finite loss or gradient in the interval ends the run, keeping the last finite checkpoint."""
    n = interval.steps
    means = [float(bool(interval.finite)), float(interval.loss) / n, float(interval.grad_norm) / n]
    finite, mean_loss, mean_norm = all_mean(means, training.process)
    if finite != 1.0:  # some process saw a non-finite loss or gradient
        raise FinetuneError(diverged_message(training, training.step - n + 1))
    lr = training.schedule.get_last_lr()[0]
    if training.process.main:
        pairs_per_s = (
            n * training.settings.optimisation.batch_size * training.process.world / (time.perf_counter() - interval.t0)
        )
        row = {"step": training.step, "epoch": training.epoch, "loss": mean_loss, "lr": lr, "grad_norm": mean_norm}
        training.log.add(row | {"pairs_per_s": pairs_per_s})
        bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}")


def train_step(training: TrainingRun, batch: dict) -> tuple[Tensor, Tensor]:
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
        scale=training.settings.logit_scale,
        soft_sigma=training.settings.soft_sigma,
    )
    training.optimizer.zero_grad(set_to_none=True)
    scaler = training.scaler
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(training.optimizer)  # the norm and the clipping see the true gradients
    grad_clip = training.settings.optimisation.grad_clip
    clip = grad_clip if grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(training.split.trainable_parameters(), clip)
    if scaler is not None:
        scaler.step(training.optimizer)  # skipped when fp16 overflowed; the scale then shrinks
        scaler.update()
        norm = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))  # an overflow is no divergence
    else:
        training.optimizer.step()
    return loss.detach(), norm


# --- what a run says when it ends ------------------------------------------------------------------


# the conventions a fine-tuning run may have changed that its evaluation must change too
EVALUATION_FLAGS = ("pck_norm", "resample", "coordinates", "pf_shift", "clamp_keypoints", "build", "precision")


def last_lines(training: TrainingRun) -> list[str]:
    """The step reached, the model to evaluate, and the commands that continue the run (when it stopped early)
    and evaluate the model, each runnable as printed."""
    settings = training.settings
    model = training.run_dir / (
        BEST if settings.optimisation.select == "best" and training.best_step is not None else LAST
    )
    lines = [f"done at step {training.step}/{training.total_steps}: {training.run_dir}"]
    if training.best_step is not None:
        lines.append(f"best {training.val_key} {training.best:.2f} at step {training.best_step}")
    lines.append(f"model: {model}")
    if training.step < training.total_steps:
        lines.append(f"continue it: {resume_command(training)}")
    lines.append(f"evaluate it: {evaluation_command(settings, model)}")
    if settings.data.dataset == "custom":
        lines.append("  (that is the file it trained on: for a fair number, give a file of held-out pairs instead)")
    return lines


def evaluation_command(settings: TrainSettings, model: Path) -> str:
    """evaluate.py on the model: the training dataset's test split (not the split that selected best.pt), at
    the folder it was read from, with the run's protocol and the conventions it changed."""
    data = settings.data
    argv = ["python", script_path("evaluate.py"), "--checkpoint", str(model), "--dataset", data.dataset]
    argv += ["--data-root", data.root] if data.root is not None else []
    argv += ["--layout", data.layout] if data.layout != DataSettings().layout else []
    argv += ["--rescale-annotations"] if data.rescale_annotations else []
    argv += ["--protocol", settings.protocol.name] if settings.protocol.name != "default" else []
    for name, value in settings.protocol.overrides.items():
        flag = "--" + name.replace("_", "-")
        if name in EVALUATION_FLAGS:
            argv += [flag] if value is True else [flag.replace("--", "--no-")] if value is False else [flag, str(value)]
    return shlex.join(argv)


def resume_command(training: TrainingRun) -> str:
    """The command that continues this run from its last.pt (torchrun with as many processes under DDP)."""
    world = training.process.world
    launcher = ["torchrun", f"--nproc_per_node={world}"] if world > 1 else ["python"]
    return shlex.join([*launcher, script_path("finetuning/finetune.py"), "--resume", str(training.run_dir)])


def diverged_message(training: TrainingRun, first_step: int) -> str:
    saved = (
        f"The last finite checkpoint is {training.run_dir / LAST} (step {training.last_saved})."
        if training.last_saved
        else "No checkpoint had been written yet."
    )
    return (
        f"the loss or a gradient became NaN or infinite between steps {first_step} and {training.step}: training "
        f"diverged (lower --lr, keep --grad-clip > 0, check --logit-scale). {saved}"
    )


def interrupted_message(training: TrainingRun) -> str:
    """Where the run stands and the command that continues it (or, before its first checkpoint, starts it again)."""
    if training.last_saved is None:
        return (
            f"interrupted at step {training.step}, before the first checkpoint: nothing to resume; start again "
            f"with: {command_line()}"
        )
    return f"interrupted at step {training.step}. {resume_hint(training)}"


def resume_hint(training: TrainingRun) -> str:
    """Where the last complete checkpoint is and the command that continues from it."""
    if training.last_saved is None:
        return f"No checkpoint was complete yet: start again with: {command_line()}"
    return (
        f"The last complete checkpoint is {training.run_dir / LAST} (step {training.last_saved}). Continue with: "
        f"{resume_command(training)}"
    )
