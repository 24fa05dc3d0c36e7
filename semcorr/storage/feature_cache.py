"""On-disk cache of per-image dense features (L2-normalised, fp16 or fp32), one file per image.

A cache folder is keyed by everything that changes the features: backbone, weights file hash,
layer, model overrides and preprocessing. Inside it, an image's file is keyed by the image file's
identity (resolved path, size in bytes, modification time). One file per image means an
interrupted extraction resumes where it stopped, and grid searches / ensembles / re-runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from semcorr.data.images import ImageRef
from semcorr.storage.files import atomic_torch_save

CACHE_FORMAT = 1


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def image_identity(ref: ImageRef) -> dict[str, object]:
    """What identifies an image file's content without reading it."""
    path = Path(ref.path).resolve()
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "key": ref.key}


class FeatureCache:
    """Features of one (backbone, weights, layer, preprocessing) setting, stored per image."""

    def __init__(self, root: str | Path, setting: dict[str, object]):
        self.setting = {**setting, "cache_format": CACHE_FORMAT}
        name = str(setting.get("backbone", "features"))
        self.dir = Path(root) / f"{name}-{_digest(self.setting)[:16]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "setting.json"
        if not info.exists():
            info.write_text(json.dumps(self.setting, indent=1, sort_keys=True, default=str))

    def path(self, ref: ImageRef) -> Path:
        return self.dir / f"{_digest(image_identity(ref))[:32]}.pt"

    def load(self, ref: ImageRef, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The cached features of `ref`, or None when absent. A damaged entry (unreadable, not a
        floating-point tensor of `shape`, or holding NaN / inf) is dropped with a warning naming its file,
        so that the image is extracted again."""
        path = self.path(ref)
        if not path.exists():
            return None
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds for damaged files
            problem = f"unreadable ({type(err).__name__})"
        else:
            problem = entry_problem(feats, shape)
        if problem is None:
            return feats
        warnings.warn(f"feature cache file {path} (of {ref.path}) is {problem}: re-extracting it", stacklevel=2)
        return None

    def save(self, refs: list[ImageRef], feats: torch.Tensor) -> None:
        """Store one (C, h, w) tensor per image, in the features' dtype (fp16 unless the run keeps fp32);
        non-finite features are never stored."""
        for ref, f in zip(refs, feats, strict=True):
            f = f.detach().to("cpu")
            if torch.isfinite(f).all():
                atomic_torch_save(f.clone(), self.path(ref))


def entry_problem(feats: object, shape: tuple[int, ...]) -> str | None:
    """What is wrong with a loaded cache entry, or None."""
    if not isinstance(feats, torch.Tensor) or not feats.is_floating_point():
        return f"not a floating-point tensor ({type(feats).__name__})"
    if tuple(feats.shape) != tuple(shape):
        return f"shaped {tuple(feats.shape)} instead of {tuple(shape)}"
    if not torch.isfinite(feats).all():
        return "holding NaN or infinite values"
    return None
