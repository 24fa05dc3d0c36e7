"""The pixel <-> network input <-> patch geometry: one place for every coordinate conversion.

Coordinate convention used everywhere: integer pixel coordinates are pixel *centres*, so the
top-left pixel is (0, 0) and the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. Patch coordinates
follow the same rule on the patch grid: patch (j, i) has its centre at (j, i), and covers network
input pixels [j * P, (j + 1) * P). `pixels_to_input` / `input_to_pixels` map between original pixels
and the backbone's input, `input_to_patch` / `patch_to_input` between the input and the patch grid;
each pair is one exact inverse, and everything else calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

ResizeMode = Literal["squash", "pad"]
Coords = TypeVar("Coords", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the backbone's input: a fixed (height, width) canvas.

    squash: the image is resized to the canvas, ignoring its aspect ratio (the original project).
    pad:    the image is resized to fit inside the canvas keeping its aspect ratio, centred, and the
            rest is filled with the ImageNet mean (zero after normalisation).
    """

    height: int
    width: int
    resize: ResizeMode
    patch_size: int

    @classmethod
    def create(cls, image_size: int | tuple[int, int], patch_size: int, resize: ResizeMode) -> Preprocess:
        """Canvas of `image_size` (side, or (H, W)), each side rounded to a multiple of the patch."""
        if resize not in ("squash", "pad"):
            raise ValueError(f"resize must be 'squash' or 'pad', got {resize!r}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        h, w = (max(patch_size, round(s / patch_size) * patch_size) for s in (h, w))
        return cls(h, w, resize, patch_size)

    @property
    def grid(self) -> tuple[int, int]:
        """Feature map size (rows, cols)."""
        return self.height // self.patch_size, self.width // self.patch_size

    @property
    def key(self) -> str:
        """A short text that identifies the canvas (part of the feature cache key)."""
        return f"{self.height}x{self.width}-{self.resize}-p{self.patch_size}"


def pixels_to_input(xy: Coords, scale: Coords, offset: Coords) -> Coords:
    """Original pixels -> network input pixels: u = (x + 0.5) * s - 0.5 + o (broadcasts)."""
    return (xy + 0.5) * scale - 0.5 + offset


def input_to_pixels(uv: Coords, scale: Coords, offset: Coords) -> Coords:
    """Network input pixels -> original pixels; the exact inverse of pixels_to_input."""
    return (uv - offset + 0.5) / scale - 0.5


@dataclass(frozen=True)
class Geometry:
    """How one image's original pixels sit on the network input: scale (sx, sy) and offset (ox, oy)."""

    scale: tuple[float, float]
    offset: tuple[float, float]  # in input pixels
    content: tuple[int, int]  # (w, h) of the resized image inside the canvas

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        return pixels_to_input(np.asarray(xy, np.float64), np.asarray(self.scale), np.asarray(self.offset))

    def to_original(self, uv: np.ndarray) -> np.ndarray:
        return input_to_pixels(np.asarray(uv, np.float64), np.asarray(self.scale), np.asarray(self.offset))


def image_geometry(size: tuple[int, int], prep: Preprocess) -> Geometry:
    """The geometry of an image of original `size` (W, H) under `prep`."""
    w, h = size
    if prep.resize == "squash":
        return Geometry((prep.width / w, prep.height / h), (0.0, 0.0), (prep.width, prep.height))
    s = min(prep.width / w, prep.height / h)
    cw, ch = max(1, round(w * s)), max(1, round(h * s))
    ox, oy = (prep.width - cw) // 2, (prep.height - ch) // 2
    return Geometry((cw / w, ch / h), (float(ox), float(oy)), (cw, ch))


def input_to_patch(uv: Coords, patch_size: int) -> Coords:
    """Input pixel coordinates -> continuous patch coordinates (patch centres at integers)."""
    return (uv + 0.5) / patch_size - 0.5


def patch_to_input(pq: Coords, patch_size: int) -> Coords:
    """Continuous patch coordinates -> input pixel coordinates (inverse of input_to_patch)."""
    return (pq + 0.5) * patch_size - 0.5


def nearest_patch(pq: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Integer (x, y) index of the patch containing each continuous patch position, clamped to the grid."""
    h, w = grid
    idx = torch.floor(pq + 0.5).long()
    return torch.stack([idx[:, 0].clamp(0, w - 1), idx[:, 1].clamp(0, h - 1)], dim=1)
