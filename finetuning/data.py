"""Training pairs: both images of a pair, augmented so that correspondences stay valid, and their
keypoints as continuous patch positions on the backbone's input (the engine's one geometry).

Samples are indexed by (epoch, pair index) and every random choice comes from a generator seeded
with (seed, epoch, pair index): the same sample with any number of loader workers or processes,
and again after --resume.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch.utils.data import Dataset, DistributedSampler

from helper_functions import preprocess_image
from semcorr.config.settings import Augment
from semcorr.data.geometry import Preprocess, image_geometry, input_to_patch
from semcorr.data.images import ImageError, load_image
from semcorr.data.pairs import PairRecord


def flip_keypoints(kps: np.ndarray, width: int) -> np.ndarray:
    """(x, y) after mirroring an image of `width` pixels (pixel centres: x -> W - 1 - x)."""
    out = kps.copy()
    out[:, 0] = (width - 1) - out[:, 0]
    return out


def jitter_image(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation, each by a factor in [1 - strength, 1 + strength]."""
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return image


def keypoints_to_patches(kps: np.ndarray, size: tuple[int, int], prep: Preprocess) -> torch.Tensor:
    """(K, 2) original pixels of an image of `size` (W, H) -> continuous patch positions (x, y)."""
    uv = image_geometry(size, prep).to_input(kps)
    return torch.from_numpy(input_to_patch(uv, prep.patch_size, prep.coordinates)).float()


class TrainingPairs(Dataset):
    """Pairs as training samples, indexed by (epoch, i).

    A sample holds `src_pq` / `trg_pq` (K, 2) patch positions, the image keys and, unless
    `load_images` is False (the frozen-feature cache holds the images' features), both
    preprocessed images.
    """

    def __init__(
        self, pairs: list[PairRecord], prep: Preprocess, augment: Augment, seed: int, load_images: bool = True
    ):
        self.pairs, self.prep, self.augment, self.seed, self.load_images = pairs, prep, augment, seed, load_images

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: tuple[int, int]) -> dict:
        epoch, i = index
        pair = self.pairs[i]
        sample = {"src_key": pair.src.key, "trg_key": pair.trg.key}
        src_kps, trg_kps = pair.src_kps.astype(np.float64), pair.trg_kps.astype(np.float64)
        if not self.load_images:
            return sample | self._targets(pair, src_kps, trg_kps)
        rng = np.random.default_rng([self.seed, epoch, i])
        try:
            src, trg = load_image(pair.src), load_image(pair.trg)
        except ImageError as err:  # raised again in the main process (see collate)
            return {"error": str(err)}
        if self.augment.flip and rng.random() < 0.5:
            src, trg = ImageOps.mirror(src), ImageOps.mirror(trg)
            src_kps, trg_kps = flip_keypoints(src_kps, src.width), flip_keypoints(trg_kps, trg.width)
        if self.augment.jitter > 0:
            src, trg = (jitter_image(im, self.augment.jitter, rng) for im in (src, trg))
        images = {"src": preprocess_image(src, self.prep), "trg": preprocess_image(trg, self.prep)}
        return sample | images | self._targets(pair, src_kps, trg_kps)

    def _targets(self, pair: PairRecord, src_kps: np.ndarray, trg_kps: np.ndarray) -> dict:
        return {
            "src_pq": keypoints_to_patches(src_kps, pair.src.size, self.prep),
            "trg_pq": keypoints_to_patches(trg_kps, pair.trg.size, self.prep),
        }


def collate(samples: list[dict]) -> dict:
    """Stack a batch; keypoints are padded to the largest count, with `mask` marking the real ones.

    `images` is (2B, 3, H, W): the B source images, then the B target images. A sample whose image
    cannot be used makes the batch {"error": message}, which `checked` raises in the main process.
    """
    errors = [s["error"] for s in samples if "error" in s]
    if errors:
        return {"error": errors[0]}
    k = max(len(s["src_pq"]) for s in samples)
    b = len(samples)
    src_pq, trg_pq = torch.zeros(b, k, 2), torch.zeros(b, k, 2)
    mask = torch.zeros(b, k, dtype=torch.bool)
    for j, s in enumerate(samples):
        n = len(s["src_pq"])
        src_pq[j, :n], trg_pq[j, :n], mask[j, :n] = s["src_pq"], s["trg_pq"], True
    batch = {
        "src_pq": src_pq,
        "trg_pq": trg_pq,
        "mask": mask,
        "keys": [s["src_key"] for s in samples] + [s["trg_key"] for s in samples],
    }
    if "src" in samples[0]:
        batch["images"] = torch.stack([s["src"] for s in samples] + [s["trg"] for s in samples])
    return batch


def checked(batch: dict) -> dict:
    """The batch, or the ImageError of an image a worker could not use (naming the file)."""
    if "error" in batch:
        raise ImageError(batch["error"])
    return batch


def epoch_batches(
    num_pairs: int, batch_size: int, epoch: int, seed: int, *, rank: int = 0, world: int = 1
) -> list[list]:
    """This process's batches of (epoch, pair index) for one epoch, in order.

    The shuffle is DistributedSampler's (seeded by seed + epoch, the same in every process): with
    G processes and batch B, global step s covers the same pairs as one process with batch G x B.
    """
    sampler = DistributedSampler(range(num_pairs), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = [(epoch, i) for i in sampler]
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]
