"""The pixel <-> network input <-> patch geometry: one place for every coordinate conversion.

Coordinate convention ("centre", the default): integer pixel coordinates are pixel *centres*, so
the top-left pixel is (0, 0) and the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. Patch and
network-input coordinates follow the same rule: patch (j, i) has its centre at (j, i), and covers
network input pixels [j * P, (j + 1) * P). The original project's convention ("corner", its protocol)
puts 0 at the image's edge instead: a point x lands at x * S / W on the input, a keypoint takes the
patch floor(x * S / W / P), and patch p maps back to (p + 0.5) * P * W / S. `pixels_to_input` /
`input_to_pixels` map between original pixels and the backbone's input (the convention is their
`origin`: 0.5 for centre, 0 for corner), `input_to_patch` / `patch_to_input` between the input and
the patch grid; each pair is one exact inverse, and everything else calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

from semcorr.config.settings import RESAMPLE_METHODS, RESIZE_MODES

ResizeMode = Literal["squash", "pad"]
Coords = TypeVar("Coords", np.ndarray, torch.Tensor)
ORIGINS = {"centre": 0.5, "corner": 0.0}  # where pixel coordinate 0 lies, from the image's left edge


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the backbone's input: a fixed (height, width) canvas.

    squash: the image is resized to the canvas, ignoring its aspect ratio (the original project).
    pad:    the image is resized to fit inside the canvas keeping its aspect ratio, centred, and the
            rest is filled with the ImageNet mean (zero after normalisation).
    resample: "pil-bicubic" resizes the 8-bit image (PIL, antialiased); "torch-bilinear" the
            normalised float tensor (F.interpolate, align_corners=False, no antialias: the original project).
    coordinates: "centre" or "corner" (see the module docstring).
    """

    height: int
    width: int
    resize: ResizeMode
    patch_size: int
    resample: str = "pil-bicubic"
    coordinates: str = "centre"

    @classmethod
    def create(
        cls,
        image_size: int | tuple[int, int],
        patch_size: int,
        resize: ResizeMode,
        *,
        resample: str = "pil-bicubic",
        coordinates: str = "centre",
    ) -> Preprocess:
        """Canvas of `image_size` (side, or (H, W)), each side rounded to a multiple of the patch."""
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        if resample not in RESAMPLE_METHODS:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLE_METHODS)}, got {resample!r}")
        if coordinates not in ORIGINS:
            raise ValueError(f"coordinates must be one of {', '.join(ORIGINS)}, got {coordinates!r}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        h, w = (max(patch_size, round(s / patch_size) * patch_size) for s in (h, w))
        return cls(h, w, resize, patch_size, resample, coordinates)

    @property
    def grid(self) -> tuple[int, int]:
        """Feature map size (rows, cols)."""
        return self.height // self.patch_size, self.width // self.patch_size

    @property
    def key(self) -> str:
        """A short text that identifies the network input (part of the feature cache key)."""
        base = f"{self.height}x{self.width}-{self.resize}-p{self.patch_size}"
        return base if self.resample == "pil-bicubic" else f"{base}-{self.resample}"


def pixels_to_input(xy: Coords, content: Coords, size: Coords, offset: Coords, origin: float = 0.5) -> Coords:
    """Original pixels -> network input pixels: u = (x + origin) * content / size - 0.5 + o (broadcasts).

    The scale is applied as content / size, not as a precomputed ratio, so that a point on a patch
    border lands exactly on it (x * 512 / 96 at x = 3 is 16, where x * (512 / 96) is 15.999...).
    The corner convention (origin 0) is the original project's, computed as it did: its keypoints
    were float32, so x * (S / W) was a float32 product (55 * 512 / 110 gives 255.99998, not 256).
    """
    if origin == 0.0:
        return _float32_product(xy, content / size) - 0.5 + offset
    return (xy + origin) * content / size - 0.5 + offset


def _float32_product(a: Coords, b: Coords) -> Coords:
    """a * b rounded as float32 operands and product, returned in a's dtype (numpy or torch)."""
    if isinstance(a, torch.Tensor):
        return (a.float() * torch.as_tensor(b).float()).to(a.dtype)
    return (np.asarray(a, np.float32) * np.asarray(b, np.float32)).astype(np.asarray(a).dtype)


def input_to_pixels(uv: Coords, content: Coords, size: Coords, offset: Coords, origin: float = 0.5) -> Coords:
    """Network input pixels -> original pixels; the exact inverse of pixels_to_input."""
    return (uv - offset + 0.5) * size / content - origin


@dataclass(frozen=True)
class Geometry:
    """How one image's original pixels sit on the network input: resized from `size` to `content`,
    placed at `offset`."""

    size: tuple[int, int]  # (w, h) of the original image
    content: tuple[int, int]  # (w, h) of the resized image inside the canvas
    offset: tuple[float, float]  # where the content starts on the canvas, in input pixels
    origin: float = 0.5  # ORIGINS of the coordinate convention

    @property
    def scale(self) -> tuple[float, float]:
        return (self.content[0] / self.size[0], self.content[1] / self.size[1])

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        xy, (content, size, offset) = np.asarray(xy, np.float64), self.arrays()
        return pixels_to_input(xy, content, size, offset, self.origin)

    def to_original(self, uv: np.ndarray) -> np.ndarray:
        uv, (content, size, offset) = np.asarray(uv, np.float64), self.arrays()
        return input_to_pixels(uv, content, size, offset, self.origin)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """content, size and offset as float64 arrays."""
        return tuple(np.asarray(v, np.float64) for v in (self.content, self.size, self.offset))


def image_geometry(size: tuple[int, int], prep: Preprocess) -> Geometry:
    """The geometry of an image of original `size` (W, H) under `prep`."""
    w, h = size
    origin = ORIGINS[prep.coordinates]
    if prep.resize == "squash":
        return Geometry((w, h), (prep.width, prep.height), (0.0, 0.0), origin)
    s = min(prep.width / w, prep.height / h)
    cw, ch = max(1, round(w * s)), max(1, round(h * s))
    ox, oy = (prep.width - cw) // 2, (prep.height - ch) // 2
    return Geometry((w, h), (cw, ch), (float(ox), float(oy)), origin)


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
