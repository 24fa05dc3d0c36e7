"""The pixel <-> network input <-> patch geometry: one place for every coordinate conversion.

Coordinate conventions (`Preprocess.coordinates`):

- "centre" (the default): integer pixel coordinates are pixel *centres*, so the top-left pixel is (0, 0)
  and the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. Patch and network-input coordinates follow the
  same rule: patch (j, i) has its centre at (j, i), and covers network input pixels [j * P, (j + 1) * P).
- "corner" (the original project's protocol): 0 is the image's edge; a point x lands at x * S / W on the
  input (a float32 product, as the original computed it), a keypoint takes the patch floor(x * S / W / P),
  and patch p maps back to (p + 0.5) * P * W / S.
- "canvas" (GeoAware-SC's protocol, with resize "pad"): one scale s = (canvas long side) / (image long
  side) for both axes, the point at float32 x * float32(s) plus the integer padding offset, in float32 (0 at the edge),
  its patch the float32 product with float32(1 / P) truncated, and patch p back at (p * P + P / 2 - offset) / s.

`pixels_to_input` / `input_to_pixels` map between original pixels and the backbone's input (in input pixel
coordinates, pixel centres at integers), `input_to_patch` / `patch_to_input` between the input and the patch
grid; each pair is one exact inverse, and everything else calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

from semcorr.config.settings import COORDINATE_CONVENTIONS, PAD_FILLS, RESAMPLE_METHODS, RESIZE_MODES

ResizeMode = Literal["squash", "pad"]
Coords = TypeVar("Coords", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the backbone's input: a fixed (height, width) canvas.

    squash: the image is resized to the canvas, ignoring its aspect ratio (the original project).
    pad:    the image is resized to fit inside the canvas keeping its aspect ratio (the constrained side to the
            canvas, the other to round(side * short / long)), centred with the odd pixel at the bottom / right,
            and the rest filled (`fill`): the ImageNet mean (zero once normalised), or black.
    resample: "pil-bicubic" / "pil-lanczos" resize the 8-bit image (PIL, antialiased); "torch-bilinear" the
            normalised float tensor (F.interpolate, align_corners=False, no antialias: the original project).
    coordinates: "centre", "corner" or "canvas" (see the module docstring).
    """

    height: int
    width: int
    resize: ResizeMode
    patch_size: int
    resample: str = "pil-bicubic"
    coordinates: str = "centre"
    fill: str = "mean"

    @classmethod
    def create(
        cls,
        image_size: int | tuple[int, int],
        patch_size: int,
        resize: ResizeMode,
        *,
        resample: str = "pil-bicubic",
        coordinates: str = "centre",
        fill: str = "mean",
    ) -> Preprocess:
        """Canvas of `image_size` (side, or (H, W)), each side rounded to a multiple of the patch."""
        for name, value, choices in (
            ("resize", resize, RESIZE_MODES), ("resample", resample, RESAMPLE_METHODS),
            ("coordinates", coordinates, COORDINATE_CONVENTIONS), ("fill", fill, PAD_FILLS),
        ):  # fmt: skip
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if coordinates == "canvas" and resize != "pad":
            raise ValueError("coordinates 'canvas' scale keypoints onto a padded canvas: use resize 'pad'")
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        h, w = (max(patch_size, round(s / patch_size) * patch_size) for s in (h, w))
        return cls(h, w, resize, patch_size, resample, coordinates, fill)

    @property
    def grid(self) -> tuple[int, int]:
        """Feature map size (rows, cols)."""
        return self.height // self.patch_size, self.width // self.patch_size

    @property
    def key(self) -> str:
        """A short text that identifies the network input (part of the feature cache key)."""
        base = f"{self.height}x{self.width}-{self.resize}-p{self.patch_size}"
        base += "" if self.resample == "pil-bicubic" else f"-{self.resample}"
        return base + ("-black" if self.resize == "pad" and self.fill == "black" else "")


def _float32_product(a: Coords, b: Coords, plus: Coords | float = 0.0) -> Coords:
    """a * b (+ plus) with float32 operands, each operation rounded to float32, returned in a's dtype."""
    if isinstance(a, torch.Tensor):
        return (a.float() * torch.as_tensor(b).float() + torch.as_tensor(plus).float()).to(a.dtype)
    f32 = (np.asarray(v, np.float32) for v in (a, b, plus))
    return (next(f32) * next(f32) + next(f32)).astype(np.asarray(a).dtype)


def _isotropic_scale(content: Coords, size: Coords) -> Coords:
    """The canvas convention's one scale per image: the long side's (content and size are (..., 2))."""
    if isinstance(content, torch.Tensor):
        return content.amax(dim=-1, keepdim=True) / size.amax(dim=-1, keepdim=True)
    return np.max(content, axis=-1, keepdims=True) / np.max(size, axis=-1, keepdims=True)


def pixels_to_input(xy: Coords, content: Coords, size: Coords, offset: Coords, convention: str = "centre") -> Coords:
    """Original pixels -> network input pixels (broadcasts over (..., 2) arrays or tensors).

    centre: u = (x + 0.5) * content / size - 0.5 + o, the scale applied as content / size, not as a precomputed
    ratio, so that a point on a patch border lands exactly on it (x * 512 / 96 at x = 3 is 16, where
    x * (512 / 96) is 15.999...). corner: the original project's float32 product x * (S / W) (55 * 512 / 110
    gives 255.99998, not 256), minus 0.5. canvas: GeoAware-SC's float32 x * float32(s) + offset, in float32, minus 0.5.
    """
    if convention == "centre":
        return (xy + 0.5) * content / size - 0.5 + offset
    if convention == "corner":
        return _float32_product(xy, content / size) - 0.5 + offset
    return _float32_product(xy, _isotropic_scale(content, size), offset) - 0.5


def input_to_pixels(uv: Coords, content: Coords, size: Coords, offset: Coords, convention: str = "centre") -> Coords:
    """Network input pixels -> original pixels; the exact inverse of pixels_to_input."""
    if convention == "centre":
        return (uv - offset + 0.5) * size / content - 0.5
    if convention == "corner":
        return (uv - offset + 0.5) * size / content
    return (uv - offset + 0.5) / _isotropic_scale(content, size)


@dataclass(frozen=True)
class Geometry:
    """How one image's original pixels sit on the network input: resized from `size` to `content`,
    placed at `offset`."""

    size: tuple[int, int]  # (w, h) of the original image
    content: tuple[int, int]  # (w, h) of the resized image inside the canvas
    offset: tuple[float, float]  # where the content starts on the canvas, in input pixels
    convention: str = "centre"  # Preprocess.coordinates

    @property
    def scale(self) -> tuple[float, float]:
        return (self.content[0] / self.size[0], self.content[1] / self.size[1])

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        xy, (content, size, offset) = np.asarray(xy, np.float64), self.arrays()
        return pixels_to_input(xy, content, size, offset, self.convention)

    def to_original(self, uv: np.ndarray) -> np.ndarray:
        uv, (content, size, offset) = np.asarray(uv, np.float64), self.arrays()
        return input_to_pixels(uv, content, size, offset, self.convention)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """content, size and offset as float64 arrays."""
        return tuple(np.asarray(v, np.float64) for v in (self.content, self.size, self.offset))


def image_geometry(size: tuple[int, int], prep: Preprocess) -> Geometry:
    """The geometry of an image of original `size` (W, H) under `prep`."""
    w, h = size
    if prep.resize == "squash":
        return Geometry((w, h), (prep.width, prep.height), (0.0, 0.0), prep.coordinates)
    if prep.width * h <= prep.height * w:  # the width fills the canvas
        cw, ch = prep.width, max(1, round(prep.width * h / w))
    else:
        cw, ch = max(1, round(prep.height * w / h)), prep.height
    ox, oy = (prep.width - cw) // 2, (prep.height - ch) // 2
    return Geometry((w, h), (cw, ch), (float(ox), float(oy)), prep.coordinates)


def input_to_patch(uv: Coords, patch_size: int, convention: str = "centre") -> Coords:
    """Input pixel coordinates -> continuous patch coordinates (patch centres at integers); under the canvas
    convention the edge-based coordinate times float32(1 / P) in float32, so that its patch is GeoAware-SC's."""
    if convention == "canvas":
        return _float32_product(uv + 0.5, 1.0 / patch_size) - 0.5
    return (uv + 0.5) / patch_size - 0.5


def patch_to_input(pq: Coords, patch_size: int) -> Coords:
    """Continuous patch coordinates -> input pixel coordinates (inverse of input_to_patch)."""
    return (pq + 0.5) * patch_size - 0.5


def mirror_input(u: Coords, content: Coords, offset: Coords, width: int, convention: str = "centre") -> Coords:
    """The input x coordinate, on the mirrored image's input, of the point at input x `u` of the image: the
    exact mirror of the content (its mirrored image has the same geometry), or under the canvas convention
    GeoAware-SC's mirror of the canvas, width - x (a pixel off when the image's horizontal padding is odd)."""
    if convention == "canvas":
        return width - 1 - u
    return 2 * offset + content - 1 - u


def nearest_patch(pq: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Integer (x, y) index of the patch containing each continuous patch position, clamped to the grid."""
    h, w = grid
    idx = torch.floor(pq + 0.5).long()
    return torch.stack([idx[:, 0].clamp(0, w - 1), idx[:, 1].clamp(0, h - 1)], dim=1)
