"""One entry point from what a user names (model, weights file or fine-tuned checkpoint) to a backbone."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from models.backbones import Backbone, load_backbone
from models.finetuned import load_finetuned
from models.registry import get_spec

DEFAULT_MODEL = "dinov2"


def create_backbone(
    model: str | None = None,
    *,
    weights: str | None = None,
    checkpoint: str | None = None,
    layer: int | None = None,
    device: str | torch.device = "auto",
    precision: str | Mapping[str, str] = "auto",
    build: str | None = None,
    **timm_overrides,
) -> Backbone:
    """A backbone from a fine-tuned `checkpoint` (which names its own model, layer and build), or
    `model` (default dinov2) with a `weights` file (default: the official one; "random" for smoke tests).

    A checkpoint is refused together with `weights`, and with a `model` other than its own or a `layer`
    whose features differ from its own (DINO's last block is its default; SAM's default goes through the neck).
    `precision` may name one precision per backbone family; `build` None keeps a checkpoint's own
    build ("meta" otherwise). `timm_overrides` (e.g. depth=2 for a test model) reach timm.create_model.
    """
    if checkpoint is None:
        return load_backbone(
            model or DEFAULT_MODEL, weights=weights, device=device, layer=layer, precision=precision,
            build=build or "meta", **timm_overrides,
        )  # fmt: skip
    if weights is not None:
        raise ValueError(
            f"--checkpoint {checkpoint} and --weights {weights} both given: a fine-tuned checkpoint holds its own "
            "weights. Drop --weights, or drop --checkpoint to load a weights file of --model."
        )
    bb = load_finetuned(checkpoint, device=device, precision=precision, model=model, build=build)
    if model is not None and get_spec(model).name != bb.name:
        raise ValueError(
            f"--checkpoint {checkpoint} holds a fine-tuned {bb.name}, not {get_spec(model).name}: "
            "drop --model (a checkpoint names its own model), or give a checkpoint of that model."
        )
    if layer is not None and not bb.gives_features_of(layer):
        neck = " through the neck" if bb.spec.family == "sam" else ""
        trained = f"block {bb.layer}" if bb.layer is not None else f"the last block{neck}"
        raise ValueError(
            f"--checkpoint {checkpoint} was fine-tuned on the features of {trained}; --layer {layer} would take "
            "features that training did not shape. Drop --layer."
        )
    return bb
