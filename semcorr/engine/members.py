"""The members of a run: each backbone's features of every image (extracted once, or read from the feature
cache), with its weight; and how several members meet on one patch grid.

Common grid: every member's similarity map is resized bilinearly (align_corners=False) to the patch grid of
one reference member (EnsembleSettings.common_grid), and predictions are converted to pixels from that
member's grid. combine="features" instead resizes the members' feature maps to that grid and re-normalises
them before the similarity: the cosine similarity of the sqrt(weight)-scaled concatenation of the members'
L2-normalised features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from helper_functions import FeatureSet, extract_features, member_preprocess
from models import Backbone, weights_origin
from semcorr.config.settings import COMBINE_MODES, COMMON_GRIDS, EnsembleSettings, ExtractSettings, MemberSettings
from semcorr.data.geometry import Preprocess
from semcorr.data.images import ImageRef
from semcorr.storage.feature_cache import CachedFeatures, FeatureCache
from semcorr.storage.files import file_sha256


@dataclass
class Member:
    """One backbone's features over the images of a run, with its ensemble weight."""

    features: FeatureSet
    weight: float = 1.0


DIGESTS_FILE = "file_digests.json"  # in the feature cache folder: weights files' sha256, read once (files.file_sha256)


def weights_digest(backbone: Backbone, cache_dir: str | None = None) -> str | None:
    """sha256 of the weights file (remembered in `cache_dir` for the next run), or None for random weights."""
    path = str(backbone.weights_path)
    remember = Path(cache_dir) / DIGESTS_FILE if cache_dir else None
    return None if path == "random" else file_sha256(path, remember=remember)


def feature_setting(backbone: Backbone, prep: Preprocess, weights_sha256: str | None, feature_dtype: str) -> dict:
    """Everything that changes a backbone's features: the key of its feature cache."""
    return {
        "backbone": backbone.name,
        "weights_sha256": weights_sha256,
        "layer": backbone.layer,
        "final_norm": getattr(backbone, "final_norm", True),
        "timm_overrides": getattr(backbone, "timm_overrides", {}),
        "preprocess": prep.key,
        "autocast": str(backbone.autocast_dtype),
        "build": getattr(backbone, "build", "meta"),
        "feature_dtype": feature_dtype,
    }


def build_member(
    member: MemberSettings, extract: ExtractSettings, backbone: Backbone, images: list[ImageRef], *, progress: bool
) -> tuple[Member, dict[str, object]]:
    """One member's features of `images` (read from the cache, or extracted and cached), and what its settings
    resolved to (for config.json)."""
    prep = member_preprocess(member.image_size, member.resize, extract, backbone.patch_size)
    sha = weights_digest(backbone, extract.cache_dir)
    setting = feature_setting(backbone, prep, sha, extract.feature_dtype)
    cache = FeatureCache(extract.cache_dir, setting) if extract.cache_dir and sha else None
    feats = extract_features(backbone, images, prep, extract, cache=cache, progress=progress)
    resolved = {
        "model": backbone.name,
        "weights": str(backbone.weights_path),
        "weights_sha256": sha,
        "weights_origin": weights_origin(backbone),
        "weight": member.weight,
        "layer": backbone.layer,
        "final_norm": getattr(backbone, "final_norm", True),
        "build": getattr(backbone, "build", "meta"),
        "precision": str(backbone.autocast_dtype or "fp32").removeprefix("torch."),
        "patch_size": backbone.patch_size,
        "image_size": [prep.height, prep.width],
        "grid": list(prep.grid),
        "resize": prep.resize,
        "feature_cache": str(cache.dir) if cache else None,
        "feature_cache_off": cache_off_reason(cache, extract),
    }
    return Member(feats, member.weight), resolved


def cache_off_reason(cache: FeatureCache | None, extract: ExtractSettings) -> str | None:
    """Why a member's features were not cached, or None when they were."""
    if cache is not None:
        return f"not written: {cache.write_error}" if cache.write_error else None
    return "--no-cache" if not extract.cache_dir else "random weights (no weights file to key it by)"


def reference_member(members: list[Member], common_grid: str) -> int:
    """Index of the member whose grid the similarity maps are resized to (the first of ties)."""
    areas = [m.features.prep.grid[0] * m.features.prep.grid[1] for m in members]
    if common_grid == "first":
        return 0
    if common_grid == "finest":
        return areas.index(max(areas))
    if common_grid == "coarsest":
        return areas.index(min(areas))
    raise ValueError(f"common grid must be one of {COMMON_GRIDS}, got {common_grid!r}")


def check_alignment(members: list[Member]) -> None:
    """Resizing maps between grids is only right when every grid spans the same part of the image."""
    preps = [m.features.prep for m in members]
    if preps[0].resize == "pad":
        aspects = {round(p.width / p.height, 2) for p in preps}
        if len(aspects) > 1:
            sizes = ", ".join(f"{p.height}x{p.width}" for p in preps)
            raise ValueError(
                f"with --resize pad, members need input sizes of one aspect ratio to share a grid, got "
                f"{sizes}: give them sizes of the same shape, or use --resize squash"
            )


def resampled(fs: FeatureSet, ref: FeatureSet, chunk: int = 32) -> FeatureSet:
    """fs's feature maps resized bilinearly to ref's grid and re-normalised, with ref's geometry (features read
    from the cache are resized as each image is read)."""

    def resize(feats: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(feats.float(), size=ref.prep.grid, mode="bilinear", align_corners=False)
        return F.normalize(out, dim=1).to(feats.dtype)

    if isinstance(fs.feats, CachedFeatures):
        return FeatureSet(fs.feats.mapped(resize), fs.index, ref.prep, ref.geometries, fs.stats)
    parts = [resize(fs.feats[i : i + chunk]) for i in range(0, len(fs.feats), chunk)]
    return FeatureSet(torch.cat(parts), fs.index, ref.prep, ref.geometries, fs.stats)


def engine_members(members: list[Member], ensemble: EnsembleSettings) -> tuple[list[Member], list[int]]:
    """The members in the engine's order (the reference member first), and that order as indices into `members`."""
    if ensemble.combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}, got {ensemble.combine!r}")
    if len(members) == 1:
        return members, [0]
    check_alignment(members)
    ref = reference_member(members, ensemble.common_grid)
    order = [ref] + [i for i in range(len(members)) if i != ref]
    ordered = [members[i] for i in order]
    if ensemble.combine == "features":
        ref_fs = ordered[0].features
        ordered = [ordered[0]] + [Member(resampled(m.features, ref_fs), m.weight) for m in ordered[1:]]
    return ordered, order
