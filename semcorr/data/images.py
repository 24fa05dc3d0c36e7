"""Image files: the reference every pair holds (`ImageRef`), decoding to 8-bit RGB, and EXIF orientation.

`load_image` is the one decoder: every image, whatever its mode, becomes 8-bit RGB with its EXIF
orientation applied, so that keypoints, sizes and pixels all refer to the image as a viewer shows
it. `orient_points` / `orient_box` turn annotations made on the stored pixels the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EXIF_ORIENTATION_TAG = 0x0112
MAX_PIXELS_VARIABLE = "SEMCORR_MAX_IMAGE_PIXELS"  # Pillow's decompression-bomb limit; 0: none


class ImageError(ValueError):
    """An image file is missing or cannot be decoded; the message names the file."""


def apply_pixel_limit() -> None:
    """Pillow's decompression-bomb limit from SEMCORR_MAX_IMAGE_PIXELS, when set (read when an image is opened,
    so that a bad value is one clear error, not a failure at import)."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return
    try:
        pixels = int(text)
    except ValueError:
        raise ImageError(
            f"{MAX_PIXELS_VARIABLE}={text!r} is not a number of pixels: set it to a whole number (0: no limit), or unset it"
        ) from None
    Image.MAX_IMAGE_PIXELS = pixels if pixels > 0 else None


@dataclass(frozen=True)
class ImageRef:
    """One image file. `key` identifies it across pairs (dataset/category/name), `size` is (W, H).

    `orientation` is the file's EXIF orientation (1 = none); `size` is already after it, and after a mirror.
    """

    key: str
    path: str
    size: tuple[int, int]
    orientation: int = 1
    mirrored: bool = False  # the image mirrored left-right (after its EXIF orientation)

    def mirror(self) -> ImageRef:
        """The left-right mirror of this image (its own key: its features are cached like any image's)."""
        return replace(self, key=f"{self.key}#mirrored", mirrored=not self.mirrored)


_HEADERS: dict[tuple[str, int, int], tuple[tuple[int, int], int]] = {}


def read_image_header(path: str | Path) -> tuple[tuple[int, int], int]:
    """(W, H) as stored and the EXIF orientation (1..8) of an image, without decoding its pixels.

    Cached per file (path, modification time, size).
    """
    path = str(path)
    apply_pixel_limit()
    try:
        stat = os.stat(path)
    except OSError:
        raise ImageError(f"image not found: {path}") from None
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _HEADERS:
        try:
            with Image.open(path) as im:
                orientation = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
                size = im.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise _unreadable(path, exc) from exc
        _HEADERS[key] = (size, orientation if orientation in range(1, 9) else 1)
    return _HEADERS[key]


def image_ref(key: str, path: str | Path) -> ImageRef:
    """An ImageRef whose size comes from the file header, after EXIF orientation."""
    (w, h), orientation = read_image_header(path)
    size = (h, w) if orientation >= 5 else (w, h)
    return ImageRef(key=key, path=str(path), size=size, orientation=orientation)


def load_image(image: ImageRef | str | Path) -> Image.Image:
    """The image as 8-bit RGB, EXIF orientation applied, whatever its mode.

    Grayscale, CMYK, palette and 16-bit images are converted; transparency is composited on white.
    An ImageRef's file must have the size the ref says (its annotations are in those pixels).
    """
    path = image.path if isinstance(image, ImageRef) else str(image)
    apply_pixel_limit()
    if not os.path.isfile(path):
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            rgb = _to_rgb8(ImageOps.exif_transpose(im))
        if isinstance(image, ImageRef) and image.mirrored:
            rgb = ImageOps.mirror(rgb)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc) from exc
    if isinstance(image, ImageRef) and rgb.size != image.size:
        raise ImageError(
            f"{path} is {rgb.width}x{rgb.height} pixels, but its annotation says {image.size[0]}x{image.size[1]} "
            "(a resized copy of the dataset?): its keypoints would land on the wrong pixels. Use the original "
            "images, or pass --rescale-annotations to scale the annotations to the files."
        )
    return rgb


def _unreadable(path: str, exc: Exception) -> ImageError:
    if isinstance(exc, Image.DecompressionBombError):
        return ImageError(
            f"cannot read image {path}: {exc} If you trust the file, raise the limit with "
            f"{MAX_PIXELS_VARIABLE}=<pixels> (0: no limit) in the environment."
        )
    if isinstance(exc, UnidentifiedImageError):
        return ImageError(f"cannot read image {path}: not an image format Pillow can decode (corrupt file?)")
    return ImageError(f"cannot read image {path}: {exc}")


def _to_rgb8(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I"):  # 16/32-bit integer: I, I;16, I;16B, ...
        values = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def orient_points(points: np.ndarray, orientation: int, stored_size: tuple[int, int]) -> np.ndarray:
    """Map (x, y) on the stored pixels to the image after EXIF orientation (as `load_image` turns it)."""
    if orientation == 1:
        return points
    w, h = stored_size
    x, y = points[:, 0], points[:, 1]
    xr, yr = (w - 1) - x, (h - 1) - y
    new_x, new_y = {
        2: (xr, y), 3: (xr, yr), 4: (x, yr), 5: (y, x), 6: (yr, x), 7: (yr, xr), 8: (y, xr),
    }[orientation]  # fmt: skip
    return np.stack([new_x, new_y], axis=1).astype(points.dtype)


def orient_box(
    box: tuple[float, float, float, float] | None, orientation: int, stored_size: tuple[int, int]
) -> tuple[float, float, float, float] | None:
    """A box (x1, y1, x2, y2) on the stored pixels, after EXIF orientation."""
    if box is None:
        return None
    corners = orient_points(np.array([box[:2], box[2:]], dtype=np.float64), orientation, stored_size)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def stored_size(ref: ImageRef) -> tuple[int, int]:
    """(W, H) of the file's stored pixels (before EXIF orientation)."""
    w, h = ref.size
    return (h, w) if ref.orientation >= 5 else (w, h)
