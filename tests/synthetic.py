"""A deterministic 'backbone' whose right answer is known, and images to go with it.

Images show one object whose colour encodes object coordinates: R = u, G = v (linear ramps over
the object, 0..1) and B = 1; the background is black. The backbone averages each patch's colour
and encodes (u, v) with Gaussian radial basis functions, so the cosine similarity of two patches
peaks where their object coordinates agree. Background and padding get a separate feature.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from helper_functions import IMAGENET_MEAN, IMAGENET_STD
from semcorr.cli.flags import MemberSpec
from semcorr.cli.resolve import normalised_weights, resolve
from semcorr.config.settings import BackboneSettings, EvalSettings, MatchSettings, MemberSettings

BOXES = [(20, 30, 120, 110), (50, 10, 170, 140), (10, 60, 90, 150), (70, 40, 190, 130)]


class ColourCodeBackbone(torch.nn.Module):
    """Implements the Backbone attributes the engine uses, with a known feature function."""

    def __init__(self, patch_size: int = 14, image_size: int = 224, centres: int = 12, sigma: float = 0.06):
        super().__init__()
        self.name = "colourcode"
        self.patch_size = patch_size
        self.default_image_size = image_size
        self.layer = None
        self.device = torch.device("cpu")
        self.autocast_dtype = None
        self.weights_path = "random"
        grid = torch.linspace(0, 1, centres)
        self.register_buffer("centres", torch.cartesian_prod(grid, grid))  # (M, 2) (u, v)
        self.sigma = sigma
        self.feature_dim = len(self.centres) + 1
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        rgb = F.avg_pool2d(images * std + mean, self.patch_size)  # (B, 3, h, w)
        b, _, h, w = rgb.shape
        uv = rgb[:, :2].permute(0, 2, 3, 1).reshape(b, h * w, 2)
        d2 = ((uv[:, :, None, :] - self.centres[None, None]) ** 2).sum(-1)
        code = torch.exp(-d2 / (2 * self.sigma**2))
        inside = (rgb[:, 2] > 0.9).reshape(b, h * w, 1).float()
        feats = torch.cat([code * inside, 1 - inside], dim=2)
        return feats.permute(0, 2, 1).reshape(b, self.feature_dim, h, w)


def render_object(size: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
    """RGB image of (W, H) with the object filling box (x0, y0, x1, y1) in pixel-edge coordinates."""
    w, h = size
    x0, y0, x1, y1 = box
    xs = (np.arange(w) + 0.5 - x0) / (x1 - x0)  # u at each pixel centre
    ys = (np.arange(h) + 0.5 - y0) / (y1 - y0)
    u, v = np.meshgrid(xs, ys)
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    img = np.stack([u, v, np.ones_like(u)], axis=-1) * inside[..., None]
    return Image.fromarray(np.round(img.clip(0, 1) * 255).astype(np.uint8))


def write_colour_pairs(folder: Path, n_images: int = 4, kps: int = 5, seed: int = 0) -> Path:
    """A custom pairs file (semcorr/data/custom_pairs.py format) of colour-coded objects, with exact ground truth:
    every ordered pair of `n_images` images, `kps` keypoints each, categories 'a' and 'b'."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_images):
        name = f"im{i}.png"
        render_object((200 + 10 * i, 160 - 5 * i), BOXES[i]).save(folder / name)
        names.append(name)
    rng = np.random.default_rng(seed)
    entries = []
    for s in range(n_images):
        for t in range(n_images):
            if s != t:
                uv = rng.uniform(0.15, 0.85, (kps, 2))
                sb, tb = np.array(BOXES[s], float), np.array(BOXES[t], float)
                entries.append({
                    "source": names[s], "target": names[t], "category": "ab"[s % 2], "pair_id": f"{s}-{t}",
                    "source_kps": (sb[:2] + uv * (sb[2:] - sb[:2]) - 0.5).tolist(),
                    "target_kps": (tb[:2] + uv * (tb[2:] - tb[:2]) - 0.5).tolist(),
                    "target_bbox": (tb - 0.5).tolist(),
                })  # fmt: skip
    path = folder / "pairs.json"
    path.write_text(json.dumps(entries))
    return path


def colour_backbone(tmp_path: Path, patch_size: int = 8, image_size: int = 128) -> ColourCodeBackbone:
    """A ColourCodeBackbone whose weights file exists, so that the feature cache is used."""
    bb = ColourCodeBackbone(patch_size=patch_size, image_size=image_size)
    weights = tmp_path / f"weights-{patch_size}.bin"
    weights.write_bytes(b"weights")
    bb.weights_path = str(weights)
    return bb


def colour_config(
    tmp_path: Path,
    *,
    image_size: int | tuple[int, int] = 128,
    match: MatchSettings | None = None,
    weights: list[float | None] | None = None,
    **given,
) -> EvalSettings:
    """Settings for the colour-coded pairs, resolved from flags like a script's (`given`, e.g. protocol="original"):
    everything under tmp_path, no workers, bbox PCK at 0.05 and 0.1; one colour-code member at `image_size`, or
    one per ensemble weight in `weights` (normalised as the scripts do; None: equal)."""
    flags = {"dataset": "custom", "cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "results"),
             "num_workers": 0, "batch_size": 3, "quiet": True, "pck_norm": "bbox", "thresholds": (0.05, 0.1)}  # fmt: skip
    settings = resolve("evaluation", {**flags, **given})
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    specs = [MemberSpec("colourcode", weight=w) for w in weights or [None]]
    members = tuple(
        MemberSettings(BackboneSettings(model="colourcode"), size, settings.member.resize, w)
        for w in normalised_weights(specs)
    )
    settings = replace(settings, members=members)
    return replace(settings, match=replace(match, window_border=settings.match.window_border)) if match else settings


SRC_BOX, TRG_BOX = (20, 30, 120, 110), (50, 10, 170, 140)  # the object in the source and target images


def colour_images(tmp_path: Path) -> tuple[Path, Path]:
    """A source (200x160) and a target (230x150) image of the colour-coded object, at SRC_BOX and TRG_BOX."""
    src, trg = tmp_path / "src.png", tmp_path / "trg.png"
    render_object((200, 160), SRC_BOX).save(src)
    render_object((230, 150), TRG_BOX).save(trg)
    return src, trg
