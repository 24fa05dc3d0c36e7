"""On-disk cache of per-image dense features (L2-normalised, fp16 or fp32), one file per image.

A cache folder is keyed by everything that changes the features: backbone, weights file hash,
layer, model overrides and preprocessing. Inside it, an image's entry is keyed by what determines
its features: the sha256 of the image file's bytes (computed once per file per run, files.file_sha256),
not its path, size or modification time, so an image replaced by other content of the same size and
time gets a new entry; a mirror image (--flip-align) has an entry of its own. Each entry names the image it
holds the features of (its sha256, path and whether mirrored), so that an entry moved onto another's name is
caught when read. One file per image means an interrupted
extraction resumes where it stopped, and grid searches / ensembles / re-runs reuse it.

A cache that cannot be written (a full disk, no permission, a file in the way) is one warning; the run
goes on without writing it, with the same results.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import torch

from semcorr.data.images import ImageRef
from semcorr.storage.files import WriteError, atomic_torch_save, atomic_write, code_on_load, file_sha256, make_folder

CACHE_FORMAT = 3  # 2: entries keyed by the image's content and naming it ({"image_sha256", "image", "features"});
# 3: and by whether it is the mirror image ("mirrored"): format 2 gave an image and its mirror one entry


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """Features of one (backbone, weights, layer, preprocessing) setting, stored per image."""

    @classmethod
    def temporary(cls, parent: str | Path | None, setting: dict[str, object]) -> FeatureCache:
        """A cache for this run only (in a new folder under `parent`, or the system's temporary folder), removed
        when it is no longer used: where features must be streamed from disk but are not to be kept."""
        if parent is not None:
            make_folder(parent)
        folder = tempfile.mkdtemp(prefix="run-", dir=parent)
        cache = cls(folder, setting)
        weakref.finalize(cache, shutil.rmtree, folder, ignore_errors=True)
        return cache

    def __init__(self, root: str | Path, setting: dict[str, object]):
        self.setting = {**setting, "cache_format": CACHE_FORMAT}
        name = str(setting.get("backbone", "features"))
        self.dir = Path(root) / f"{name}-{_digest(self.setting)[:16]}"
        self.write_error: str | None = None  # why entries are not written this run (the first failure)
        self._lock = threading.Lock()
        info = self.dir / "setting.json"
        try:
            make_folder(self.dir)
            if not info.exists():
                text = json.dumps(self.setting, indent=1, sort_keys=True, default=str)
                atomic_write(info, lambda tmp: tmp.write_text(text))
        except WriteError as err:
            self.not_writable(err)

    def path(self, ref: ImageRef) -> Path:
        """The entry of `ref`'s image: named by its file's content (and whether it is the mirror image)."""
        return self.dir / f"{file_sha256(ref.path)[:32]}{'-mirrored' if ref.mirrored else ''}.pt"

    def load(self, ref: ImageRef, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The cached features of `ref`, or None when absent. A damaged entry (unreadable, of another image, not
        a floating-point tensor of `shape`, or holding NaN / inf) is dropped with a warning naming its file, so
        that the image is extracted again."""
        path = self.path(ref)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds for damaged files
            asks = code_on_load(err)
            problem = (
                f"refused: it asks to run code ({asks}) when loaded" if asks else f"unreadable ({type(err).__name__})"
            )
        else:
            problem = entry_problem(entry, file_sha256(ref.path), ref.mirrored, shape)
        if problem is None:
            return entry["features"]
        warnings.warn(f"feature cache file {path} (of {ref.path}) is {problem}: re-extracting it", stacklevel=2)
        return None

    def save(self, refs: list[ImageRef], feats: torch.Tensor) -> None:
        """Store one (C, h, w) tensor per image, in the features' dtype (fp16 unless the run keeps fp32), with the
        image it belongs to; non-finite features are never stored. The first write that fails turns writing off
        for the rest of the run (one warning)."""
        for ref, f in zip(refs, feats, strict=True):
            f = f.detach().to("cpu")
            if self.write_error is not None or not torch.isfinite(f).all():
                continue
            entry = {"image_sha256": file_sha256(ref.path), "image": str(ref.path), "mirrored": ref.mirrored,
                     "features": f.clone()}  # fmt: skip
            try:
                atomic_torch_save(entry, self.path(ref))
            except WriteError as err:
                self.not_writable(err)

    def not_writable(self, err: WriteError) -> None:
        """Turn writing off for this run, with one warning."""
        with self._lock:
            if self.write_error is not None:
                return
            self.write_error = str(err)
        warnings.warn(
            f"feature cache not written: {err}. The run goes on without caching its features (same results); "
            "to cache them, fix that or choose another --cache-dir",
            stacklevel=2,
        )


def entry_problem(entry: object, image_sha256: str, mirrored: bool, shape: tuple[int, ...]) -> str | None:
    """What is wrong with a loaded cache entry for the image of content `image_sha256` (or its mirror image), or
    None."""
    if not isinstance(entry, dict) or not {"image_sha256", "mirrored", "features"} <= set(entry):
        return f"not a feature cache entry ({type(entry).__name__})"
    if entry["image_sha256"] != image_sha256 or entry["mirrored"] is not mirrored:
        mirror = " (mirrored)" if entry["mirrored"] else ""
        return f"the entry of another image ({entry.get('image', 'unnamed')}{mirror})"
    feats = entry["features"]
    if not isinstance(feats, torch.Tensor) or not feats.is_floating_point():
        return f"not a floating-point tensor ({type(feats).__name__})"
    if tuple(feats.shape) != tuple(shape):
        return f"shaped {tuple(feats.shape)} instead of {tuple(shape)}"
    if not torch.isfinite(feats).all():
        return "holding NaN or infinite values"
    return None


class CachedFeatures:
    """The (N, C, h, w) features of a run's images, read from its FeatureCache one image at a time (the most
    recently used kept in memory up to `keep_bytes`): what a run uses in place of a tensor of all of them when
    they do not fit in memory. Indexed by row like that tensor; `transform` maps each image's features as read."""

    def __init__(
        self,
        cache: FeatureCache,
        images: list[ImageRef],
        shape: tuple[int, int, int],
        dtype: torch.dtype,
        device: torch.device,
        keep_bytes: int,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.cache, self.images, self.dtype, self.device = cache, images, dtype, device
        self.stored_shape, self.transform, self.keep_bytes = shape, transform, keep_bytes
        one = transform(torch.zeros(1, *shape, dtype=dtype)).shape[1:] if transform else shape  # (C, h, w) as read
        self.shape = (len(images), *one)
        per_image = math.prod(one) * torch.empty((), dtype=dtype).element_size()
        self._row = functools.lru_cache(maxsize=max(2, keep_bytes // per_image))(self._read)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> torch.Tensor:
        return self._row(int(row))

    def _read(self, row: int) -> torch.Tensor:
        feats = self.cache.load(self.images[row], self.stored_shape)
        if feats is None:
            raise RuntimeError(
                f"the feature cache entry of {self.images[row].path} in {self.cache.dir} went missing during the run "
                "(removed, or replaced by a damaged file): run again, with that folder left alone while it runs"
            )
        feats = feats.to(self.device, self.dtype)
        return self.transform(feats[None])[0] if self.transform else feats

    def mapped(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> CachedFeatures:
        """These features with `transform` ((1, C, h, w) -> (1, C', h', w')) applied to each image after this
        one's own, read lazily like these."""
        inner = self.transform
        both = transform if inner is None else (lambda f: transform(inner(f)))
        return CachedFeatures(
            self.cache, self.images, self.stored_shape, self.dtype, self.device, self.keep_bytes, both
        )
