"""Every setting of a run as frozen, plain data: what the scripts resolve once (semcorr/cli/resolve.py)
and hand to the library complete, and what config.json records.

Each default is written here once; the command-line flags show them in their help. Nothing heavy is
imported, so that every script parses its arguments (and answers --help) before torch loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# --- the names each setting may take ------------------------------------------------------------------

PCK_NORMS = ("bbox", "image", "kpbox")
AVERAGINGS = {
    "per_image": "mean over image pairs of each pair's PCK",
    "per_keypoint": "pooled over all keypoints",
}
DESCRIPTORS = ("nearest", "bilinear")
RESIZE_MODES = ("squash", "pad")
RESAMPLE_METHODS = ("pil-bicubic", "pil-lanczos", "torch-bilinear")
COORDINATE_CONVENTIONS = ("centre", "corner", "canvas")
PAD_FILLS = ("mean", "black")  # what surrounds a padded image: the ImageNet mean (zero once normalised), or black
FLIP_ALIGN_MODES = ("off", "mutual-nn", "mask")
WINDOW_BORDERS = ("shrink", "clip")
PRECISION_NAMES = ("auto", "fp32", "bf16", "fp16")
FEATURE_DTYPE_NAMES = ("fp16", "fp32")
BUILDS = ("meta", "original")
SCHEDULES = ("warmup-cosine", "constant")
DECAY_GROUPS = ("matrices", "all")
SELECTIONS = ("best", "last")
COMMON_GRIDS = ("finest", "coarsest", "first")
COMBINE_MODES = ("similarity", "features")
FAMILIES = ("dinov2", "dinov3", "sam")
DEFAULT_THRESHOLDS = (0.05, 0.1, 0.2)
BENCHMARK_THRESHOLDS = (0.05, 0.1, 0.15)  # a run of several benchmarks, unless --thresholds: as papers print them
GRID_WINDOWS = (3, 5, 7, 9, 11)  # the soft-argmax grid search's default windows K
GRID_TEMPERATURES = (0.05, 0.1, 0.2, 0.5, 1.0)  # and temperatures T
DEFAULT_MODEL = "dinov2"
# The datasets with several pair lists (--layout), each dataset's default first; the others have one.
LAYOUTS = {"spair": ("large", "small"), "ap10k": ("intra-species", "cross-species", "cross-family")}


# --- an evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchSettings:
    """How similarity maps become predictions: the matcher (matching_strategies.MATCHERS) and its parameters."""

    matcher: str = "argmax"
    window: int = 5  # soft-argmax window K, in patches (odd)
    temperature: float = 0.1  # soft-argmax temperature T
    descriptor: str = "nearest"  # source descriptor: the keypoint's patch, or bilinear between patch centres
    window_border: str = "shrink"  # a window at the grid's border: "shrink" symmetrically, or "clip"
    sigma: float = 5.0  # the Gaussian matcher's kernel width, in patches


@dataclass(frozen=True)
class BackboneSettings:
    """One backbone as models.create_backbone builds it; every value concrete."""

    model: str = DEFAULT_MODEL  # a registered name or alias (models/registry.py)
    weights: str | None = None  # None: the official file under models/<family>/weights/; "random": smoke tests
    checkpoint: str | None = None  # a fine-tuned checkpoint instead (it names its own model)
    layer: int | None = None  # the block whose output is the feature map (None: the last, or SAM's neck)
    build: str = "meta"  # as Meta's hub builds it, or as the original project did ("original")
    precision: str = "fp32"  # autocast: fp32 (none), bf16 or fp16
    device: str = "cpu"
    final_norm: bool = True  # DINO: the features pass the final LayerNorm (False: the block's raw output)


@dataclass(frozen=True)
class MemberSettings:
    """One backbone of a run and how its images become features (a single model is one member of weight 1)."""

    backbone: BackboneSettings
    image_size: tuple[int, int]  # the network input (H, W), multiples of the patch size
    resize: str = "squash"  # "squash" (aspect ignored) or "pad" (aspect kept, padded)
    weight: float = 1.0  # its share of the summed similarity (weights sum to 1)


@dataclass(frozen=True)
class DataSettings:
    """Which pairs, read how, scored how."""

    dataset: str = "spair"
    root: str | None = None  # None: the folder download.py fills; for custom, the pairs file
    split: str = "test"
    layout: str | None = None  # the dataset's pair list (LAYOUTS); None: its default (none if it has one list)
    limit: int | None = None  # the first N pairs only
    pf_shift: bool = True  # PF-Pascal / PF-Willow 1-based (MATLAB) coordinates shifted by -1
    clamp_keypoints: bool = True  # keypoints outside their image moved into it
    rescale_annotations: bool = False  # annotations scaled to image files of another size (else: an error)
    pck_norm: str = "bbox"  # the threshold length L (pck.NORM_DESCRIPTIONS)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS  # PCK alphas
    strict: bool = False  # a keypoint is correct when its distance is < alpha L (True), or <= alpha L
    kap: bool = False  # also KAP (semcorr/engine/kap.py: every source-visible keypoint's map scored again)


@dataclass(frozen=True)
class ExtractSettings:
    """How every member's images are read, resized and stored as features."""

    resample: str = "pil-bicubic"  # PIL bicubic or Lanczos on the 8-bit image, or the original's torch bilinear
    coordinates: str = "centre"  # integer pixel coordinates are pixel centres, 0 is the image's edge, or "canvas"
    pad_fill: str = "mean"  # resize "pad": the ImageNet mean (zero once normalised) around the image, or black
    feature_dtype: str = "fp16"  # features in memory and in the cache
    batch_size: int = 16  # images per backbone forward pass
    num_workers: int = 2  # image decoding processes
    cache_dir: str | None = "cache/features"  # None: no disk cache
    feature_memory_gb: float | None = None  # features held in memory; beyond, read per image from the disk cache
    # (None: 1 GB on the CPU, half the free memory of a GPU: helper_functions.feature_budget)


@dataclass(frozen=True)
class OutputSettings:
    """Where a run writes, and how it reports."""

    output_dir: str = "results"  # a new timestamped folder is made inside
    save_vis: int = 0  # pictures of the N best and N worst pairs, in <run>/vis/
    seed: int = 0
    progress: bool = True
    baseline: str | None = None  # an evaluation's folder to compare with (None: the zero-shot run of the setting)


@dataclass(frozen=True)
class EnsembleSettings:
    """How several members' similarity maps meet."""

    common_grid: str = "finest"  # whose patch grid the maps are resized to, and pixels computed from
    combine: str = "similarity"  # "similarity": weighted sum of maps; "features": concatenated features


@dataclass(frozen=True)
class ProtocolRecord:
    """The protocol a run ran and the explicit settings that left it (name -> value)."""

    name: str = "default"
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ParamsRecord:
    """Where --params took K and T from: the grid search file, the alpha, and the setting it searched with."""

    path: str
    alpha: float = 0.1  # the PCK threshold whose best K and T are taken
    searched: dict = field(default_factory=dict)  # model, image_size, grid


@dataclass(frozen=True)
class EvalSettings:
    """Everything an evaluation (one model, or an ensemble of members) runs with, resolved."""

    members: tuple[MemberSettings, ...]
    data: DataSettings = field(default_factory=DataSettings)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    match: MatchSettings = field(default_factory=MatchSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)
    protocol: ProtocolRecord = field(default_factory=ProtocolRecord)
    params: ParamsRecord | None = None
    flip_align: str = "off"  # pose alignment: match a mirrored source too, keep it where its distance is lower
    flip_masks: str | None = None  # --flip-align mask: the folder of the source images' masks

    @property
    def member(self) -> MemberSettings:
        """The one member of a single-model run."""
        if len(self.members) != 1:
            raise ValueError(f"a run of {len(self.members)} members has no single member")
        return self.members[0]


@dataclass(frozen=True)
class Benchmarks:
    """Several benchmarks in one run (--dataset a b c): one evaluation's settings per dataset, each with its own
    threshold, split and layout, the models and matcher the same."""

    runs: tuple[EvalSettings, ...]


@dataclass(frozen=True)
class GridSettings:
    """A grid search of the window soft-argmax's K and T."""

    windows: tuple[int, ...] = GRID_WINDOWS
    temperatures: tuple[float, ...] = GRID_TEMPERATURES
    select_by: str = "per_image"  # the averaging that picks the best cell


@dataclass(frozen=True)
class WeightSearchSettings:
    """A search of the ensemble weights on a simplex grid."""

    step: float = 0.1
    select_by: str = "per_image"


@dataclass(frozen=True)
class PairSettings:
    """match_pair.py: two images, and which source points of them are matched."""

    src: str = ""
    trg: str = ""
    points: tuple[tuple[float, float], ...] | None = None  # source pixels; None: a grid or mutual neighbours
    grid: int = 5  # an N x N grid of source points
    mutual: int | None = None  # the N most similar mutual nearest neighbours instead of a grid
    heatmaps: tuple[int, ...] = ()  # also draw the similarity map of these points


# --- fine-tuning ---------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Optimisation:
    """How fine-tuning optimises; a protocol presets all of it."""

    epochs: int = 1
    batch_size: int = 8  # pairs per step per process
    lr: float = 1e-4
    weight_decay: float = 0.01
    decay: str = "matrices"  # weight decay on "matrices" (not norms and biases) or on "all" trainable tensors
    schedule: str = "warmup-cosine"
    warmup_steps: int | None = None  # None: 5% of all steps
    grad_clip: float = 1.0  # max gradient norm; 0: no clipping
    select: str = "best"  # keep the best validation step as best.pt, or the last
    train_neck: bool = True  # SAM: train the neck with the last blocks


@dataclass(frozen=True)
class TrainSettings:
    """Everything a fine-tuning run trains with, resolved (recorded in config.json and in each checkpoint)."""

    backbone: BackboneSettings
    image_size: tuple[int, int]
    resize: str = "squash"
    trainable_blocks: int = 2  # the last N blocks train (plus the final norm, or SAM's neck)
    logit_scale: float = 10.0  # logits = cosine similarity x scale
    soft_sigma: float = 0.0  # > 0: Gaussian soft targets of this std (in patches) instead of one-hot
    data: DataSettings = field(default_factory=lambda: DataSettings(split="trn"))
    val_split: str | None = "val"  # None: no validation
    val_root: str | None = None  # the validation pairs' root (a custom pairs file); None: data.root
    val_limit: int | None = 1000  # validate on a fixed random subset of N pairs (None: all)
    val_every: int = 1000  # steps between validations and last.pt (and at each epoch end)
    val_alpha: float = 0.1  # the PCK threshold that picks best.pt
    augment: Augment = field(default_factory=Augment)
    cache_frozen: bool = False  # keep each image's frozen-trunk output (only without augmentation)
    optimisation: Optimisation = field(default_factory=Optimisation)
    extract: ExtractSettings = field(default_factory=lambda: ExtractSettings(num_workers=4, cache_dir=None))
    self_contained: bool = False  # checkpoints hold every weight, not only the trained ones
    log_every: int = 10  # steps between train_log.csv rows
    stop_after: int | None = None  # stop (saving last.pt) after this global step; the schedule is unchanged
    tensorboard: bool = True  # TensorBoard event files in the run folder (loss, lr, validation PCK, match pictures)
    output: OutputSettings = field(default_factory=lambda: OutputSettings(output_dir="results/finetune"))
    protocol: ProtocolRecord = field(default_factory=ProtocolRecord)


def dataset_layout(dataset: str, layout: str | None = None) -> str | None:
    """`layout`, else the default pair list of `dataset` (None for a dataset with one list)."""
    return layout or next(iter(LAYOUTS.get(dataset, ())), None)


# --- settings as JSON and back ----------------------------------------------------------------------------


def as_record(settings: object) -> dict:
    """Settings as JSON-ready values (tuples as lists), for config.json and checkpoints."""
    return dataclasses.asdict(settings)


def from_record(cls: type, record: dict) -> object:
    """Settings of dataclass `cls` from what as_record wrote (nested dataclasses and tuples rebuilt);
    unknown keys are an error (a record of another version or kind)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return cls(**{name: _value(hints[name], value) for name, value in record.items()})


def _value(hint: object, value: object) -> object:
    """`value` as type `hint` (a dataclass, a tuple, an optional of either, or plain)."""
    if value is None:
        return None
    options = (
        typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    )
    for option in options or (hint,):
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return from_record(option, value)
        if typing.get_origin(option) is tuple and isinstance(value, list | tuple):
            inner = typing.get_args(option)
            return tuple(_value(inner[0] if inner[-1] is Ellipsis or len(inner) == 1 else inner[i], v)
                         for i, v in enumerate(value))  # fmt: skip
    return value
