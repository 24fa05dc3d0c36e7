"""Test-time pose alignment by flip (GeoAware-SC's ADAPT_FLIP, pck_train.py and utils/utils_geoware.py).

Each pair is matched twice: from its source image, and from the source's mirror image with every keypoint
queried at its left-right partner's mirrored position. A distance between the source's features and the
target's says which of the two is closer in pose; where the mirrored one is (strictly) closer, the keypoints
whose partner is among the pair's keypoints (or that lie on the mirror axis) take its prediction.

Distances, over the members' features concatenated with weight sqrt(w) each (one member: its own features):
- "mutual-nn": the mean, over the source patches that are mutual nearest neighbours of a target patch, of the
  Euclidean distance to that nearest target patch (get_distance_mutual_nn);
- "mask": the features upsampled to 64x64 (bilinear), multiplied by the images' masks (nearest), every zero
  entry then set to -1e5, and the mean over source positions inside the mask of the distance to the nearest
  of all target positions (get_distance); NaN, and so no flip, for an empty source mask.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from semcorr.config.settings import MatchSettings
from semcorr.data.images import ImageRef
from semcorr.data.pairs import DatasetError, PairRecord, mirror_partners
from semcorr.engine.matching import Prediction, predict_variants
from semcorr.engine.members import Member

MASK_GRID = 64  # get_distance's RESOLUTION
MASKED_VALUE = -100000.0  # what get_distance puts in every zero feature entry
MASK_THRESHOLD = 127  # convert_to_binary_mask: a mask pixel is inside when > 127


@dataclass
class FlipResult:
    """Per pair, the distances and the flip decision; per keypoint, whether it took the flipped prediction."""

    original_distance: np.ndarray  # (P,) source to target
    flip_distance: np.ndarray  # (P,) mirrored source to target
    chosen: np.ndarray  # (P,) bool: the mirrored source was closer
    taken: np.ndarray  # (K,) bool: the keypoint took the mirrored source's prediction

    def pair_columns(self) -> dict[str, np.ndarray]:
        """What per_pair.csv records of the decision."""
        return {"flip_chosen": self.chosen, "original_distance": self.original_distance,
                "flip_distance": self.flip_distance}  # fmt: skip

    def summary(self, mode: str) -> dict[str, object]:
        """What metrics.json records of the decision."""
        return {
            "mode": mode,
            "pairs_flipped": int(self.chosen.sum()),
            "pairs": len(self.chosen),
            "keypoints_flipped": int(self.taken.sum()),
            "keypoints": len(self.taken),
        }


def mirrored_sources(pairs: list[PairRecord]) -> list[ImageRef]:
    """The mirror images of the pairs' sources, each once."""
    return list({p.src.key: p.src.mirror() for p in pairs}.values())


def check_flip_pairs(pairs: list[PairRecord], dataset: str) -> None:
    """Pose alignment needs each keypoint's left-right partner, which only some loaders provide."""
    if any(p.kp_mirror is None for p in pairs):
        raise DatasetError(
            f"--flip-align needs each keypoint's left-right partner, which the {dataset} pairs do not have "
            "(SPair-71k's loader gives them when its ImageAnnotation folder is there); drop --flip-align"
        )


def align_by_flip(
    pairs: list[PairRecord],
    members: list[Member],
    match: MatchSettings,
    prediction: Prediction,
    mode: str,
    masks: str | None = None,
    progress: bool = True,
) -> tuple[Prediction, FlipResult]:
    """`prediction` (all keypoints of `pairs`, in order) after each pair's flip decision, and the decisions."""
    t0 = time.perf_counter()
    with_similarity = prediction.similarity is not None
    (flipped,) = predict_variants(
        pairs, members, [match], progress=progress, with_similarity=with_similarity, mirrored=True
    )
    original, mirrored = pair_distances(pairs, members, mode, masks, progress)
    chosen = mirrored < original  # NaN (an empty source mask) compares False: no flip
    counts = [p.num_keypoints for p in pairs]
    has_partner = np.concatenate([mirror_partners(p)[1] for p in pairs])
    taken = np.repeat(chosen, counts) & has_partner
    aligned = Prediction(
        np.where(taken[:, None], flipped.pixels, prediction.pixels),
        np.where(taken, flipped.similarity, prediction.similarity) if with_similarity else None,
        prediction.seconds + time.perf_counter() - t0,
    )
    return aligned, FlipResult(original, mirrored, chosen, taken)


def pair_distances(
    pairs: list[PairRecord], members: list[Member], mode: str, masks: str | None, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's distance from its source to its target, and from its mirrored source to its target."""
    distance = mutual_nn_distance if mode == "mutual-nn" else masked_distance
    grid = members[0].features.prep.grid if mode == "mutual-nn" else (MASK_GRID, MASK_GRID)
    mask_of = MaskReader(Path(masks)) if mode == "mask" else None
    out = np.full((2, len(pairs)), np.nan)
    for i, pair in enumerate(tqdm(pairs, desc="flip distances", unit="pair", disable=not progress)):
        target = stacked_features(members, pair.trg.key, grid)
        for j, src in enumerate((pair.src, pair.src.mirror())):
            source = stacked_features(members, src.key, grid)
            if mask_of is None:
                out[j, i] = distance(source, target)
            else:
                out[j, i] = distance(source, target, mask_of(src, pair.category), mask_of(pair.trg, pair.category))
    return out[0], out[1]


def stacked_features(members: list[Member], key: str, grid: tuple[int, int]) -> torch.Tensor:
    """(h * w, C) features of image `key`: each member's on `grid` (bilinear where it differs), times sqrt(its
    weight) when there are several, concatenated over channels."""
    parts = []
    for member in members:
        fs = member.features
        feats = fs.feats[fs.index[key]].float()
        if feats.shape[1:] != grid:
            feats = F.interpolate(feats[None], size=grid, mode="bilinear", align_corners=False)[0]
        parts.append(feats * math.sqrt(member.weight) if len(members) > 1 else feats)
    return torch.cat(parts).flatten(1).T


def mutual_nn_distance(source: torch.Tensor, target: torch.Tensor) -> float:
    """Mean distance of the source patches that are mutual nearest neighbours of a target patch to it."""
    dist = torch.cdist(source[None], target[None])[0]
    nearest, to_target = dist.min(dim=1)
    to_source = dist.argmin(dim=0)
    mutual = to_source[to_target] == torch.arange(len(source), device=source.device)
    return float(nearest[mutual].mean())


def masked_distance(
    source: torch.Tensor, target: torch.Tensor, source_mask: torch.Tensor, target_mask: torch.Tensor
) -> float:
    """Mean over source positions inside the source mask of the distance to the nearest target position, the
    features masked and their zero entries set to MASKED_VALUE (get_distance's rule)."""
    source, target = (masked(f, m) for f, m in ((source, source_mask), (target, target_mask)))
    inside = source_mask.flatten().to(source.device) > 0
    if not inside.any():
        return math.nan
    return float(torch.cdist(source[inside][None], target[None])[0].min(dim=1).values.mean())


def masked(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, C) features times the (h, w) mask, every zero entry set to MASKED_VALUE, in float64."""
    out = features.double() * mask.flatten().to(features.device, torch.float64)[:, None]
    return out.masked_fill(out == 0, MASKED_VALUE)


class MaskReader:
    """Masks in GeoAware-SC's preprocess_mask_sam.py layout: DIR/<category>/<image stem>_mask.png and, for the
    mirror image, _mask_flip.png; each as 0/1 on the MASK_GRID (nearest), read once."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[Path, torch.Tensor] = {}

    def __call__(self, image: ImageRef, category: str) -> torch.Tensor:
        path = self.root / category / f"{Path(image.path).stem}_mask{'_flip' if image.mirrored else ''}.png"
        if path not in self.cache:
            self.cache[path] = read_mask(path)
        return self.cache[path]


def read_mask(path: Path) -> torch.Tensor:
    """A mask image as 0/1 (grey > MASK_THRESHOLD) on the MASK_GRID, nearest-sampled."""
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise DatasetError(
            f"--flip-align mask: no mask {path}; write the masks with GeoAware-SC's preprocess_mask_sam.py (the "
            "same layout under --flip-masks), or use --flip-align mutual-nn, which needs none"
        ) from None
    except OSError as exc:
        raise DatasetError(f"--flip-align mask: cannot read the mask {path}: {exc}") from None
    mask = torch.from_numpy(grey > MASK_THRESHOLD).float()
    return F.interpolate(mask[None, None], size=(MASK_GRID, MASK_GRID), mode="nearest")[0, 0]
