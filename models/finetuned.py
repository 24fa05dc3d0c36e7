"""Fine-tuned checkpoints: the one home of their format (writer, reader, loader).

This project's checkpoint (format "semcorr-backbone/2") names its backbone, timm overrides, feature
layer and build, so that `create_backbone(checkpoint=path)` rebuilds the model with nothing else. It holds only
the weights that training changed (the last blocks and the head) plus the name, path and sha256 of
the base weights file they were trained from; reading it loads the base file and puts the trained
weights on top. `self_contained=True` (or a base that cannot be found again, such as random
weights) writes every weight instead, for sharing. `extra` holds what training recorded (its
settings, step, validation PCK); `training` (last.pt only) what --resume needs.

The original project's checkpoints (a dict with `model_state_dict` in Meta's key layout, from its
fine-tuning scripts) load too; they do not name their model, which is read off the weights' shapes.
Every file is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from models.backbones import Backbone, load_weights
from models.checkpoints import (
    Checkpoint,
    CheckpointError,
    as_state_dict,
    convert_state,
    guess_spec,
    load_file,
    read_checkpoint,
)
from models.registry import BackboneSpec, get_spec
from semcorr.config.settings import BackboneSettings
from semcorr.storage.files import atomic_torch_save, file_sha256, make_folder

FORMAT = "semcorr-backbone/2"  # the trained weights on top of a base file (or every weight)
FIELDS = ("backbone", "timm_overrides", "layer", "build", "base", "base_origin", "state_dict", "extra")
ADDED = {"final_norm": True}  # keys written since; files without one were made with this value
ORIGINAL_KEY = "model_state_dict"  # the original project's checkpoints: {"model_state_dict": ..., "epoch": ...}
ORIGINAL_INFO = ("epoch", "n_blocks", "temperature", "learning_rate", "val_pck@0.05", "val_pck@0.10", "val_pck@0.20")


def weights_origin(bb: Backbone) -> str:
    """Where a backbone's weights come from: "random", "fine-tuned" (a fine-tuned checkpoint whose
    training started from real weights), "official" (Meta's file: its name, and its hash where Meta
    publishes one) or "custom" (any other weights file)."""
    if bb.weights_path == "random":
        return "random"
    if getattr(bb, "base_origin", None) is not None:
        return "random" if bb.base_origin == "random" else "fine-tuned"
    spec, path = getattr(bb, "spec", None), Path(bb.weights_path)
    if spec is None:  # a model of the user's own making
        return "custom"
    if path.name != spec.official_file:
        return "custom"
    for algorithm in ("sha256", "md5"):
        prefix = getattr(spec, f"{algorithm}_prefix")
        if prefix and not file_sha256(path, algorithm=algorithm).startswith(prefix):
            return "custom"
    return "official"


def base_record(bb: Backbone) -> dict | None:
    """What a checkpoint trained from `bb` needs to find its base weights again; None for random weights."""
    if bb.weights_path == "random":
        return None
    path = Path(bb.weights_path)
    return {"weights": str(path), "file": path.name, "sha256": file_sha256(path), "origin": weights_origin(bb)}


def save_finetuned(
    bb: Backbone,
    path: str | os.PathLike,
    extra: dict | None = None,
    *,
    base: dict | None = None,
    trained: set[str] | None = None,
    self_contained: bool = False,
    training: dict | None = None,
) -> Path:
    """Write a fine-tuned backbone atomically; `create_backbone(checkpoint=path)` rebuilds it with nothing else.

    With a `base` (base_record of the model training started from) and the state-dict keys that
    training changed (`trained`), only those are written; otherwise, or with `self_contained`, every
    weight. `extra` and `training` must hold only plain Python values and tensors, so that the file
    stays loadable with `torch.load(weights_only=True)`.
    """
    extra = {} if extra is None else extra
    check_plain(extra, "extra")
    check_plain(bb.timm_overrides, "timm_overrides")
    full = self_contained or base is None or trained is None
    state = {k: v.detach().cpu() for k, v in bb.state_dict().items() if full or k in trained}
    payload = {
        "format": FORMAT,
        "backbone": bb.name,
        "timm_overrides": dict(bb.timm_overrides),
        "layer": bb.layer,
        "final_norm": bb.final_norm,
        "build": bb.build,
        "base": None if full else base,
        "state_dict": state,
        "extra": extra,
        "base_origin": base["origin"] if base else (bb.base_origin or weights_origin(bb)),
    }
    if training is not None:
        payload["training"] = training
    path = Path(path)
    make_folder(path.parent)
    atomic_torch_save(payload, path)
    return path


def is_finetuned(path: str | os.PathLike) -> bool:
    """Whether `path` is a fine-tuned checkpoint (this project's or the original's); reads only its header (mmap)."""
    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return False
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file: the loaders report what is wrong with it
        return False
    return isinstance(raw, dict) and (raw.get("format") == FORMAT or ORIGINAL_KEY in raw)


def read_finetuned(path: str | os.PathLike, model: str | None = None) -> tuple[Checkpoint, dict]:
    """The weights of a fine-tuned checkpoint (Backbone layout, base weights included) and its metadata:
    backbone, timm_overrides, layer, build, extra and (last.pt) training. `model` names the backbone of
    an original-project checkpoint (default: read off its shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    raw = load_file(path, None)
    if isinstance(raw, dict) and ORIGINAL_KEY in raw and "format" not in raw:
        return _read_original(path, raw, model)
    if not isinstance(raw, dict) or "format" not in raw:
        raise CheckpointError(
            f"{path} is not a fine-tuned checkpoint (no 'format' tag): it holds plain weights. "
            "Pass it as --weights (with --model), or create_backbone(name, weights=PATH) in Python."
        )
    if raw["format"] != FORMAT or any(key not in raw for key in FIELDS):
        raise CheckpointError(
            f"{path} has format {raw['format']!r} with keys {sorted(raw)}; this version reads {FORMAT!r} with keys "
            f"{sorted(['format', *FIELDS])}."
        )
    spec = get_spec(raw["backbone"])
    state = as_state_dict(path, raw["state_dict"], spec)
    if raw.get("base"):
        state = {**_base_state(path, raw["base"], spec), **state}
    meta = {key: raw[key] for key in FIELDS if key != "state_dict"}
    meta |= {key: raw.get(key, value) for key, value in ADDED.items()}
    meta |= {
        "build": raw["build"],
        "base_origin": raw["base_origin"],
        "base": raw["base"],
        "training": raw.get("training"),
    }
    return convert_state(path, state, spec), meta


def _base_state(path: Path, base: dict, spec: BackboneSpec) -> dict[str, Tensor]:
    """The base weights a checkpoint was trained from, found where they were or at the official place,
    and checked by sha256; a clear error when they are missing or another file."""
    candidates = list(dict.fromkeys([Path(base["weights"]), spec.default_weights.parent / base["file"]]))
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        tried = " or ".join(map(str, candidates))
        raise CheckpointError(
            f"{path} holds the trained weights only; its base weights {base['file']} (sha256 {base['sha256'][:12]}...) "
            f"are not at {tried}. Put that file there (python download.py --models {spec.name} fetches the official "
            "one), or use a self-contained checkpoint (finetune.py --self-contained)."
        )
    digest = file_sha256(found)
    if digest != base["sha256"]:
        raise CheckpointError(
            f"{path} was trained from {base['file']} with sha256 {base['sha256'][:12]}..., but {found} has sha256 "
            f"{digest[:12]}...: another file. Restore the file the checkpoint was trained from."
        )
    if is_finetuned(found):  # training continued from an earlier checkpoint
        return read_finetuned(found)[0].state_dict
    return read_checkpoint(found, spec).state_dict


def _read_original(path: Path, raw: dict, model: str | None) -> tuple[Checkpoint, dict]:
    """An original-project checkpoint: Meta's key layout under model_state_dict, its model guessed or given."""
    state = as_state_dict(path, raw[ORIGINAL_KEY], None)
    ckpt = convert_state(path, state, get_spec(model) if model else None)
    spec = get_spec(model) if model else guess_spec(ckpt)
    if spec is None:
        raise CheckpointError(f"{path}: cannot tell which backbone its model_state_dict is; give --model.")
    info = {key: raw[key] for key in ORIGINAL_INFO if isinstance(raw.get(key), int | float | str)}
    meta = {"backbone": spec.name, "timm_overrides": {}, "layer": None, "final_norm": True, "build": "original",
            "base_origin": "official"}  # fmt: skip
    meta["extra"] = {"original_checkpoint": info}
    return ckpt, meta | {"base": None, "training": None}


def from_checkpoint(setting: BackboneSettings) -> Backbone:
    """Rebuild a fine-tuned backbone from `setting.checkpoint`: its model, timm overrides, layer and weights;
    built as `setting` says (build, precision, device). `setting.model` names the backbone of an
    original-project checkpoint ("": read off its shapes)."""
    ckpt, meta = read_finetuned(setting.checkpoint, setting.model or None)
    layer = meta["layer"] if setting.layer is None else setting.layer
    setting = replace(setting, layer=layer, final_norm=meta["final_norm"])
    bb = load_weights(get_spec(meta["backbone"]), ckpt, setting, meta["timm_overrides"])
    bb.extra = meta["extra"] or {}
    bb.base_origin, bb.base, bb.training_state = meta["base_origin"], meta["base"], meta["training"]
    return bb


def checkpoint_header(path: str | os.PathLike, model: str | None = None) -> dict:
    """What a fine-tuned checkpoint says of itself without building it: its backbone, layer and build, and the
    image size and resize it was trained with ("trained", empty for the original project's checkpoints)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    raw = load_file(path, None, mmap=True)
    if isinstance(raw, dict) and ORIGINAL_KEY in raw and "format" not in raw:
        return {"backbone": _read_original(path, raw, model)[1]["backbone"], "layer": None, "final_norm": True,
                "build": "original", "trained": {}}  # fmt: skip
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        read_finetuned(path, model)  # raises the error that says what the file is
    trained = (raw.get("extra") or {}).get("finetune", {})
    return {
        "backbone": get_spec(raw["backbone"]).name,
        "layer": raw["layer"],
        "final_norm": raw.get("final_norm", ADDED["final_norm"]),
        "build": raw["build"],
        "trained": {key: trained[key] for key in ("image_size", "resize") if key in trained},
    }


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
