"""A fine-tuning run's folder: its checkpoints, its training state, its log, and reading it back to resume.

best.pt and last.pt are fine-tuned checkpoints (models/finetuned.py) whose `extra` holds the training
settings, step, epoch and validation PCK; training_state.pt beside last.pt holds what --resume needs
on top of it. config.json and train_log.csv are written by results.py.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

import plots
import results
from fileio import atomic_torch_save
from finetuning import FinetuneError
from models import Backbone, get_spec, save_finetuned
from settings import TrainConfig
from viz2d import save_plot

STATE_FILE = "training_state.pt"
TRAIN_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "pairs_per_s")


def save_model(
    run_dir: Path, name: str, backbone: Backbone, cfg: TrainConfig, *, step: int, epoch: int, val: dict
) -> None:
    """best.pt / last.pt: the full backbone in its weights' dtype, with the settings (loads with no other flag)."""
    extra = {"finetune": asdict(cfg), "step": step, "epoch": epoch, "val": dict(val)}
    save_finetuned(backbone, run_dir / f"{name}.pt", extra)


def save_training_state(
    run_dir: Path,
    *,
    step: int,
    best: float,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> None:
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


def read_training_state(run_dir: Path) -> dict:
    return torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)


def restore_training_state(
    saved: dict, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler
) -> tuple[int, float]:
    """Load what save_training_state wrote; returns (step, best validation PCK)."""
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if torch.cuda.is_available() and saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved["step"], saved["best"]


class TrainLog:
    """Rows of train_log.csv (training rows: loss, lr; validation rows: PCK), rewritten atomically."""

    def __init__(self, run_dir: Path, val_column: str, rows: list[dict] | None = None):
        self.run_dir, self.val_column, self.rows = run_dir, val_column, rows or []

    @classmethod
    def resume(cls, run_dir: Path, val_column: str, step: int) -> TrainLog:
        """The log of an interrupted run, without rows written after its last checkpoint."""
        run = results.read_run(run_dir, kinds=("finetune",))
        rows = run.read("train_log").to_dict("records") if run.has("train_log") else []
        return cls(run_dir, val_column, [r for r in rows if r["step"] <= step])

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def write(self, plot: bool = False) -> None:
        table = pd.DataFrame(self.rows)
        first = [c for c in TRAIN_COLUMNS if c in table]
        table = table[first + [c for c in table if c not in first]]
        results.write_file(self.run_dir, "finetune", "train_log", table)
        if plot and len(table):
            save_plot(plots.training_curves(table, self.val_column), self.run_dir / results.PICTURES["finetune"])


def known_model(name: str) -> str:
    """The canonical name of a model name or alias; FinetuneError listing the choices if unknown."""
    try:
        return get_spec(name).name
    except ValueError as err:
        raise FinetuneError(str(err)) from None


def read_resume_folder(run_dir: Path, model: str | None) -> TrainConfig:
    """The config of the run in `run_dir`, checked to be resumable (and of `model` when given)."""
    missing = [n for n in (results.CONFIG, "last.pt", STATE_FILE) if not (run_dir / n).is_file()]
    if missing:
        raise FinetuneError(
            f"cannot resume from {run_dir}: {', '.join(missing)} missing. Give the folder of a run of "
            "finetuning/finetune.py that saved at least one checkpoint (results/finetune/<timestamp>_<model>/)."
        )
    try:
        config = results.read_run(run_dir, kinds=("finetune",)).config
        cfg = TrainConfig.from_dict(config.get("args") or config["config"])  # "config": runs before the "kind"
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
