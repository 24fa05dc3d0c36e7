"""The fine-tuning engine: model split, loss, loop, validation, checkpoints, resume, DDP.

The backbone is split in two: a frozen trunk (patch embedding and the first blocks, run without
gradients) and a trainable head (the last N blocks and the final norm, or SAM's neck). For each
source keypoint the logits are scale x cosine similarity of its descriptor to every target patch;
the loss is the cross-entropy against the patch holding the ground-truth target keypoint (or a
Gaussian around it), averaged over each pair's keypoints, then over the pairs of the batch.

Under `torchrun --nproc_per_node=G` the same code runs DistributedDataParallel: each process
takes its share of every global batch (G x batch size pairs), gradients are averaged, and only
rank 0 validates and writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import pck
from evaluation import MatchConfig, build_member, evaluable, predict_keypoints, score
from finetuning.data import Augment, TrainingPairs, collate, epoch_batches
from finetuning.presets import preset_for
from helper_functions import ImageDataset, Preprocess, backbone_preprocess
from matching_strategies import nearest_patch, sample_descriptors
from models import Backbone, TokenState, get_spec, load_backbone, load_finetuned, save_finetuned
from pairs import ImageRef, PairRecord, PairSet, load_pairs
from results import atomic_torch_save, atomic_write, environment, new_run_dir, write_csv, write_json

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.csv"
PLOT_FILE = "train_curves.png"
TRAIN_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "pairs_per_s")


class FinetuneError(ValueError):
    """A setting, dataset or resume folder that training cannot use; the message says how to fix it."""


@dataclass
class TrainConfig:
    """Every setting of a fine-tuning run (recorded in config.json and in each checkpoint)."""

    model: str | None = "dinov2"  # None with a checkpoint: the checkpoint's model
    weights: str | None = None  # None: the official file under models/<family>/weights/
    checkpoint: str | None = None  # start from this project's checkpoint instead
    precision: str = "auto"  # autocast: bf16 on CUDA, fp32 on CPU
    trainable_blocks: int | None = None  # None: the model's preset
    logit_scale: float | None = None  # None: the model's preset
    soft_sigma: float = 0.0  # > 0: Gaussian soft targets of this std (in patches) instead of one-hot
    dataset: str = "spair"
    data_root: str | None = None
    layout: str = "large"
    train_split: str = "trn"
    val_split: str | None = "val"  # None: no validation (only `last` is kept)
    limit: int | None = None  # train on the first N pairs
    val_limit: int | None = 1000  # validate on a fixed random subset of N pairs (None: all)
    image_size: list[int] | None = None  # [side] or [H, W]; None: the backbone's default
    resize: str = "squash"
    flip: bool = False
    jitter: float = 0.0
    cache_frozen: bool = False  # keep each image's frozen-trunk output (only without augmentation)
    epochs: int = 1
    batch_size: int = 8  # pairs per step per process
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # None: 5% of all steps
    grad_clip: float = 1.0  # max gradient norm; 0: no clipping
    val_every: int = 1000  # steps between validations and `last` checkpoints (and at each epoch end)
    val_alpha: float = 0.1  # PCK threshold that picks `best`
    thresholds: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    pck_norm: str | None = None  # None: the dataset's standard normalisation
    log_every: int = 10
    stop_after: int | None = None  # stop (saving `last`) after this global step; the schedule is unchanged
    num_workers: int = 4
    device: str = "auto"
    output_dir: str = "results/finetune"
    seed: int = 0
    progress: bool = True

    @property
    def augment(self) -> Augment:
        return Augment(self.flip, self.jitter)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# --- distributed ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, number of processes, and its device."""

    rank: int
    world: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    return Dist(dist.get_rank(), world, f"cuda:{local_rank}" if cuda else "cpu")


def all_mean(values: list[float], d: Dist) -> list[float]:
    """The mean over processes of each value (the values themselves in a single process)."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / d.world).tolist()


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


# --- model ----------------------------------------------------------------------------------------


class SplitBackbone(nn.Module):
    """The backbone as a frozen trunk (no gradients) and a trainable head; `forward` is the head.

    Only the head's parameters require gradients, so DistributedDataParallel only averages those.
    """

    def __init__(self, backbone: Backbone, trainable_blocks: int):
        super().__init__()
        used = backbone.last_block + 1
        if not 0 <= trainable_blocks <= used:
            raise FinetuneError(
                f"--trainable-blocks {trainable_blocks} does not fit the {used} blocks that feed "
                f"{backbone.name}'s features (layer {backbone.layer}); choose 0..{used}."
            )
        self.backbone = backbone
        self.split, self.stop = used - trainable_blocks, used
        backbone.requires_grad_(False)
        for module in backbone.trainable_modules(trainable_blocks):
            module.requires_grad_(True)

    def trunk(self, images: Tensor) -> TokenState:
        with torch.no_grad():
            return self.backbone.run_blocks(self.backbone.embed(images), 0, self.split)

    def forward(self, state: TokenState) -> Tensor:
        return self.backbone.to_feature_map(self.backbone.run_blocks(state, self.split, self.stop))


class FrozenCache:
    """Each image's frozen-trunk output, computed once, so that an epoch pays only for the head.

    Valid only without augmentation (a flipped or jittered image has other trunk outputs). Kept in
    host memory in the trunk's output dtype; DINOv2-B at 518 px takes about 4 MB per image.
    """

    def __init__(
        self,
        split: SplitBackbone,
        images: list[ImageRef],
        prep: Preprocess,
        batch_size: int,
        num_workers: int,
        progress: bool,
    ):
        device = split.backbone.device
        loader = DataLoader(ImageDataset(images, prep), batch_size=batch_size, num_workers=num_workers)
        self.tokens: dict[str, Tensor] = {}
        for index, batch in tqdm(loader, desc="frozen features", unit="batch", disable=not progress):
            state = split.trunk(batch.to(device))
            for i, tokens in zip(index.tolist(), state.tokens.cpu(), strict=True):
                self.tokens[images[i].key] = tokens
        self.grid, self.rope = state.grid, state.rope  # the same for every image of one size

    def states(self, keys: list[str], device: torch.device) -> TokenState:
        tokens = torch.stack([self.tokens[k] for k in keys]).to(device, non_blocking=True)
        return TokenState(tokens, self.grid, self.rope)


# --- loss -----------------------------------------------------------------------------------------


def target_patches(trg_pq: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, K) flat index of the patch holding each target keypoint."""
    xy = nearest_patch(trg_pq.reshape(-1, 2), grid)
    return (xy[:, 1] * grid[1] + xy[:, 0]).view(trg_pq.shape[:2])


def soft_targets(trg_pq: Tensor, grid: tuple[int, int], sigma: float) -> Tensor:
    """(B, K, h*w) Gaussian of std `sigma` patches around each target keypoint, normalised over the grid."""
    h, w = grid
    ys = torch.arange(h, device=trg_pq.device, dtype=torch.float32)
    xs = torch.arange(w, device=trg_pq.device, dtype=torch.float32)
    dx2 = (xs - trg_pq[..., 0:1]) ** 2  # (B, K, w)
    dy2 = (ys - trg_pq[..., 1:2]) ** 2  # (B, K, h)
    d2 = dy2[..., :, None] + dx2[..., None, :]
    return (-d2 / (2 * sigma**2)).flatten(2).softmax(dim=-1)


def correspondence_loss(
    src_feats: Tensor,
    trg_feats: Tensor,
    src_pq: Tensor,
    trg_pq: Tensor,
    mask: Tensor,
    scale: float,
    soft_sigma: float = 0.0,
) -> Tensor:
    """Cross-entropy of scale x cosine similarity over target patches, per keypoint.

    feats (B, C, h, w); src_pq / trg_pq (B, K, 2) patch positions; mask (B, K) the real keypoints.
    Averaged over each pair's keypoints, then over pairs: with equal batches per process the mean
    of the processes' losses is the loss of the global batch.
    """
    b, c, h, w = trg_feats.shape
    k = src_pq.shape[1]
    src = F.normalize(src_feats.float(), dim=1)
    trg = F.normalize(trg_feats.float(), dim=1).flatten(2)  # (B, C, h*w)
    rows = torch.arange(b, device=src.device).repeat_interleave(k)
    desc = sample_descriptors(src, rows, src_pq.reshape(-1, 2), "nearest").view(b, k, c)
    logits = scale * torch.bmm(desc, trg)  # (B, K, h*w)
    if soft_sigma > 0:
        per_kp = -(soft_targets(trg_pq, (h, w), soft_sigma) * logits.log_softmax(dim=-1)).sum(dim=-1)
    else:
        per_kp = F.cross_entropy(logits.flatten(0, 1), target_patches(trg_pq, (h, w)).flatten(), reduction="none")
        per_kp = per_kp.view(b, k)
    weights = mask.float()
    per_pair = (per_kp * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return per_pair.mean()


# --- optimisation ---------------------------------------------------------------------------------


def make_optimizer(split: SplitBackbone, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW on the trainable parameters; weight decay on matrices only (not on norms and biases)."""
    params = [p for p in split.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup to 1 over `warmup_steps`, then cosine to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# --- validation -----------------------------------------------------------------------------------


def val_subset(pairset: PairSet, limit: int | None, seed: int) -> PairSet:
    """A fixed random subset of `limit` evaluable pairs (file order is sorted by category: no head)."""
    pairs, _ = evaluable(pairset)
    if limit is not None and limit < len(pairs):
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), limit, replace=False))
        pairs = [pairs[i] for i in keep]
    return PairSet(pairset.dataset, pairset.split, pairset.root, pairs)


def validate(backbone: Backbone, val_set: PairSet, cfg: TrainConfig) -> dict[str, float]:
    """PCK (per image and per keypoint, argmax) of the model being trained, by the evaluation engine."""
    norm = pck.default_norm(val_set.dataset, cfg.pck_norm)
    member, _ = build_member(
        backbone, val_set, cfg.image_size, cfg.resize, None, 2 * cfg.batch_size, cfg.num_workers, progress=False
    )
    pred = predict_keypoints(val_set.pairs, [member], MatchConfig(), progress=False)
    _, summary = score(val_set.pairs, pred, cfg.thresholds, norm)
    out = {}
    for alpha in cfg.thresholds:
        out[f"val_pck@{alpha:g}"] = summary[f"pck@{alpha:g}"]["per_image"]
        out[f"val_pck@{alpha:g}_kpt"] = summary[f"pck@{alpha:g}"]["per_keypoint"]
    return out


# --- run folder: checkpoints, training state, log ---------------------------------------------------


def save_model(
    run_dir: Path, name: str, backbone: Backbone, cfg: TrainConfig, step: int, epoch: int, val: dict
) -> None:
    """best.pt / last.pt: the full backbone in its weights' dtype, with the settings (loads with no other flag)."""
    extra = {"finetune": asdict(cfg), "step": step, "epoch": epoch, "val": dict(val)}
    save_finetuned(backbone, run_dir / f"{name}.pt", extra)


def save_training_state(run_dir: Path, step: int, best: float, optimizer, schedule) -> None:
    """Optimiser, scheduler, step and RNG states beside last.pt, written atomically."""
    state = {
        "step": step,
        "best": best,
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_torch_save(state, run_dir / STATE_FILE)


def restore_training_state(saved: dict, optimizer, schedule) -> tuple[int, float]:
    """Load what save_training_state wrote; returns (step, best validation PCK)."""
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if torch.cuda.is_available() and saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved["step"], saved["best"]


def plot_curves(log: pd.DataFrame, path: Path, val_column: str) -> None:
    """Training loss and validation PCK against the step, in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if "loss" in log:
        train = log.dropna(subset=["loss"])
        ax.plot(train["step"], train["loss"], color="tab:blue", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="tab:blue")
    if val_column in log:
        val = log.dropna(subset=[val_column])
        ax2 = ax.twinx()
        ax2.plot(val["step"], val[val_column], "o-", color="tab:red")
        ax2.set_ylabel(val_column.replace("val_", "validation ") + " (%)", color="tab:red")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


class TrainLog:
    """Rows of train_log.csv (training rows: loss, lr; validation rows: PCK), rewritten atomically."""

    def __init__(self, run_dir: Path, val_column: str, rows: list[dict] | None = None):
        self.run_dir, self.val_column, self.rows = run_dir, val_column, rows or []

    @classmethod
    def resume(cls, run_dir: Path, val_column: str, step: int) -> TrainLog:
        """The log of an interrupted run, without rows written after its last checkpoint."""
        path = run_dir / LOG_FILE
        rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
        return cls(run_dir, val_column, [r for r in rows if r["step"] <= step])

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def write(self, plot: bool = False) -> None:
        table = pd.DataFrame(self.rows)
        first = [c for c in TRAIN_COLUMNS if c in table]
        table = table[first + [c for c in table if c not in first]]
        write_csv(self.run_dir / LOG_FILE, table)
        if plot and len(table):
            plot_curves(table, self.run_dir / PLOT_FILE, self.val_column)


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


def known_model(name: str) -> str:
    """The canonical name of a model name or alias; FinetuneError listing the choices if unknown."""
    try:
        return get_spec(name).name
    except ValueError as err:
        raise FinetuneError(str(err)) from None


def build_backbone(cfg: TrainConfig, device: str) -> Backbone:
    """The starting model: a checkpoint of this project, or a named model with its weights."""
    if cfg.checkpoint:
        backbone = load_finetuned(cfg.checkpoint, device=device, precision=cfg.precision)
        if cfg.model is not None and known_model(cfg.model) != backbone.name:
            raise FinetuneError(
                f"--checkpoint {cfg.checkpoint} holds a {backbone.name}, not {known_model(cfg.model)}: "
                "drop --model, or give a checkpoint of that model."
            )
        return backbone
    return load_backbone(known_model(cfg.model), weights=cfg.weights, device=device, precision=cfg.precision)


def training_pairs(pairset: PairSet) -> list[PairRecord]:
    pairs, _ = evaluable(pairset)
    if not pairs:
        raise FinetuneError(
            f"{pairset.dataset} split {pairset.split!r} at {pairset.root} has no pairs with keypoints "
            f"({pairset.summary()}); training needs keypoint annotations: choose another split or dataset."
        )
    return pairs


def load_data(cfg: TrainConfig) -> tuple[PairSet, PairSet | None]:
    """The training pairs and the validation subset the config asks for."""
    train_set = load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.train_split, layout=cfg.layout, limit=cfg.limit)
    if cfg.val_split is None:
        return train_set, None
    return train_set, load_pairs(cfg.dataset, root=cfg.data_root, split=cfg.val_split, layout=cfg.layout)


def read_resume_folder(run_dir: Path, model: str | None) -> TrainConfig:
    """The config of the run in `run_dir`, checked to be resumable (and of `model` when given)."""
    missing = [n for n in ("config.json", "last.pt", STATE_FILE) if not (run_dir / n).is_file()]
    if missing:
        raise FinetuneError(
            f"cannot resume from {run_dir}: {', '.join(missing)} missing. Give the folder of a run of "
            "finetuning/finetune.py that saved at least one checkpoint (results/finetune/<timestamp>_<model>/)."
        )
    try:
        cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FinetuneError(
            f"cannot resume from {run_dir}: its config.json is not one finetuning/finetune.py wrote "
            f"({type(err).__name__}: {err}); start a new run instead."
        ) from None
    if model is not None:
        wanted = known_model(model)
        if wanted != known_model(cfg.model):
            raise FinetuneError(
                f"{run_dir} is a fine-tuning run of {cfg.model}, not {wanted}: resume it without --model "
                f"(or with --model {cfg.model}), or start a new run."
            )
    return cfg


# --- the loop -------------------------------------------------------------------------------------


def run(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    """Load the data the config names and train (continuing the run folder `resume`, whose config
    `read_resume_folder` gives); returns the run folder."""
    if cfg.model is not None:
        known_model(cfg.model)  # before reading any data
    train_set, val_set = load_data(cfg)
    return train(cfg, train_set, val_set, resume)


def train(cfg: TrainConfig, train_set: PairSet, val_set: PairSet | None, resume: str | Path | None = None) -> Path:
    """Fine-tune on `train_set`, validating on `val_set`; returns the run folder (rank 0's)."""
    d = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    run_dir = Path(resume) if resume is not None else None
    if run_dir is not None:
        backbone = load_finetuned(run_dir / "last.pt", device=d.device, precision=cfg.precision)
        saved = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)
        if backbone.extra.get("step") != saved["step"]:
            raise FinetuneError(
                f"{run_dir}: last.pt (step {backbone.extra.get('step')}) and {STATE_FILE} "
                f"(step {saved['step']}) disagree; the run was interrupted while saving."
            )
    else:
        backbone = build_backbone(cfg, d.device)
        saved = None
    cfg = resolve(cfg, backbone)
    split = SplitBackbone(backbone, cfg.trainable_blocks)
    model = DistributedDataParallel(split, broadcast_buffers=False) if d.world > 1 else split
    prep = backbone_preprocess(backbone, cfg.image_size, cfg.resize)

    pairs = training_pairs(train_set)
    val_set = val_subset(val_set, cfg.val_limit, cfg.seed) if val_set is not None else None
    if val_set is not None and not val_set.pairs:
        raise FinetuneError(
            f"validation split {val_set.split!r} of {val_set.dataset} has no pairs with keypoints; "
            "choose another --val-split, or --val-split none"
        )
    batches_per_epoch = len(epoch_batches(len(pairs), cfg.batch_size, 0, cfg.seed, d.rank, d.world))
    total = cfg.epochs * batches_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.05 * total))
    optimizer = make_optimizer(split, cfg.lr, cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup))
    cache = None
    if cfg.cache_frozen:
        images = PairSet(train_set.dataset, train_set.split, train_set.root, pairs).unique_images()
        cache = FrozenCache(split, images, prep, 2 * cfg.batch_size, cfg.num_workers, cfg.progress and d.main)
    dataset = TrainingPairs(pairs, prep, cfg.augment, cfg.seed, load_images=cache is None)

    step, best, val_key = 0, -math.inf, f"val_pck@{cfg.val_alpha:g}"
    if saved is not None:
        step, best = restore_training_state(saved, optimizer, schedule)
    log = None
    if d.main:
        if run_dir is None:
            run_dir = new_run_dir(cfg.output_dir, [backbone.name])
        write_json(run_dir / "config.json", {
            "config": asdict(cfg),
            "resolved": {
                "weights": str(backbone.weights_path), "image_size": [prep.height, prep.width], "grid": list(prep.grid),
                "train_pairs": len(pairs), "val_pairs": len(val_set.pairs) if val_set else 0, "processes": d.world,
                "global_batch": cfg.batch_size * d.world, "steps": total, "warmup_steps": warmup,
                "trainable_parameters": sum(p.numel() for p in split.parameters() if p.requires_grad),
                "frozen_parameters": sum(p.numel() for p in split.parameters() if not p.requires_grad),
            },
            "environment": environment(backbone.device),
        })  # fmt: skip
        log = TrainLog.resume(run_dir, val_key, step) if saved is not None else TrainLog(run_dir, val_key)
        print(
            f"fine-tuning {backbone.name}: last {cfg.trainable_blocks} blocks, scale {cfg.logit_scale}, "
            f"{len(pairs)} pairs, {total} steps of {cfg.batch_size * d.world} pairs; run folder {run_dir}"
        )

    def checkpoint(epoch: int, validate_now: bool) -> None:
        nonlocal best
        val = {}
        if d.main and validate_now and val_set is not None:
            val = validate(backbone, val_set, cfg)
            log.add({"step": step, "epoch": epoch, **val})
            if val[val_key] > best:
                best = val[val_key]
                save_model(run_dir, "best", backbone, cfg, step, epoch, val)
        if d.main:
            save_model(run_dir, "last", backbone, cfg, step, epoch, val)
            save_training_state(run_dir, step, best, optimizer, schedule)
            log.write(plot=True)
        barrier(d)

    if step == 0 and val_set is not None and d.main:  # the starting point of the PCK curve
        log.add({"step": 0, "epoch": 0, **validate(backbone, val_set, cfg)})
        log.write(plot=False)
    barrier(d)
    bar = tqdm(total=total, initial=step, desc="fine-tuning", unit="step", disable=not (cfg.progress and d.main))
    interval = {"loss": 0, "grad_norm": 0, "steps": 0, "t0": time.perf_counter()}
    stop = cfg.stop_after if cfg.stop_after is not None else total
    while step < min(stop, total):
        epoch, skip = divmod(step, batches_per_epoch)
        batches = epoch_batches(len(pairs), cfg.batch_size, epoch, cfg.seed, d.rank, d.world)[skip:]
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            pin_memory=backbone.device.type == "cuda",
        )
        for batch in loader:
            loss, grad_norm = train_step(model, split, cache, batch, cfg, optimizer)
            schedule.step()
            step += 1
            interval["loss"] += loss
            interval["grad_norm"] += grad_norm
            interval["steps"] += 1
            if step % cfg.log_every == 0 or step % batches_per_epoch == 0 or step == stop:
                n = interval["steps"]
                mean_loss, mean_norm = all_mean([interval["loss"].item() / n, interval["grad_norm"].item() / n], d)
                seconds = time.perf_counter() - interval["t0"]
                lr = schedule.get_last_lr()[0]
                if d.main:
                    log.add(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": mean_loss,
                            "lr": lr,
                            "grad_norm": mean_norm,
                            "pairs_per_s": n * cfg.batch_size * d.world / seconds,
                        }
                    )
                    bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}")
                interval = {"loss": 0, "grad_norm": 0, "steps": 0, "t0": time.perf_counter()}
            bar.update(1)
            end_of_epoch = step % batches_per_epoch == 0
            if step % cfg.val_every == 0 or end_of_epoch or step == stop:
                paused = time.perf_counter()
                checkpoint(epoch, validate_now=step % cfg.val_every == 0 or end_of_epoch)
                interval["t0"] += time.perf_counter() - paused  # pairs/s counts training only
            if step >= stop:
                break
    bar.close()
    if d.main:
        print(f"done at step {step}/{total}: {run_dir}" + (f"; best {val_key} {best:.2f}" if best > -math.inf else ""))
    return run_dir


def train_step(
    model: nn.Module,
    split: SplitBackbone,
    cache: FrozenCache | None,
    batch: dict,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
) -> tuple[Tensor, Tensor]:
    """One optimisation step on one batch; returns (loss, gradient norm before clipping) as
    tensors on the device (reading them waits for the GPU: done only when logging)."""
    device = split.backbone.device
    state = (
        cache.states(batch["keys"], device)
        if cache is not None
        else split.trunk(batch["images"].to(device, non_blocking=True))
    )
    src_feats, trg_feats = model(state).chunk(2)
    loss = correspondence_loss(
        src_feats,
        trg_feats,
        batch["src_pq"].to(device),
        batch["trg_pq"].to(device),
        batch["mask"].to(device),
        cfg.logit_scale,
        cfg.soft_sigma,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in split.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    optimizer.step()
    return loss.detach(), norm
