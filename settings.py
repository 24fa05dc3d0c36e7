"""Every setting of a run as plain data: the configs that the scripts build and config.json records,
and the named protocols (PROTOCOLS) that preset them.

Nothing heavy is imported here, so that every script parses its arguments (and answers --help)
before torch loads.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields, replace
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
RESAMPLES = ("pil-bicubic", "torch-bilinear")
COORDINATES = ("centre", "corner")
WINDOW_BORDERS = ("shrink", "clip")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FEATURE_DTYPES = ("fp16", "fp32")
BUILDS = ("meta", "original")
SCHEDULES = ("warmup-cosine", "constant")
DECAY_GROUPS = ("matrices", "all")
SELECTIONS = ("best", "last")


@dataclass
class MatchConfig:
    """How similarity maps become predictions (window_border None: as the protocol says)."""

    matcher: str = "argmax"
    window: int = 5
    temperature: float = 0.1
    descriptor: str = "nearest"
    window_border: str | None = None  # "shrink" | "clip"


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
    rescale_annotations: bool = False  # scale annotations to image files of another size (else: an error)
    image_size: list[int] | None = None  # [side] or [H, W]; None: the backbone's default
    resize: str | None = None  # "squash" | "pad"; None: as trained (fine-tuned checkpoints), else squash
    match: MatchConfig = field(default_factory=MatchConfig)
    match_params: str | None = None  # the grid search file window/temperature came from (--params)
    params_setting: dict | None = None  # the model, image size and patch grid that grid search ran with
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
    # the protocol, and its conventions (None: as the protocol says; see Conventions)
    protocol: str = "default"
    resample: str | None = None
    coordinates: str | None = None
    pf_shift: bool | None = None
    clamp_keypoints: bool | None = None
    precision: str | None = None
    feature_dtype: str | None = None
    build: str | None = None


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
    """Every setting of a fine-tuning run (recorded in config.json and in each checkpoint).

    None: the model's preset (trainable_blocks, logit_scale) or the protocol's value (Training).
    """

    model: str | None = "dinov2"  # None with a checkpoint: the checkpoint's model
    weights: str | None = None  # None: the official file under models/<family>/weights/
    checkpoint: str | None = None  # start from this project's checkpoint instead
    trainable_blocks: int | None = None
    logit_scale: float | None = None
    soft_sigma: float = 0.0  # > 0: Gaussian soft targets of this std (in patches) instead of one-hot
    dataset: str = "spair"
    data_root: str | None = None
    layout: str = "large"
    rescale_annotations: bool = False  # scale annotations to image files of another size (else: an error)
    train_split: str = "trn"
    val_split: str | None = "val"  # None: no validation
    val_data: str | None = None  # the validation pairs' root (a custom pairs file); None: data_root
    limit: int | None = None  # train on the first N pairs
    val_limit: int | None = 1000  # validate on a fixed random subset of N pairs (None: all)
    image_size: list[int] | None = None  # [side] or [H, W]; None: the backbone's default
    resize: str = "squash"
    flip: bool = False
    jitter: float = 0.0
    cache_frozen: bool = False  # keep each image's frozen-trunk output (only without augmentation)
    epochs: int | None = None
    batch_size: int | None = None  # pairs per step per process
    lr: float | None = None
    weight_decay: float | None = None
    decay: str | None = None  # weight decay on "matrices" (not norms and biases) or on "all" trainable tensors
    schedule: str | None = None  # "warmup-cosine" | "constant"
    warmup_steps: int | None = None  # None with warmup-cosine: 5% of all steps
    grad_clip: float | None = None  # max gradient norm; 0: no clipping
    select: str | None = None  # the checkpoint to keep as best.pt: the "best" validation PCK, or the "last"
    train_neck: bool | None = None  # SAM: train the neck with the last blocks
    self_contained: bool = False  # checkpoints hold every weight, not only the trained ones
    val_every: int = 1000  # steps between validations and `last` checkpoints (and at each epoch end)
    val_alpha: float = 0.1  # PCK threshold that picks `best`
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    pck_norm: str | None = None  # None: the protocol's normalisation for the dataset
    log_every: int = 10
    stop_after: int | None = None  # stop (saving `last`) after this global step; the schedule is unchanged
    num_workers: int = 4
    device: str = "auto"
    output_dir: str = "results/finetune"
    seed: int = 0
    progress: bool = True
    protocol: str = "default"
    resample: str | None = None
    coordinates: str | None = None
    pf_shift: bool | None = None
    clamp_keypoints: bool | None = None
    precision: str | None = None
    build: str | None = None

    @property
    def augment(self) -> Augment:
        return Augment(self.flip, self.jitter)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# --- protocols: the conventions of an evaluation or a fine-tuning run, as one named table ------------


@dataclass(frozen=True)
class Conventions:
    """How images, coordinates, matching and PCK are handled; a protocol fixes all of them at once."""

    resample: (
        str  # "pil-bicubic": PIL bicubic on the 8-bit image; "torch-bilinear": the normalised tensor, no antialias
    )
    coordinates: str  # "centre": integer pixel coordinates are pixel centres; "corner": 0 is the image's edge
    pf_shift: bool  # PF-Pascal / PF-Willow MATLAB (1-based) coordinates shifted by -1
    clamp_keypoints: bool  # keypoints outside their image moved into it
    window_border: str  # soft-argmax window at the border: "shrink" symmetrically, or "clip"
    pck_norms: dict[str, str]  # dataset -> threshold length L
    common_grid: str  # ensembles: the grid similarity maps meet on
    feature_dtype: str  # features in memory and in the cache
    build: str  # backbones as Meta's hub builds them ("meta"), or as the original project did
    precision: dict[str, str]  # backbone family -> autocast precision


@dataclass(frozen=True)
class Training:
    """How fine-tuning optimises; a protocol fixes all of it at once."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    decay: str
    schedule: str
    warmup_steps: int | None  # None: 5% of the steps
    grad_clip: float
    select: str
    train_neck: bool


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    conventions: Conventions
    training: Training


PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol(
        "default",
        "this toolkit's corrected conventions",
        Conventions(
            resample="pil-bicubic",
            coordinates="centre",
            pf_shift=True,
            clamp_keypoints=True,
            window_border="shrink",
            pck_norms={"spair": "bbox", "pf-pascal": "image", "pf-willow": "kpbox", "custom": "image"},
            common_grid="finest",
            feature_dtype="fp16",
            build="meta",
            precision={"dinov2": "auto", "dinov3": "auto", "sam": "auto"},
        ),
        Training(
            epochs=1, batch_size=8, lr=1e-4, weight_decay=0.01, decay="matrices", schedule="warmup-cosine",
            warmup_steps=None, grad_clip=1.0, select="best", train_neck=True,
        ),
    ),
    "original": Protocol(
        "original",
        "the original project's conventions (PhilaMaster/semantic_correspondence), to reproduce its numbers",
        Conventions(
            resample="torch-bilinear",
            coordinates="corner",
            pf_shift=False,
            clamp_keypoints=False,
            window_border="clip",
            pck_norms={"spair": "bbox", "pf-pascal": "image", "pf-willow": "image", "custom": "image"},
            common_grid="coarsest",
            feature_dtype="fp32",
            build="original",
            precision={"dinov2": "fp32", "dinov3": "fp32", "sam": "fp16"},
        ),
        Training(
            epochs=1, batch_size=1, lr=1e-4, weight_decay=0.01, decay="all", schedule="constant",
            warmup_steps=0, grad_clip=0.0, select="last", train_neck=False,
        ),
    ),
}  # fmt: skip
# What the original protocol never ran: an override of these leaves it (the run is labelled so)
ORIGINAL_FIXED = {"resize": "squash", "descriptor": "nearest", "flip": False, "jitter": 0.0, "soft_sigma": 0.0}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocol_presets(cfg) -> dict[str, object]:
    """Every value the protocol of `cfg` (an EvalConfig or TrainConfig) sets, by config field name."""
    protocol = get_protocol(cfg.protocol)
    presets = {**asdict(protocol.conventions), **asdict(protocol.training)}
    presets["pck_norm"] = protocol.conventions.pck_norms.get(getattr(cfg, "dataset", "custom"), "image")
    del presets["pck_norms"]
    return presets


def resolve_protocol(cfg, names: tuple[str, ...]) -> tuple[object, dict]:
    """Fill the None fields `names` of an EvalConfig / TrainConfig (window_border: of its .match) from
    its protocol; `precision` stays None when not given (the protocol sets it per backbone family).

    Returns the filled config and its protocol record for config.json: name, every resolved setting,
    and the explicit settings that differ from the protocol's ("overrides"). Under the original
    protocol each override is warned about, naming the part that leaves it, when the config is
    resolved the first time (a resolved config passes through the flow's steps without a repeat).
    """
    presets = protocol_presets(cfg)
    given = {name: getattr(cfg.match if name == "window_border" else cfg, name) for name in names}
    values = {name: presets[name] if value is None and name != "precision" else value for name, value in given.items()}
    overrides = {name: value for name, value in given.items() if value is not None and value != presets[name]}
    if cfg.protocol == "original":
        family = _family(cfg.model)
        if given.get("precision") is not None and family and given["precision"] == presets["precision"][family]:
            overrides.pop("precision")
        for name, value in ORIGINAL_FIXED.items():
            holder = cfg.match if name == "descriptor" and hasattr(cfg, "match") else cfg
            used = getattr(holder, name, value)
            if used not in (None, value):
                overrides[name] = used
        first_time = any(value is None for name, value in given.items() if name != "precision")
        for name, value in overrides.items() if first_time else ():
            original = presets.get(name, ORIGINAL_FIXED.get(name))
            warnings.warn(
                f"{name}={value!r} leaves the original protocol (it used {original!r}): the run is recorded as "
                "the original protocol with this override, and no published number stands beside it",
                stacklevel=3,
            )
    border = values.pop("window_border", None)
    resolved = replace(cfg, **values)
    if border is not None:
        resolved = replace(resolved, match=replace(cfg.match, window_border=border))
    settings = {**values, **({"window_border": border} if border else {})}
    if "precision" in settings and settings["precision"] is None:
        settings["precision"] = presets["precision"]
    protocol = get_protocol(cfg.protocol)
    return resolved, {"name": protocol.name, "description": protocol.description, "settings": settings,
                      "overrides": overrides}  # fmt: skip


def _family(model: str | None) -> str | None:
    """The backbone family of a model name ("dinov2_vitl14" -> "dinov2"), None if unknown."""
    for family in ("dinov2", "dinov3", "sam"):
        if model and model.lower().startswith(family):
            return family
    return None


EVAL_CONVENTIONS = (
    "resample", "coordinates", "pf_shift", "clamp_keypoints", "window_border", "pck_norm", "feature_dtype", "build",
    "precision",
)  # fmt: skip
TRAIN_CONVENTIONS = (
    "resample", "coordinates", "pf_shift", "clamp_keypoints", "pck_norm", "build", "precision", "epochs",
    "batch_size", "lr", "weight_decay", "decay", "schedule", "warmup_steps", "grad_clip", "select", "train_neck",
)  # fmt: skip


COMMON_GRIDS = ("finest", "coarsest", "first")
COMBINE_MODES = ("similarity", "features")


@dataclass
class MemberSpec:
    """One ensemble member as written on the command line: MODEL[:WEIGHTS][:WEIGHT][@SIZE]."""

    model: str
    weights: str | None = None  # a weights file or a fine-tuned checkpoint of `model`
    weight: float | None = None
    image_size: list[int] | None = None

    @property
    def label(self) -> str:
        """Short, for figures: 'dinov3 (best.pt) @512'."""
        name = f" ({Path(self.weights).name})" if self.weights else ""
        return self.model + name + ("@" + "x".join(map(str, self.image_size)) if self.image_size else "")

    def __str__(self) -> str:
        parts = [self.model, *([self.weights] if self.weights else [])]
        parts += [f"{self.weight:g}"] if self.weight is not None else []
        return ":".join(parts) + ("@" + "x".join(map(str, self.image_size)) if self.image_size else "")


@dataclass
class EnsembleConfig:
    """How several members make one prediction (and, for a weight search, how weights are searched)."""

    members: list[MemberSpec]
    common_grid: str | None = None  # whose patch grid the similarity maps are resized to (None: the protocol's)
    combine: str = "similarity"  # "similarity": weighted sum of maps; "features": concatenated features
    weight_step: float = 0.1  # weight search: spacing of the simplex grid
    select_by: str = "per_image"  # weight search: the averaging that picks the best weights
