"""The named protocols: each fixes every convention of a run at once (one row of one table), and a flag
given beside a protocol overrides that part of it (semcorr/cli/resolve.py records and warns)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from semcorr.config.settings import Optimisation


@dataclass(frozen=True)
class Conventions:
    """How images, coordinates, matching and PCK are handled."""

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
class Protocol:
    name: str
    description: str
    conventions: Conventions
    optimisation: Optimisation

    def values(self, dataset: str, training: bool = False) -> dict[str, object]:
        """Every setting this protocol fixes, by flag name (the PCK normaliser of `dataset`; with `training`, how
        fine-tuning optimises too)."""
        values = {**asdict(self.conventions), **(asdict(self.optimisation) if training else {})}
        values["pck_norm"] = self.conventions.pck_norms.get(dataset, "image")
        del values["pck_norms"]
        return values


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
            pck_norms={"spair": "bbox", "pf-pascal": "image", "pf-willow": "kpbox", "ap10k": "bbox", "custom": "image"},
            common_grid="finest",
            feature_dtype="fp16",
            build="meta",
            precision={"dinov2": "auto", "dinov3": "auto", "sam": "auto"},
        ),
        Optimisation(
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
            pck_norms={"spair": "bbox", "pf-pascal": "image", "pf-willow": "image", "ap10k": "bbox", "custom": "image"},
            common_grid="coarsest",
            feature_dtype="fp32",
            build="original",
            precision={"dinov2": "fp32", "dinov3": "fp32", "sam": "fp16"},
        ),
        Optimisation(
            epochs=1, batch_size=1, lr=1e-4, weight_decay=0.01, decay="all", schedule="constant",
            warmup_steps=0, grad_clip=0.0, select="last", train_neck=False,
        ),
    ),
}  # fmt: skip
# What the original protocol never ran: a setting other than these leaves it (the run is labelled so)
ORIGINAL_FIXED = {"resize": "squash", "descriptor": "nearest", "flip": False, "jitter": 0.0, "soft_sigma": 0.0}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
