"""This project's fine-tuned checkpoints: the one home of their format (writer, reader, loader).

A fine-tuned checkpoint names its own backbone, timm overrides and feature layer, so that
`load_finetuned(path)` rebuilds the model with nothing else; `extra` holds what training recorded
(its settings, step, validation PCK). Files are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from fileio import atomic_torch_save
from models.backbones import Backbone, load_state
from models.checkpoints import Checkpoint, CheckpointError, as_state_dict, convert_state, load_file
from models.registry import get_spec

FINETUNED_FORMAT = "semcorr-backbone/1"
FIELDS = ("backbone", "timm_overrides", "layer", "state_dict", "extra")


def save_finetuned(bb: Backbone, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a fine-tuned backbone atomically; `load_finetuned(path)` rebuilds it with nothing else.

    `extra` (training settings, metrics, ...) must hold only plain Python values and tensors, so
    that the file stays loadable with `torch.load(weights_only=True)`.
    """
    extra = {} if extra is None else extra
    check_plain(extra, "extra")
    check_plain(bb.timm_overrides, "timm_overrides")
    payload = {
        "format": FINETUNED_FORMAT,
        "backbone": bb.name,
        "timm_overrides": dict(bb.timm_overrides),
        "layer": bb.layer,
        "state_dict": {k: v.detach().cpu() for k, v in bb.state_dict().items()},
        "extra": extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, path)
    return path


def is_finetuned(path: str | os.PathLike) -> bool:
    """Whether `path` is a fine-tuned checkpoint of this project; reads only its header (mmap)."""
    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return False
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file: the loaders report what is wrong with it
        return False
    return isinstance(raw, dict) and raw.get("format") == FINETUNED_FORMAT


def read_finetuned(path: str | os.PathLike) -> tuple[Checkpoint, dict]:
    """The weights of a fine-tuned checkpoint (Backbone layout) and its metadata (backbone, timm_overrides,
    layer, extra)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    raw = load_file(path, None)
    if not isinstance(raw, dict) or "format" not in raw:
        raise CheckpointError(
            f"{path} is not a fine-tuned checkpoint (no 'format' tag): it holds plain weights. "
            "Pass it as --weights (with --model), or load_backbone(name, weights=PATH) in Python."
        )
    if raw["format"] != FINETUNED_FORMAT or any(key not in raw for key in FIELDS):
        raise CheckpointError(
            f"{path} has format {raw['format']!r} with keys {sorted(raw)}; this version reads "
            f"{FINETUNED_FORMAT!r} with keys {sorted(['format', *FIELDS])}."
        )
    spec = get_spec(raw["backbone"])
    ckpt = convert_state(path, as_state_dict(path, raw["state_dict"], spec), spec)
    return ckpt, {key: raw[key] for key in FIELDS if key != "state_dict"}


def load_finetuned(path: str | os.PathLike, device: str | torch.device = "auto", precision: str = "auto") -> Backbone:
    """Rebuild a backbone saved by save_finetuned: name, timm overrides, layer and weights."""
    ckpt, meta = read_finetuned(path)
    bb = load_state(
        get_spec(meta["backbone"]),
        ckpt,
        layer=meta["layer"],
        device=device,
        precision=precision,
        overrides=meta["timm_overrides"],
    )
    bb.extra = meta["extra"] or {}
    return bb


PLAIN = (type(None), bool, int, float, str, Tensor)


def check_plain(obj: object, where: str) -> None:
    """Raise TypeError unless `obj` is made of values that torch.load(weights_only=True) accepts."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            check_plain(key, f"{where} key {key!r}")
            check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, PLAIN):
        raise TypeError(
            f"{where} is a {type(obj).__name__}; fine-tuned checkpoints hold only None, bool, int, "
            "float, str, tensors and lists / tuples / dicts of them (convert it, e.g. with float() or .tolist())."
        )
