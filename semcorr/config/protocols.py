"""The named protocols: each fixes every convention of a run at once (one row of one table), and a flag
given beside a protocol overrides that part of it (semcorr/cli/resolve.py records it, and warns about it
under a protocol that reproduces another project's numbers). A protocol also starts some settings from
values of its own (`starts`: the matcher, its K and T, the PCK thresholds), which a flag changes without
leaving it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from semcorr.config.settings import Optimisation


@dataclass(frozen=True)
class Conventions:
    """How images, coordinates, matching and PCK are handled."""

    resize: str  # "squash" to the input's shape, or "pad" (aspect kept)
    image_size: int | None  # the input's side (None: each backbone's default)
    resample: str  # "pil-bicubic" / "pil-lanczos" on the 8-bit image; "torch-bilinear": the normalised tensor
    pad_fill: str  # "pad": the ImageNet mean around the image (zero once normalised), or "black"
    coordinates: str  # "centre": pixel centres at integers; "corner": 0 at the image's edge; "canvas": GeoAware-SC's
    final_norm: bool  # DINO features through the final LayerNorm, or the last block's raw output
    pf_shift: bool  # PF-Pascal / PF-Willow MATLAB (1-based) coordinates shifted by -1
    clamp_keypoints: bool  # keypoints outside their image moved into it
    window_border: str  # soft-argmax window at the border: "shrink" symmetrically, or "clip"
    pck_norms: dict[str, str]  # dataset -> threshold length L
    strict: bool  # correct when distance < alpha L (True) or <= alpha L
    common_grid: str  # ensembles: the grid similarity maps meet on
    feature_dtype: str  # features in memory and in the cache
    build: str  # backbones as Meta's hub builds them ("meta"), or as the original project did
    precision: dict[str, str]  # backbone family -> autocast precision


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    conventions: Conventions
    optimisation: Optimisation
    starts: dict = field(default_factory=dict)  # flag -> value the protocol starts from; dataset -> its own
    fixed: dict = field(default_factory=dict)  # flag -> the only value the protocol ran (others leave it)
    reproduces: bool = False  # another project's numbers: leaving the protocol is warned about

    def values(self, dataset: str, training: bool = False) -> dict[str, object]:
        """Every setting this protocol fixes, by flag name (the PCK normaliser of `dataset`; with `training`, how
        fine-tuning optimises too)."""
        values = {**asdict(self.conventions), **(asdict(self.optimisation) if training else {})}
        values["pck_norm"] = self.conventions.pck_norms.get(dataset, "image")
        del values["pck_norms"]
        return values

    def start(self, dataset: str) -> dict[str, object]:
        """The settings this protocol starts from on `dataset` (a flag given replaces one without leaving it)."""
        plain = {k: v for k, v in self.starts.items() if not isinstance(v, dict)}
        return {**plain, **self.starts.get(dataset, {})}


# this toolkit's fine-tuning; --protocol geoaware, an evaluation protocol, keeps it
CORRECTED_OPTIMISATION = Optimisation(
    epochs=1, batch_size=8, lr=1e-4, weight_decay=0.01, decay="matrices", schedule="warmup-cosine",
    warmup_steps=None, grad_clip=1.0, select="best", train_neck=True,
)  # fmt: skip

PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol(
        "default",
        "this toolkit's corrected conventions",
        Conventions(
            resize="squash", image_size=None, resample="pil-bicubic", pad_fill="mean", coordinates="centre",
            final_norm=True, pf_shift=True, clamp_keypoints=True, window_border="shrink",
            pck_norms={"spair": "bbox", "pf-pascal": "image", "pf-willow": "kpbox", "ap10k": "bbox", "spair-u": "bbox",
                       "custom": "image"}, strict=False,
            common_grid="finest", feature_dtype="fp16", build="meta",
            precision={"dinov2": "auto", "dinov3": "auto", "sam": "auto"},
        ),
        CORRECTED_OPTIMISATION,
    ),
    "original": Protocol(
        "original",
        "the original project's conventions (PhilaMaster/semantic_correspondence), to reproduce its numbers",
        Conventions(
            resize="squash", image_size=None, resample="torch-bilinear", pad_fill="mean", coordinates="corner",
            final_norm=True, pf_shift=False, clamp_keypoints=False, window_border="clip",
            pck_norms={"spair": "bbox", "pf-pascal": "image", "pf-willow": "image", "ap10k": "bbox", "spair-u": "bbox",
                       "custom": "image"}, strict=False,
            common_grid="coarsest", feature_dtype="fp32", build="original",
            precision={"dinov2": "fp32", "dinov3": "fp32", "sam": "fp16"},
        ),
        Optimisation(
            epochs=1, batch_size=1, lr=1e-4, weight_decay=0.01, decay="all", schedule="constant",
            warmup_steps=0, grad_clip=0.0, select="last", train_neck=False,
        ),
        fixed={"descriptor": "nearest", "flip": False, "jitter": 0.0, "soft_sigma": 0.0},
        reproduces=True,
    ),
    "geoaware": Protocol(
        "geoaware",
        "GeoAware-SC's evaluation (Junyi42/GeoAware-SC pck_train.py), the one most papers since 2024 report",
        Conventions(
            resize="pad", image_size=840, resample="pil-lanczos", pad_fill="black", coordinates="canvas",
            final_norm=False, pf_shift=False, clamp_keypoints=False, window_border="shrink",
            pck_norms={"spair": "bbox", "pf-pascal": "image", "pf-willow": "kpbox", "ap10k": "bbox", "spair-u": "bbox",
                       "custom": "image"}, strict=True,
            common_grid="finest", feature_dtype="fp32", build="meta",
            precision={"dinov2": "fp32", "dinov3": "fp32", "sam": "fp32"},
        ),
        CORRECTED_OPTIMISATION,
        starts={
            "matcher": "geoaware-softargmax", "window": 11, "temperature": 0.02,  # its SOFT_EVAL, window radius 5
            "spair": {"thresholds": (0.01, 0.05, 0.1)},
            "ap10k": {"thresholds": (0.01, 0.05, 0.1)},  # its alphas for every dataset but PF-Pascal
            "spair-u": {"thresholds": (0.01, 0.05, 0.1)},  # Jamais Vu's too (its pck_train.py is GeoAware-SC's here)
            "pf-pascal": {"thresholds": (0.05, 0.1, 0.15), "window": 15},  # eval_pascal.yaml: window radius 7
        },
        fixed={"descriptor": "nearest"},
        reproduces=True,
    ),
}  # fmt: skip


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
