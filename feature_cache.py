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

from fileio import atomic_torch_save
from images import ImageRef

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

    def load(self, ref: ImageRef) -> torch.Tensor | None:
        """The cached (C, h, w) features of `ref`, or None when absent or unreadable."""
        path = self.path(ref)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged cache entry is recomputed, not fatal
            warnings.warn(f"Ignoring unreadable cache file {path} ({err}); recomputing it.", stacklevel=2)
            return None

    def save(self, refs: list[ImageRef], feats: torch.Tensor) -> None:
        """Store one (C, h, w) tensor per image, in the features' dtype (fp16 unless the run keeps fp32)."""
        for ref, f in zip(refs, feats, strict=True):
            atomic_torch_save(f.detach().to("cpu").clone(), self.path(ref))
