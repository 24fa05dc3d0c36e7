"""Image preprocessing and batched dense feature extraction (each unique image through the backbone once).

Coordinates and the resize geometry live in semcorr/data/geometry.py; image decoding in semcorr/data/images.py.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from semcorr.config.settings import ExtractSettings
from semcorr.data.geometry import Geometry, Preprocess, image_geometry
from semcorr.data.images import ImageError, ImageRef, load_image
from semcorr.storage.feature_cache import CachedFeatures, FeatureCache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIL_FILTERS = {"pil-bicubic": Image.Resampling.BICUBIC, "pil-lanczos": Image.Resampling.LANCZOS}


def member_preprocess(
    image_size: tuple[int, int], resize: str, extract: ExtractSettings, patch_size: int
) -> Preprocess:
    """The network input of a backbone with `patch_size`: `image_size` (H, W) and `resize`, with the run's
    resampling, coordinate convention and padding fill."""
    return Preprocess.create(
        tuple(image_size), patch_size, resize, resample=extract.resample, coordinates=extract.coordinates,
        fill=extract.pad_fill,
    )  # fmt: skip


def preprocess_image(image: Image.Image, prep: Preprocess) -> torch.Tensor:
    """PIL RGB image -> normalised (3, H, W) float tensor on the canvas described by `prep`."""
    geom = image_geometry(image.size, prep)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    black = prep.resize == "pad" and prep.fill == "black"  # else the mean colour: zero once normalised
    canvas = ((torch.zeros(3, 1, 1) - mean) / std).repeat(1, prep.height, prep.width) if black else None
    canvas = torch.zeros(3, prep.height, prep.width) if canvas is None else canvas
    ox, oy = int(geom.offset[0]), int(geom.offset[1])
    content = canvas[:, oy : oy + geom.content[1], ox : ox + geom.content[0]]
    if prep.resample == "torch-bilinear":  # as the original project: normalise, then resize the float tensor
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255.0
        content.copy_(
            F.interpolate(((pixels - mean) / std)[None], geom.content[::-1], mode="bilinear", align_corners=False)[0]
        )
    else:  # "pil-bicubic" or "pil-lanczos" (Preprocess.create checks the name): 8-bit, normalised in place
        resized = image.resize(geom.content, PIL_FILTERS[prep.resample])
        content.copy_(torch.from_numpy(np.array(resized)).permute(2, 0, 1)).div_(255.0).sub_(mean).div_(std)
    return canvas


class ImageDataset(Dataset):
    """Images decoded and preprocessed on the fly (in DataLoader workers): yields (index, tensor), or
    (index, message) for a file that cannot be used: `collate_images` passes the message on, and the
    main process raises it with `raise_unusable`, naming the file without the worker's traceback."""

    def __init__(self, images: list[ImageRef], prep: Preprocess):
        self.images, self.prep = images, prep

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | str]:
        try:
            return i, preprocess_image(load_image(self.images[i]), self.prep)
        except ImageError as err:
            return i, str(err)


def collate_images(items: list[tuple[int, torch.Tensor | str]]) -> tuple[torch.Tensor, torch.Tensor | str]:
    """A batch of ImageDataset items: (indices, images), or (indices, the first unusable image's message)."""
    errors = [item for _, item in items if isinstance(item, str)]
    return torch.tensor([i for i, _ in items]), errors[0] if errors else torch.stack([t for _, t in items])


def raise_unusable(batch: torch.Tensor | str) -> torch.Tensor:
    """The batch's images; an image a worker could not use raises its ImageError here."""
    if isinstance(batch, str):
        raise ImageError(batch)
    return batch


@dataclass
class FeatureSet:
    """L2-normalised dense features of a set of images, all on the same grid.

    feats: (N, C, h, w), stored in `dtype` on `device` (a tensor, or CachedFeatures read from the disk cache per
    image when they do not fit in memory: index it by row); index maps ImageRef.key -> row.
    """

    feats: torch.Tensor | CachedFeatures
    index: dict[str, int]
    prep: Preprocess
    geometries: dict[str, Geometry]
    stats: dict[str, float]

    def rows(self, keys: list[str]) -> torch.Tensor:
        return torch.tensor([self.index[k] for k in keys], dtype=torch.long)


def check_finite(backbone: torch.nn.Module, bad: list[ImageRef], total: int) -> None:
    """Refuse features holding NaN or inf: every prediction from them would land on one pixel."""
    if bad:
        raise ValueError(
            f"{backbone.name} ({getattr(backbone, 'weights_path', None) or 'its weights'}) gave non-finite features "
            f"(NaN or inf) for {len(bad)} of {total} images, e.g. {bad[0].path}: its weights hold NaN or inf (a "
            "diverged fine-tuning?), or the precision overflows (try --precision fp32)"
        )


STORE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}  # ExtractSettings.feature_dtype
MAX_PENDING_WRITES = 4  # batches of features waiting to be written to the cache while the next are computed


def feature_budget(extract: ExtractSettings, device: torch.device) -> int:
    """Bytes of features a run holds in memory (beyond, they are read from the disk cache per image): the
    setting's, else 1 GB on the CPU (a laptop's share) and half the free memory of a GPU."""
    if extract.feature_memory_gb is not None:
        return int(extract.feature_memory_gb * 2**30)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return 2**30


def extract_features(
    backbone: torch.nn.Module,
    images: list[ImageRef],
    prep: Preprocess,
    extract: ExtractSettings,
    *,
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> FeatureSet:
    """Run each image through the backbone once (batched by `extract.batch_size`, decoded by
    `extract.num_workers` processes), reusing and filling the disk cache.

    Features are stored in `extract.feature_dtype` (on the backbone's device) and L2-normalised over
    channels so that a dot product is the cosine similarity. Features larger than the run's budget
    (feature_budget) are not held: they are written to the cache (a temporary one where the run keeps none) and
    read back one image at a time (CachedFeatures), so that memory stays within the budget whatever the number
    of images.
    """
    device, store_dtype = backbone.device, STORE_DTYPES[extract.feature_dtype]
    shape = (backbone.feature_dim, *prep.grid)
    budget = feature_budget(extract, device)
    nbytes = len(images) * math.prod(shape) * torch.empty((), dtype=store_dtype).element_size()
    streamed = nbytes > budget
    if streamed and cache is None:
        cache = FeatureCache.temporary(extract.cache_dir, {"backbone": backbone.name, "run": "temporary"})
    feats = None if streamed else torch.empty(len(images), *shape, dtype=store_dtype, device=device)
    finite = torch.ones(len(images), dtype=torch.bool, device=device)
    with ThreadPoolExecutor(max_workers=4) as io:  # cache files are written beside the compute
        t0 = time.perf_counter()
        todo = []  # cached entries are read in turn: threads only contend for the interpreter (2x slower)
        for i, c in enumerate(map(lambda ref: cache.load(ref, shape), images) if cache else [None] * len(images)):
            if c is None:
                todo.append(i)
            elif feats is not None:
                feats[i] = c.to(device=device, dtype=store_dtype)  # cached features are normalised
        t_cache = time.perf_counter() - t0
        t0 = time.perf_counter()
        loader = DataLoader(
            ImageDataset([images[i] for i in todo], prep),
            batch_size=extract.batch_size,
            num_workers=extract.num_workers,
            collate_fn=collate_images,
            pin_memory=device.type == "cuda",
        )
        bar = tqdm(total=len(todo), desc=f"features {backbone.name}", unit="img", disable=not progress or not todo)
        writes = []
        with torch.inference_mode(), bar:
            for local_idx, batch in loader:
                batch = raise_unusable(batch).to(device, non_blocking=True)
                out = F.normalize(backbone(batch).float(), dim=1).to(store_dtype)
                rows = [todo[j] for j in local_idx.tolist()]
                if feats is not None:
                    feats[rows] = out
                finite[rows] = torch.isfinite(out).flatten(1).all(dim=1)
                if cache is not None:
                    writes.append(io.submit(cache.save, [images[r] for r in rows], out))
                    if len(writes) > MAX_PENDING_WRITES:  # a slow disk holds the batches back, not memory
                        writes.pop(0).result()
                bar.update(len(rows))
        for write in writes:
            write.result()  # an error while writing the cache surfaces here
    check_finite(backbone, [ref for ref, ok in zip(images, finite.tolist(), strict=True) if not ok], len(images))
    if streamed:
        check_streamable(cache, nbytes, budget)
        feats = CachedFeatures(cache, images, shape, store_dtype, device, keep_bytes=budget)
    stats = {"images": len(images), "images_extracted": len(todo), "images_from_cache": len(images) - len(todo)}
    stats |= {"extraction_s": time.perf_counter() - t0, "cache_read_s": t_cache}
    stats |= {"features_gb": nbytes / 2**30, "features_streamed": streamed}
    return FeatureSet(
        feats=feats,
        index={ref.key: i for i, ref in enumerate(images)},
        prep=prep,
        geometries={ref.key: image_geometry(ref.size, prep) for ref in images},
        stats=stats,
    )


def check_streamable(cache: FeatureCache, nbytes: int, budget: int) -> None:
    """Features beyond the memory budget are read back from the cache, so it must have been written."""
    if cache.write_error is not None:
        raise RuntimeError(
            f"the features ({nbytes / 2**30:.1f} GB) exceed the memory budget ({budget / 2**30:.1f} GB) and so are "
            f"read back from the feature cache, which could not be written ({cache.write_error}): free space there, "
            "choose another --cache-dir, or raise --feature-memory"
        )
