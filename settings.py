"""Every setting of a run as plain data: the configs that the scripts build and config.json records.

Nothing heavy is imported here, so that every script parses its arguments (and answers --help)
before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent

PCK_NORMS = ("bbox", "image", "kpbox")
AVERAGINGS = {
    "per_image": "mean over image pairs of each pair's PCK",
    "per_keypoint": "pooled over all keypoints",
}
MATCHERS = ("argmax", "wsoftargmax")
DESCRIPTORS = ("nearest", "bilinear")
RESIZE_MODES = ("squash", "pad")
DEFAULT_THRESHOLDS = (0.05, 0.1, 0.2)
GRID_WINDOWS = (3, 5, 7, 9, 11)  # the soft-argmax grid search's default windows K
GRID_TEMPERATURES = (0.05, 0.1, 0.2, 0.5, 1.0)  # and temperatures T


@dataclass
class MatchConfig:
    """How similarity maps become predictions."""

    matcher: str = "argmax"
    window: int = 5
    temperature: float = 0.1
    descriptor: str = "nearest"


@dataclass
class EvalConfig:
    """Every setting of an evaluation run (recorded verbatim in config.json)."""

    model: str = "dinov2"
    weights: str | None = None  # None: the official file under models/<family>/weights/
    checkpoint: str | None = None  # a fine-tuned checkpoint (names its own model; excludes weights)
    layer: int | None = None
    dataset: str = "spair"
    data_root: str | None = None
    split: str = "test"
    layout: str = "large"
    limit: int | None = None
    image_size: list[int] | None = None  # [side] or [H, W]; None: the backbone's default
    resize: str | None = None  # "squash" | "pad"; None: as trained (fine-tuned checkpoints), else squash
    match: MatchConfig = field(default_factory=MatchConfig)
    match_params: str | None = None  # the grid search file window/temperature came from (--params)
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    pck_norm: str | None = None  # None: the dataset's standard normalisation
    batch_size: int = 16
    num_workers: int = 2
    device: str = "auto"
    cache_dir: str | None = "cache/features"  # None: no disk cache
    output_dir: str = "results"
    save_vis: int = 0  # pictures of the N best and N worst pairs, in <run>/vis/
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class Augment:
    """Augmentations that keep every source / target keypoint correspondence valid.

    flip: mirror both images of a pair together (probability 0.5). Mirroring one image alone would
      pair a left keypoint with a right one; mirroring both keeps keypoint i of the source on the
      same physical point as keypoint i of the target.
    jitter: photometric strength s: brightness, contrast and saturation each scaled by a factor
      drawn from [1 - s, 1 + s], independently for the two images (pixels do not move).
    """

    flip: bool = False
    jitter: float = 0.0

    @property
    def active(self) -> bool:
        return self.flip or self.jitter > 0


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
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
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


COMMON_GRIDS = ("finest", "coarsest", "first")
COMBINE_MODES = ("similarity", "features")


@dataclass
class MemberSpec:
    """One ensemble member as written on the command line: MODEL[:WEIGHTS][:WEIGHT][@SIZE]."""

    model: str
    weights: str | None = None  # a weights file or a fine-tuned checkpoint of `model`
    weight: float | None = None
    image_size: list[int] | None = None

    def __str__(self) -> str:
        parts = [self.model, *([self.weights] if self.weights else [])]
        parts += [f"{self.weight:g}"] if self.weight is not None else []
        return ":".join(parts) + ("@" + "x".join(map(str, self.image_size)) if self.image_size else "")


@dataclass
class EnsembleConfig:
    """How several members make one prediction (and, for a weight search, how weights are searched)."""

    members: list[MemberSpec]
    common_grid: str = "finest"  # whose patch grid the similarity maps are resized to
    combine: str = "similarity"  # "similarity": weighted sum of maps; "features": concatenated features
    weight_step: float = 0.1  # weight search: spacing of the simplex grid
    select_by: str = "per_image"  # weight search: the averaging that picks the best weights
