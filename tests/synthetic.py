"""A deterministic 'backbone' whose right answer is known, and images to go with it.

Images show one object whose colour encodes object coordinates: R = u, G = v (linear ramps over
the object, 0..1) and B = 1; the background is black. The backbone averages each patch's colour
and encodes (u, v) with Gaussian radial basis functions, so the cosine similarity of two patches
peaks where their object coordinates agree. Background and padding get a separate feature.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from helper_functions import IMAGENET_MEAN, IMAGENET_STD


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
