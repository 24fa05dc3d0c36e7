"""Weights files: read, recognise, convert to the Backbone's key layout, and explain what is wrong.

Accepted: Meta's official files as distributed, timm-format state dicts, either as `.safetensors`,
and a saved `Backbone.state_dict()`. This project's fine-tuned checkpoints (and the original
project's) are refused here: they have their own reader, models/finetuned.py, which converts their
weights with `convert_state`.
Everything is converted to the Backbone layout: `model.<timm key>` (+ `rope_periods` for DINOv3),
which is then loaded strictly. Files are read with `torch.load(weights_only=True)` or safetensors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from models.registry import BACKBONES, BackboneSpec
from semcorr.storage.files import code_on_load, code_on_load_message

SHOWN_KEYS = 5  # how many offending keys an error message lists


class CheckpointError(ValueError):
    """A weights file that cannot be read, or does not fit the requested backbone."""


@dataclass
class Checkpoint:
    """A weights file in memory, already in the Backbone layout."""

    path: Path
    state_dict: dict[str, Tensor]
    source_format: str  # "official" | "timm" | "backbone"
    family: str | None  # "dinov2" | "dinov3" | "sam", None if unrecognised


def where_to_get(spec: BackboneSpec) -> str:
    """One sentence on how to obtain the official weights of a backbone."""
    target = f"place it at {spec.default_weights} (or pass weights=PATH)"
    if spec.url:
        return (
            f"Get the official {spec.official_file} with `python download.py --models {spec.name}` "
            f"or from {spec.url}, and {target}."
        )
    return (
        f"The {spec.name} weights are licence-gated: request access at {spec.request_url}, "
        f"download {spec.official_file} (or run `python download.py --models {spec.name}` once "
        f"you have the link), and {target}."
    )


def missing_weights_error(spec: BackboneSpec, path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"No weights file for {spec.name} at {path}. {where_to_get(spec)}")


def read_checkpoint(path: str | os.PathLike, spec: BackboneSpec | None = None, *, mmap: bool = False) -> Checkpoint:
    """Read a weights file of any accepted format and convert it to the Backbone layout.

    `spec` (the backbone the caller wants) only improves the error messages. `mmap` maps a torch
    file instead of reading it (see load_file).
    """
    path = Path(path)
    if not path.is_file():
        if spec is not None:
            raise missing_weights_error(spec, path)
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    return as_checkpoint(path, load_file(path, spec, mmap=mmap), spec)


def as_checkpoint(path: Path, raw: object, spec: BackboneSpec | None = None) -> Checkpoint:
    """What load_file read from `path` as a Checkpoint in the Backbone layout; a CheckpointError for a
    fine-tuned checkpoint (a weights file is expected) or anything that is not a state dict."""
    if isinstance(raw, dict) and ("format" in raw or "model_state_dict" in raw):
        whose = f"of this project (format {raw['format']!r})" if "format" in raw else "of the original project"
        raise CheckpointError(
            f"{path} is a fine-tuned checkpoint {whose}, not a weights file: "
            "pass it as --checkpoint (create_backbone(checkpoint=PATH) in Python)."
        )
    return convert_state(path, as_state_dict(path, unwrap(raw), spec), spec)


def convert_state(path: Path, state: dict[str, Tensor], spec: BackboneSpec | None = None) -> Checkpoint:
    """A state dict in any accepted key layout (read from `path`) -> a Checkpoint in the Backbone layout."""
    source = _source_format(state)
    if source == "backbone":
        return Checkpoint(path, state, source, family_of(strip_model_prefix(state)))
    family = family_of(state)
    if family is None:
        raise CheckpointError(
            f"{path} is not a checkpoint of any supported backbone (DINOv2, DINOv3, SAM): "
            f"{len(state)} tensors, first keys {list(state)[:SHOWN_KEYS]}. " + _hint(spec)
        )
    converted = OFFICIAL_TO_TIMM[family](state) if source == "official" else state
    state = {k if k == "rope_periods" else f"model.{k}": v for k, v in converted.items()}
    return Checkpoint(path, state, source, family)


def check_identity(ckpt: Checkpoint, spec: BackboneSpec) -> None:
    """Raise a CheckpointError if the file is of another family or another registered model.

    Cheap (no model needed), so it runs before the model is built.
    """
    if ckpt.family != spec.family:
        raise CheckpointError(
            f"{ckpt.path} holds {file_summary(ckpt)}, but {spec.name} ({spec.family}) was requested. "
            f"Load it with the matching backbone name, or use the right file. {where_to_get(spec)}"
        )
    guess = guess_spec(ckpt)
    if guess is not None and guess.name != spec.name:
        raise CheckpointError(
            f"{ckpt.path} holds {file_summary(ckpt)}, not {spec.name}. Load it with "
            f"create_backbone({guess.name!r}, ...), or use the right file. {where_to_get(spec)}"
        )


def check_keys(ckpt: Checkpoint, spec: BackboneSpec, expected: dict[str, Tensor]) -> None:
    """Raise a CheckpointError unless `ckpt` loads strictly into a backbone with state `expected`.

    timm does not store DINOv3's RoPE periods, so a timm-format file may lack `rope_periods`
    (the backbone then keeps the ones computed from the base).
    """
    state = ckpt.state_dict
    optional = {"rope_periods"} if ckpt.source_format == "timm" else set()
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{len(items)} {what} ({', '.join(items[:SHOWN_KEYS])}{', ...' if len(items) > SHOWN_KEYS else ''})"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"{ckpt.path} does not fit {spec.name}: {'; '.join(problems)}. The file holds "
            f"{file_summary(ckpt)}. A truncated or partial file, or weights of another model, "
            f"cause this. {where_to_get(spec)}"
        )


def summarise(state: dict[str, Tensor]) -> dict[str, int]:
    """Architecture read off a Backbone-layout state dict: embed_dim, depth, patch, registers."""
    weight = state.get("model.patch_embed.proj.weight")
    blocks = {m.group(1) for key in state if (m := re.match(r"model\.blocks\.(\d+)\.", key))}
    return {
        "embed_dim": int(weight.shape[0]) if weight is not None else 0,
        "patch_size": int(weight.shape[-1]) if weight is not None else 0,
        "depth": len(blocks),
        "registers": int(state["model.reg_token"].shape[1]) if "model.reg_token" in state else 0,
    }


def guess_spec(ckpt: Checkpoint) -> BackboneSpec | None:
    """The registered backbone whose width, patch and registers the file has, if any.

    Depth is left out: a file cut short (or a deliberately shallow test model) still names its model.
    """
    arch = summarise(ckpt.state_dict)
    for spec in BACKBONES.values():
        same_registers = spec.family != "dinov2" or (arch["registers"] > 0) == (spec.num_prefix_tokens > 1)
        same_shape = (spec.embed_dim, spec.patch_size) == (arch["embed_dim"], arch["patch_size"])
        if spec.family == ckpt.family and same_shape and same_registers:
            return spec
    return None


def file_summary(ckpt: Checkpoint) -> str:
    """What a file looks like, e.g. 'official-format sam weights (embed_dim 768, ...), like sam_vit_b'."""
    arch = summarise(ckpt.state_dict)
    registers = f", {arch['registers']} register tokens" if arch["registers"] else ""
    guess = guess_spec(ckpt)
    like = f"like {guess.name}" if guess else "matching no registered backbone"
    return (
        f"{ckpt.source_format}-format {ckpt.family} weights (embed_dim {arch['embed_dim']}, "
        f"depth {arch['depth']}, patch {arch['patch_size']}{registers}), {like}"
    )


# --- reading -------------------------------------------------------------------------------------


def _hint(spec: BackboneSpec | None) -> str:
    return where_to_get(spec) if spec is not None else "Check the path, or download the file again."


def load_file(path: Path, spec: BackboneSpec | None, mmap: bool = False) -> object:
    """The objects in a torch or safetensors file; `mmap` maps a torch file, so that only its index and
    the tensors touched are read. A CheckpointError (caused by the reader's error) if it does not load."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        asks = code_on_load(err)
        if asks:  # refused before anything ran: say what it is, not torch's advice to load it unsafely
            raise CheckpointError(code_on_load_message(path, asks)) from None
        raise CheckpointError(
            f"Could not read {path} ({path.stat().st_size:,} bytes): {type(err).__name__}: {err}. "
            "The file is truncated or corrupt (an interrupted download?) or not a PyTorch / "
            f"safetensors checkpoint. {_hint(spec)}"
        ) from err


def unwrap(raw: object) -> object:
    """The state dict inside common training-checkpoint wrappers ({'model': ...}, {'state_dict': ...})."""
    for key in ("state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            return raw[key]
    return raw


def as_state_dict(path: Path, obj: object, spec: BackboneSpec | None) -> dict[str, Tensor]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors. {_hint(spec)}")
    return obj


def strip_model_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("model."): v for k, v in state.items()}


def _source_format(state: dict[str, Tensor]) -> str:
    if all(k.startswith("model.") or k == "rope_periods" for k in state):
        return "backbone"
    if "mask_token" in state or "storage_tokens" in state or any(k.startswith("image_encoder.") for k in state):
        return "official"
    return "timm"


def family_of(state: dict[str, Tensor]) -> str | None:
    """Which family a state dict (official or timm keys) belongs to, from its marker keys."""
    if any(k.startswith("image_encoder.") for k in state) or "neck.0.weight" in state:
        return "sam"
    dinov3_markers = (
        "storage_tokens",
        "rope_embed.periods",
        "rope_periods",
        "blocks.0.gamma_1",
        "blocks.0.attn.q_bias",
    )
    if any(k in state for k in dinov3_markers):
        return "dinov3"
    if "cls_token" in state and "pos_embed" in state:
        return "dinov2"
    return None


# --- official -> timm key conversion (timm's checkpoint_filter_fn logic, without silent resampling)


def _dinov2_official(state: dict[str, Tensor]) -> dict[str, Tensor]:
    state = {k: v for k, v in state.items() if k != "mask_token"}
    if "register_tokens" in state:
        # timm's register models add no position to prefix tokens: CLS takes its position along
        state["reg_token"] = state.pop("register_tokens")
        pos = state.pop("pos_embed")
        state["cls_token"] = state["cls_token"] + pos[:, :1]
        state["pos_embed"] = pos[:, 1:]
    # ViT-g's fused SwiGLU: w12 (gate and value packed) / w3 are timm's GluMlp fc1 / fc2
    return {re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)): v for k, v in state.items()}


def _dinov3_official(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if key == "mask_token" or key.endswith(".bias_mask"):
            continue
        if key == "rope_embed.periods":
            out["rope_periods"] = value  # used as stored, see DinoV3Backbone
        elif key.endswith("attn.qkv.bias"):
            out.update(_split_masked_qkv_bias(key, value, state.get(f"{key}_mask")))
        else:
            renamed = key.replace("storage_tokens", "reg_token")
            out[renamed.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")] = value
    return out


def _split_masked_qkv_bias(key: str, bias: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    """Meta's LinearKMaskedBias uses bias * bias_mask; timm keeps q and v biases and a zero k bias."""
    masked = bias if mask is None else bias * mask.to(bias.dtype)
    q_bias, k_bias, v_bias = masked.chunk(3)
    if k_bias.count_nonzero():
        raise CheckpointError(
            f"{key}: the k third of the qkv bias is not masked to zero, but DINOv3 (and timm's port) "
            "has no k bias. The file is not an official DINOv3 checkpoint."
        )
    prefix = key.removesuffix("qkv.bias")
    return {f"{prefix}q_bias": q_bias, f"{prefix}v_bias": v_bias}


def _sam_official(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The image encoder of a whole-SAM checkpoint; prompt encoder and mask decoder are dropped."""
    prefix = "image_encoder."
    return {k.removeprefix(prefix).replace("mlp.lin", "mlp.fc"): v for k, v in state.items() if k.startswith(prefix)}


OFFICIAL_TO_TIMM = {"dinov2": _dinov2_official, "dinov3": _dinov3_official, "sam": _sam_official}
