"""A fine-tuning run's folder: its checkpoints, its log, and reading it back to resume.

best.pt and last.pt are fine-tuned checkpoints (models/finetuned.py): the trained blocks and head
only, on top of the base weights the run started from (every weight with --self-contained, or
when the base was random). Their `extra` holds the training settings, step, epoch and validation
PCK. last.pt also holds the training state (optimiser, schedule, gradient scaler, RNG, best so far)
in the same file, so that it is one atomic unit: a run killed at any moment leaves the previous
last.pt or the new one, never a model and a state out of step. config.json and train_log.csv are
written by semcorr/runs/folders.py.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from finetuning import FinetuneError
from models import Backbone, CheckpointError, get_spec, save_finetuned
from semcorr.config.settings import TrainSettings, as_record, from_record
from semcorr.runs import folders

LAST, BEST = "last.pt", "best.pt"
TRAIN_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "pairs_per_s")


def save_checkpoint(
    path: Path,
    backbone: Backbone,
    settings: TrainSettings,
    *,
    base: dict | None,
    trained: set[str],
    progress: dict,
    self_contained: bool = False,
    training: dict | None = None,
) -> None:
    """best.pt / last.pt: the trained weights on top of `base` (all weights when self-contained or
    base is None), the settings and `progress` (step, epoch, validation PCK); `training`: last.pt's state."""
    extra = {"finetune": {**as_record(settings), "image_size": list(settings.image_size), "resize": settings.resize},
             **progress}  # fmt: skip
    save_finetuned(backbone, path, extra, base=base, trained=trained, self_contained=self_contained, training=training)


def training_state(
    *,
    step: int,
    epoch: int,
    best: float,
    best_step: int | None,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
) -> dict:
    """What --resume needs on top of the model: optimiser, schedule, scaler, RNG, and the best so far."""
    return {
        "step": step,
        "epoch": epoch,
        "best": best,
        "best_step": best_step,
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_training_state(
    saved: dict,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
) -> None:
    """Load what training_state saved into the optimiser, schedule, scaler and RNGs."""
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["scheduler"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    if torch.cuda.is_available() and saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])


def read_training_state(run_dir: Path, backbone: Backbone) -> dict:
    """The training state inside the last.pt already loaded as `backbone`."""
    saved = backbone.training_state
    if not isinstance(saved, dict) or "step" not in saved or "optimizer" not in saved:
        raise FinetuneError(f"cannot resume from {run_dir}: its last.pt holds no training state finetune.py wrote")
    return saved


class TrainLog:
    """Rows of train_log.csv (training rows: loss, lr; validation rows: PCK), rewritten atomically; and, with
    `tensorboard`, the same numbers (and pictures) as TensorBoard event files in the run folder."""

    def __init__(
        self,
        run_dir: Path,
        val_column: str,
        rows: list[dict] | None = None,
        tensorboard: bool = False,
        purge_step: int | None = None,
    ):
        self.run_dir, self.val_column, self.rows = run_dir, val_column, rows or []
        self.board = event_writer(run_dir, purge_step) if tensorboard else None

    @classmethod
    def resume(cls, run_dir: Path, val_column: str, step: int, tensorboard: bool = False) -> TrainLog:
        """The log of an interrupted run, without rows (nor TensorBoard events) written after its last checkpoint."""
        run = folders.read_run(run_dir, kinds=("finetune",))
        rows = run.read("train_log").to_dict("records") if run.has("train_log") else []
        return cls(run_dir, val_column, [r for r in rows if r["step"] <= step], tensorboard, purge_step=step + 1)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        scalars = [(board_tag(k), v) for k, v in row.items() if k not in ("step", "epoch") and not pd.isna(v)]
        self.to_board(lambda board: [board.add_scalar(tag, value, row["step"]) for tag, value in scalars])

    def add_picture(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) picture in TensorBoard's images at `step` (nothing without TensorBoard)."""
        self.to_board(lambda board: board.add_image(tag, image, step, dataformats="HWC"))

    def to_board(self, write: Callable[[object], object]) -> None:
        """TensorBoard events are a copy of train_log.csv: one that cannot be written (a full disk) stops them with a
        warning, not the run."""
        if self.board is None:
            return
        try:
            write(self.board)
        except (OSError, RuntimeError) as err:
            warnings.warn(
                f"TensorBoard events in {self.run_dir} stop here ({err}); train_log.csv has every number", stacklevel=2
            )
            self.board = None

    def close(self) -> None:
        self.to_board(lambda board: board.close())

    def table(self) -> pd.DataFrame:
        table = pd.DataFrame(self.rows)
        first = [c for c in TRAIN_COLUMNS if c in table]
        return table[first + [c for c in table if c not in first]]

    def write(self) -> None:
        folders.write_file(self.run_dir, "finetune", "train_log", self.table())
        self.to_board(lambda board: board.flush())

    def plot(self, best_step: int | None = None) -> None:
        from semcorr.viz import charts, viz2d

        if self.rows:
            figure = charts.training_curves(self.table(), self.val_column, title=self.run_dir.name, best_step=best_step)
            viz2d.save_plot(figure, self.run_dir / folders.PICTURES["finetune"])


def board_tag(column: str) -> str:
    """A train_log.csv column as a TensorBoard tag: loss -> train/loss, val_pck@0.1_kpt -> validation/pck@0.1 per
    keypoint."""
    if column.startswith("val_"):
        name = column.removeprefix("val_")
        return f"validation/{name.removesuffix('_kpt')} per {'keypoint' if name.endswith('_kpt') else 'image'}"
    return f"train/{column}"


def event_writer(run_dir: Path, purge_step: int | None = None):
    """A TensorBoard SummaryWriter of the run folder (`purge_step`: a resumed run's events from that step on are
    dropped, as its log's rows are)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FinetuneError(
            "TensorBoard is not installed: pip install tensorboard (requirements.txt), or give --no-tensorboard"
        ) from None
    quiet_writer_threads()
    return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)


def quiet_writer_threads() -> None:
    """TensorBoard's writer thread keeps a failed write for the writer's next call (TrainLog.to_board reports it),
    then re-raises it: its own traceback is not printed."""
    if getattr(threading.excepthook, "quiet_writer_threads", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ != "_AsyncWriterThread":
            previous(args)

    hook.quiet_writer_threads = True
    threading.excepthook = hook


def known_model(name: str) -> str:
    """The canonical name of a model name or alias; FinetuneError listing the choices if unknown."""
    try:
        return get_spec(name).name
    except ValueError as err:
        raise FinetuneError(str(err)) from None


def read_resume_folder(run_dir: Path, model: str | None) -> TrainSettings:
    """The settings of the run in `run_dir`, checked to be resumable (and of `model` when given)."""
    missing = [n for n in (folders.CONFIG, LAST) if not (run_dir / n).is_file()]
    if missing:
        raise FinetuneError(
            f"cannot resume from {run_dir}: {', '.join(missing)} missing. Give the folder of a run of "
            "finetuning/finetune.py that saved at least one checkpoint (results/finetune/<timestamp>_finetune_<model>_.../)."
        )
    try:
        settings = from_record(TrainSettings, folders.read_run(run_dir, kinds=("finetune",)).config["settings"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FinetuneError(
            f"cannot resume from {run_dir}: its config.json is not one finetuning/finetune.py wrote "
            f"({type(err).__name__}: {err}); start a new run instead."
        ) from None
    if model is not None and known_model(model) != settings.backbone.model:
        raise FinetuneError(
            f"{run_dir} is a fine-tuning run of {settings.backbone.model}, not {known_model(model)}: resume it without "
            f"--model (or with --model {settings.backbone.model}), or start a new run."
        )
    return settings


def record_resume(run_dir: Path, given: dict) -> None:
    """Append this invocation (command line, time, the settings given again) to config.json's resumes."""
    run = folders.read_run(run_dir, kinds=("finetune",))
    entry = {"command": " ".join(sys.argv), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "given": given}
    folders.write_config(run_dir, "finetune", {**run.config, "resumes": [*run.config.get("resumes", []), entry]})


def checkpoint_error(path: Path, err: Exception) -> FinetuneError:
    """A clear error for a checkpoint --resume cannot read (truncated by a full disk, or foreign)."""
    reason = str(err).splitlines()[0] if isinstance(err, CheckpointError | ValueError) else repr(err)
    return FinetuneError(f"cannot resume from {path.parent}: {path.name} is unreadable ({reason})")
