"""What an image costs before the backbone: decoding, resizing and normalising, per image, at 518 and 840 px.

    python benchmarks/bench_image_pipeline.py [--images 48] [--threads 1]

Synthetic JPEGs of SPair-71k's sizes (about 500 x 375, quality 90). For each stage it prints the milliseconds per
image of each way of doing it, and whether a faster way gives the same pixels as the one a protocol requires:

- decode: PIL (Pillow's libjpeg-turbo) or torchvision.io.decode_jpeg (its own libjpeg-turbo);
- resize: PIL bicubic (default protocol) / LANCZOS (geoaware) on the 8-bit image, or torch's antialiased bicubic
  on the uint8 tensor;
- the whole preprocess_image of each protocol, and the backbone's forward pass on one image for scale.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helper_functions import member_preprocess, preprocess_image
from semcorr.cli.resolve import resolve


def jpegs(count: int, seed: int = 0) -> list[bytes]:
    """`count` JPEG files of SPair-like sizes and smooth random content."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w, h = (500, 375) if i % 3 else (375, 500)
        coarse = (rng.random((h // 16, w // 16, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def per_image_ms(fn, items: list) -> tuple[float, list]:
    """Milliseconds per item of fn over items, and its outputs."""
    t0 = time.perf_counter()
    outputs = [fn(item) for item in items]
    return 1000 * (time.perf_counter() - t0) / len(items), outputs


def decoders(files: list[bytes]) -> list[np.ndarray]:
    from torchvision.io import decode_jpeg

    pil_ms, pil = per_image_ms(lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), files)
    tv_ms, tv = per_image_ms(lambda b: decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8)), files)
    same = np.mean([np.array_equal(a, b.permute(1, 2, 0).numpy()) for a, b in zip(pil, tv, strict=True)])
    print(
        f"decode          PIL {pil_ms:6.2f} ms   torchvision.io.decode_jpeg {tv_ms:6.2f} ms   same pixels: {same:.0%}"
    )
    return pil


def resizers(images: list[np.ndarray], side: int) -> None:
    pil_images = [Image.fromarray(a) for a in images]
    tensors = [torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous() for a in images]
    for name, resample in (("bicubic", Image.Resampling.BICUBIC), ("lanczos", Image.Resampling.LANCZOS)):
        pil_ms, pil = per_image_ms(lambda im, r=resample: np.asarray(im.resize((side, side), r)), pil_images)
        line = f"resize {side:4d}     PIL {name:8s} {pil_ms:6.2f} ms"
        if name == "bicubic":

            def torch_resize(t: torch.Tensor) -> torch.Tensor:
                return F.interpolate(t[None], size=(side, side), mode="bicubic", antialias=True)[0]

            ms, out = per_image_ms(torch_resize, tensors)
            diff = max(int(np.abs(a.astype(int) - b.permute(1, 2, 0).numpy().astype(int)).max()) for a, b in
                       zip(pil, out, strict=True))  # fmt: skip
            line += f"   torch uint8 antialiased bicubic {ms:6.2f} ms (largest difference from PIL: {diff} levels)"
        print(line)


def whole(files: list[bytes], protocol: str, side: int | None) -> float:
    """preprocess_image of a protocol on decoded images, ms per image."""
    given = {"protocol": protocol, **({"image_size": (side,)} if side else {})}
    settings = resolve("evaluation", given)
    member = settings.member
    prep = member_preprocess(member.image_size, member.resize, settings.extract, 14)
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in files]
    ms, _ = per_image_ms(lambda im: preprocess_image(im, prep), images)
    print(f"preprocess      --protocol {protocol:8s} {prep.height}x{prep.width} {prep.resize:6s} {prep.resample:14s} "
          f"{ms:6.2f} ms")  # fmt: skip
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = jpegs(args.images)
    print(f"{args.images} JPEGs of 500x375 / 375x500, torch threads {args.threads}; milliseconds per image")
    images = decoders(files)
    for side in (518, 840):
        resizers(images, side)
    for protocol, side in (("default", 518), ("original", 518), ("geoaware", None)):
        whole(files, protocol, side)


if __name__ == "__main__":
    main()
