"""Image decoding (every mode to 8-bit RGB) and EXIF orientation, for images and keypoints alike."""

import re

import numpy as np
import pytest
from dataset_factory import UNDO_ORIENTATION, FakeImage, render, write_image
from PIL import Image

from semcorr.data.images import ImageError, ImageRef, image_ref, load_image, orient_box, orient_points

WHITE, RED = (255, 255, 255), (255, 0, 0)


def rgba_image():
    im = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    im.putpixel((3, 1), (0, 0, 255, 0))  # fully transparent blue
    return im


def palette_image(transparent: bool):
    im = Image.new("P", (4, 2), 1)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.putpixel((3, 1), 2)
    if transparent:
        im.info["transparency"] = 2
    return im


# name, image, file suffix, expected RGB at (0, 0) and at (3, 1)
MODES = [
    ("L", Image.new("L", (4, 2), 200), ".png", (200,) * 3, (200,) * 3),
    ("1", Image.new("1", (4, 2), 1), ".png", WHITE, WHITE),
    ("LA", Image.new("LA", (4, 2), (90, 0)), ".png", WHITE, WHITE),
    ("RGBA", rgba_image(), ".png", RED, WHITE),
    ("P", palette_image(False), ".png", RED, (0, 255, 0)),
    ("P+transparency", palette_image(True), ".png", RED, WHITE),
    ("I;16", Image.fromarray(np.full((2, 4), 65535, np.uint16)), ".png", WHITE, WHITE),
    ("I;16 mid", Image.fromarray(np.full((2, 4), 32896, np.uint16)), ".png", (128,) * 3, (128,) * 3),
    ("CMYK", Image.new("CMYK", (4, 2), (0, 0, 0, 0)), ".jpg", WHITE, WHITE),
    ("RGB", Image.new("RGB", (4, 2), RED), ".jpg", RED, RED),
]


@pytest.mark.parametrize(("name", "image", "suffix", "at_00", "at_31"), MODES, ids=[m[0] for m in MODES])
def test_every_mode_decodes_to_8bit_rgb(tmp_path, name, image, suffix, at_00, at_31):
    path = tmp_path / f"image{suffix}"
    image.save(path, quality=100) if suffix == ".jpg" else image.save(path)
    with Image.open(path) as stored:
        assert stored.mode == image.mode  # the file really is in that mode
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (4, 2)
    tolerance = 3 if suffix == ".jpg" else 0
    np.testing.assert_allclose(rgb.getpixel((0, 0)), at_00, atol=tolerance)
    np.testing.assert_allclose(rgb.getpixel((3, 1)), at_31, atol=tolerance)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_points_moves_keypoints_with_the_pixels(tmp_path, orientation):
    """Each stored pixel carries its own (x, y); after EXIF transposition the pixel found at the
    oriented position of (x, y) must be that pixel."""
    w, h = 5, 3
    ys, xs = np.mgrid[0:h, 0:w]
    stored = Image.fromarray(np.stack([xs * 40, ys * 80, np.zeros_like(xs)], -1).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "coded.png"
    stored.save(path, exif=exif)
    ref = image_ref("test/coded", path)
    loaded = np.asarray(load_image(ref))
    assert (loaded.shape[1], loaded.shape[0]) == ref.size == ((h, w) if orientation >= 5 else (w, h))
    points = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    moved = orient_points(points, orientation, (w, h))
    for (x, y), (mx, my) in zip(points, moved, strict=True):
        assert tuple(loaded[int(my), int(mx), :2]) == (x * 40, y * 80)
    # the box must enclose exactly the loaded pixels that come from inside the stored box
    from_box = (loaded[..., 0] >= 1 * 40) & (loaded[..., 0] <= 3 * 40) & (loaded[..., 1] >= 1 * 80)
    rows, cols = np.nonzero(from_box)
    box = orient_box((1.0, 1.0, 3.0, 2.0), orientation, (w, h))
    assert box == (cols.min(), rows.min(), cols.max(), rows.max())


def test_every_exif_orientation_is_applied_to_size_and_pixels(tmp_path):
    """A file stored turned, with the EXIF tag that says so, loads as the upright image."""
    for orientation in UNDO_ORIENTATION:
        image = FakeImage("x", "c", (7, 4), {0: (1.0, 2.0), 1: (5.0, 1.0)}, orientation=orientation)
        ref = image_ref("t", write_image(tmp_path / f"{orientation}.png", image))
        assert ref.size == (7, 4) and ref.orientation == orientation
        np.testing.assert_array_equal(np.asarray(load_image(ref)), np.asarray(render(image)))


def test_unreadable_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageError, match=re.escape(f"cannot read image {bad}")):
        load_image(bad)
    with pytest.raises(ImageError, match=re.escape(f"cannot read image {bad}")):
        image_ref("k", bad)
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (64, 64), RED).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ImageError, match=re.escape(f"cannot read image {truncated}")):
        load_image(truncated)
    with pytest.raises(ImageError, match=r"image not found: .*missing.png"):
        load_image(ImageRef("k", str(tmp_path / "missing.png"), (1, 1)))
