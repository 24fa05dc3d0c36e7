"""DINOv2, DINOv3 and SAM image encoders built on timm, numerically matching Meta's own code.

timm provides the transformer blocks; this module owns what happens around them, where timm and
Meta differ: how the position embedding is resized (DINOv2, SAM), which RoPE periods are used and
in which precision (DINOv3), the LayerNorm eps (SAM), and how official files are read.

    bb = create_backbone("dinov2", device="cuda", precision="bf16")   # models/factory.py
    feats = bb(images)  # (B, 3, H, W) ImageNet-normalised -> (B, feature_dim, H // P, W // P), float32

For fine-tuning, the forward pass is split in three: `embed` -> `run_blocks` -> `to_feature_map`.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoints import Checkpoint, check_identity, check_keys, read_checkpoint
from models.registry import BUILD_VARIANTS, BackboneSpec, get_spec
from semcorr.config.settings import BackboneSettings

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DINOV3_ROPE_BASE = 100.0  # Meta's pos_embed_rope_base; only used when no periods are stored


@dataclass
class TokenState:
    """Tokens between blocks, with what the blocks and the feature map need alongside them.

    tokens: (B, N, C) with the prefix tokens (CLS, registers) first for DINO; (B, h, w, C) for SAM.
    grid: (h, w) patches. rope: DINOv3's (h * w, 2 * head_dim) [sin | cos] table, else None.
    """

    tokens: Tensor
    grid: tuple[int, int]
    rope: Tensor | None = None


class Backbone(nn.Module):
    """A timm image encoder (`self.model`) with Meta-exact embedding and a patch-feature output."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, setting: BackboneSettings, timm_overrides: dict):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.model = model
        self.setting = setting
        self.build = setting.build
        self.variant = BUILD_VARIANTS[setting.build].get(spec.family, {})  # where this build departs from Meta's
        self.timm_overrides = dict(timm_overrides)
        self.layer = normalise_layer(setting.layer, len(model.blocks))
        self.final_norm = setting.final_norm  # DINO: the features pass the final LayerNorm
        self.autocast_dtype = AUTOCAST_DTYPES[setting.precision]
        self.weights_path = "random"
        self.extra: dict = {}  # what a fine-tuned checkpoint recorded (its training settings, step, ...)
        # a fine-tuned checkpoint: where the weights its training began from came from, the base file it
        # holds its trained weights on top of (None: self-contained), and (last.pt) the training state
        self.base_origin: str | None = None
        self.base: dict | None = None
        self.training_state: dict | None = None

    # --- attributes ------------------------------------------------------------------------------

    @property
    def blocks(self) -> nn.ModuleList:
        return nn.ModuleList(self.model.blocks)

    @property
    def device(self) -> torch.device:
        return self.model.patch_embed.proj.weight.device

    @property
    def patch_size(self) -> int:
        return self.model.patch_embed.patch_size[0]

    @property
    def default_image_size(self) -> int:
        return self.spec.default_image_size

    @property
    def last_block(self) -> int:
        """Index of the block whose output becomes the features."""
        return len(self.model.blocks) - 1 if self.layer is None else self.layer

    @property
    def feature_dim(self) -> int:
        return self.model.embed_dim

    @property
    def pos_embed_antialias(self) -> bool:
        return self.variant.get("pos_embed_antialias", self.spec.pos_embed_antialias)

    def gives_features_of(self, layer: int | None) -> bool:
        """Whether a backbone built with `layer` (a block index, negative allowed; None: the default)
        would give this one's features. ValueError if `layer` is no block index."""
        return self._features_of(normalise_layer(layer, len(self.model.blocks))) == self._features_of(self.layer)

    def _features_of(self, layer: int | None) -> int | None:
        """What a normalised layer's features are: DINO's default is its last block's output."""
        return len(self.model.blocks) - 1 if layer is None else layer

    # --- forward ---------------------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised images -> (B, feature_dim, H // P, W // P) float32."""
        return self.to_feature_map(self.run_blocks(self.embed(images), 0, self.last_block + 1))

    def embed(self, images: Tensor) -> TokenState:
        """Patch embedding plus position information and prefix tokens."""
        self._check_images(images)
        with self._autocast():
            return self._embed(images.to(self.device))

    def run_blocks(self, state: TokenState, start: int, stop: int) -> TokenState:
        """Apply blocks[start:stop]."""
        x = state.tokens
        with self._autocast():
            for block in self.blocks[start:stop]:
                x = self._run_block(block, x, state)
        return replace(state, tokens=x)

    def to_feature_map(self, state: TokenState) -> Tensor:
        """Final norm (DINO) or neck (SAM), prefix tokens dropped -> (B, C, h, w) float32."""
        with self._autocast():
            return self._feature_map(state).float().contiguous()

    def trainable_modules(self, n_last_blocks: int, neck: bool = True) -> list[nn.Module]:
        """The last `n_last_blocks` blocks that feed the features, and the modules after them (SAM's
        neck only with `neck`: the original project left it frozen)."""
        used = self.last_block + 1
        if not 0 <= n_last_blocks <= used:
            raise ValueError(
                f"n_last_blocks must be in 0..{used} for {self.name} (layer {self.layer}), got {n_last_blocks}"
            )
        return [*self.blocks[used - n_last_blocks : used], *self._head_modules(neck)]

    # --- per family (each subclass defines _embed, _feature_map and _head_modules) -------------------

    def _embed(self, images: Tensor) -> TokenState:
        """Images on the device -> tokens before the first block."""
        raise NotImplementedError

    def _run_block(self, block: nn.Module, x: Tensor, state: TokenState) -> Tensor:
        return block(x)

    def _feature_map(self, state: TokenState) -> Tensor:
        """Tokens after the last used block -> (B, C, h, w) features."""
        raise NotImplementedError

    def _head_modules(self, neck: bool) -> list[nn.Module]:
        """The modules between the last used block and the features (SAM: its neck, if `neck`)."""
        raise NotImplementedError

    @staticmethod
    def timm_defaults(spec: BackboneSpec) -> dict:
        """timm.create_model arguments that make the model match Meta's."""
        return {"num_classes": 0}

    # --- helpers ---------------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"{self.name} expects float images of shape (B, 3, H, W), ImageNet-normalised; "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        p = self.patch_size
        h, w = images.shape[-2:]
        if h % p or w % p:
            raise ValueError(
                f"{self.name} needs image sides that are multiples of its patch size {p}; got {h}x{w}. "
                f"Resize to e.g. {h // p * p or p}x{w // p * p or p} (default {self.default_image_size})."
            )


class DinoBackbone(Backbone):
    """What DINOv2 and DINOv3 share: prefix tokens in front, the final norm (unless final_norm is off, as
    GeoAware-SC takes the block's raw output), patch tokens out."""

    def _feature_map(self, state: TokenState) -> Tensor:
        x = state.tokens[:, self.model.num_prefix_tokens :]
        x = self.model.norm(x) if self.final_norm else x  # per-token norm
        h, w = state.grid
        return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)

    def _head_modules(self, neck: bool) -> list[nn.Module]:
        return [self.model.norm] if self.final_norm else []


class DinoV2Backbone(DinoBackbone):
    """timm VisionTransformer; the position embedding is resized as Meta's interpolate_pos_encoding."""

    @staticmethod
    def timm_defaults(spec: BackboneSpec) -> dict:
        return {"num_classes": 0, "img_size": spec.checkpoint_image_size, "dynamic_img_size": True}

    def _embed(self, images: Tensor) -> TokenState:
        m = self.model
        x = m.patch_embed(images)  # (B, h, w, C)
        b, h, w, c = x.shape
        # timm's register models (no_embed_class) folded CLS's position into cls_token when loading
        pos = m.pos_embed if m.no_embed_class else m.pos_embed[:, 1:]
        cls = m.cls_token if m.no_embed_class else m.cls_token + m.pos_embed[:, :1]
        grid = pos.reshape(1, *m.patch_embed.grid_size, c)
        pos = resize_pos_embed(grid, (h, w), self.spec.pos_embed_offset, self.pos_embed_antialias)
        x = x.reshape(b, h * w, c) + pos.reshape(1, h * w, c)
        prefix = [cls] if m.reg_token is None else [cls, m.reg_token]  # Meta: registers after the position
        x = torch.cat([t.expand(b, -1, -1) for t in prefix] + [x], dim=1)
        return TokenState(m.norm_pre(x), (h, w))


class DinoV3Backbone(DinoBackbone):
    """timm Eva (`*_dinov3_qkvb`) run block by block as Meta's DINOv3: RoPE from the checkpoint's stored
    periods, computed and applied in fp32 (bf16 with build "original", as the original project ran it).

    The periods live in the persistent buffer `rope_periods` (timm recomputes its own from the
    base, which need not equal the stored values). The masked k bias is folded in when loading.
    """

    def __init__(self, spec: BackboneSpec, model: nn.Module, *args):
        super().__init__(spec, model, *args)
        head_dim = model.blocks[0].attn.head_dim
        exponents = 2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)
        self.register_buffer("rope_periods", DINOV3_ROPE_BASE**exponents)

    def _embed(self, images: Tensor) -> TokenState:
        m = self.model
        x = m.patch_embed(images)  # (B, h, w, C)
        b, h, w, c = x.shape
        prefix = [m.cls_token] if m.reg_token is None else [m.cls_token, m.reg_token]
        x = torch.cat([t.expand(b, -1, -1) for t in prefix] + [x.reshape(b, h * w, c)], dim=1)
        rope_dtype = AUTOCAST_DTYPES[self.variant.get("rope_dtype", "fp32")] or torch.float32
        return TokenState(m.norm_pre(x), (h, w), dinov3_rope(self.rope_periods, h, w, rope_dtype))

    def _run_block(self, block: nn.Module, x: Tensor, state: TokenState) -> Tensor:
        """timm's EvaBlock, with Meta's attention (meta_rope_attention) in place of timm's."""
        x = x + block.drop_path1(block.gamma_1 * meta_rope_attention(block.attn, block.norm1(x), state.rope))
        return x + block.drop_path2(block.gamma_2 * block.mlp(block.norm2(x)))


class SamBackbone(Backbone):
    """timm VisionTransformerSAM with Meta's LayerNorm eps (1e-6); features are the neck output.

    Other input sizes than 1024: pos_embed is resized bicubic with antialias to the patch grid,
    and the global-attention blocks' relative-position tables are linearly interpolated to
    2 * grid - 1 entries (get_rel_pos, as in Meta's code); windowed blocks are unchanged.
    With `layer=i` the features are block i's output without the neck (feature_dim = embed_dim).
    """

    @staticmethod
    def timm_defaults(spec: BackboneSpec) -> dict:
        return {
            "num_classes": 0,
            "img_size": spec.checkpoint_image_size,
            "norm_layer": partial(nn.LayerNorm, eps=1e-6),  # timm's samvit default is nn.LayerNorm (1e-5)
        }

    @property
    def feature_dim(self) -> int:
        return self.model.num_features if self.layer is None else self.model.embed_dim

    def _features_of(self, layer: int | None) -> int | None:
        return layer  # the default (None) is the neck's output, not the last block's

    def _embed(self, images: Tensor) -> TokenState:
        m = self.model
        x = m.patch_embed(images)  # (B, h, w, C)
        h, w = x.shape[1:3]
        if m.pos_embed is not None:
            x = x + resize_pos_embed(m.pos_embed, (h, w), self.spec.pos_embed_offset, self.pos_embed_antialias)
        return TokenState(m.norm_pre(x), (h, w))

    def _feature_map(self, state: TokenState) -> Tensor:
        x = state.tokens.permute(0, 3, 1, 2)
        return self.model.neck(x) if self.layer is None else x

    def _head_modules(self, neck: bool) -> list[nn.Module]:
        return [self.model.neck] if self.layer is None and neck else []


FAMILY_CLASSES: dict[str, type[Backbone]] = {"dinov2": DinoV2Backbone, "dinov3": DinoV3Backbone, "sam": SamBackbone}


# --- Meta's formulas -------------------------------------------------------------------------------


def resize_pos_embed(grid: Tensor, size: tuple[int, int], offset: float, antialias: bool) -> Tensor:
    """Resize a (1, gh, gw, C) position grid to (1, h, w, C) as Meta's DINOv2 interpolate_pos_encoding.

    Unchanged at the native grid. With `offset` > 0, bicubic to scale_factor (h + offset) / gh
    (the original DINOv2 models: offset 0.1, no antialias); else bicubic to the exact size.
    Computed in fp32 and returned in the grid's dtype.
    """
    gh, gw = grid.shape[1:3]
    if (gh, gw) == tuple(size):
        return grid
    if offset:
        how = {"scale_factor": ((size[0] + offset) / gh, (size[1] + offset) / gw)}
    else:
        how = {"size": tuple(size)}
    x = F.interpolate(grid.float().permute(0, 3, 1, 2), mode="bicubic", antialias=antialias, **how)
    return x.permute(0, 2, 3, 1).to(grid.dtype)


def dinov3_rope(periods: Tensor, h: int, w: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """DINOv3's RopePositionEmbedding (normalize_coords 'separate', eval mode) -> (h*w, 2*head_dim) [sin | cos].

    Computed in `dtype` throughout (periods included), whatever the autocast state, as Meta's module
    does in its pos_embed_rope_dtype.
    """
    dd = {"device": periods.device, "dtype": dtype}
    coords_h = torch.arange(0.5, h, **dd) / h
    coords_w = torch.arange(0.5, w, **dd) / w
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
    coords = 2.0 * coords - 1.0  # [-1, 1]
    angles = 2 * math.pi * coords[:, :, None] / periods.to(dtype)[None, None, :]  # (hw, 2, head_dim / 4)
    angles = angles.flatten(1, 2).tile(2)  # (hw, head_dim), the rotate-half layout
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def meta_rope_attention(attn: nn.Module, x: Tensor, rope: Tensor) -> Tensor:
    """DINOv3's SelfAttention with timm's EvaAttention weights (q, zero k and v biases): RoPE as Meta's
    apply_rope, i.e. q and k of every token cast to the rope's dtype, the patch tokens rotated, and
    cast back (timm instead rotates in x's dtype and leaves the prefix tokens uncast)."""
    b, n, c = x.shape
    bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    q, k, v = F.linear(x, attn.qkv.weight, bias).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    sin, cos = rope.chunk(2, dim=-1)
    q, k = (apply_rope(t, sin, cos) for t in (q, k))
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Meta's rope_apply on the patch tokens (the last sin.shape[0] of x), in the rope's dtype."""
    dtype = x.dtype
    x = x.to(sin.dtype)
    prefix = x.shape[-2] - sin.shape[-2]
    patches = x[..., prefix:, :]
    first, second = patches.chunk(2, dim=-1)
    rotated = patches * cos + torch.cat((-second, first), dim=-1) * sin
    return torch.cat((x[..., :prefix, :], rotated), dim=-2).to(dtype)


# --- building -------------------------------------------------------------------------------------


def from_weights(setting: BackboneSettings, overrides: dict) -> Backbone:
    """A backbone of `setting.model` with its weights file (None: the official one; "random": random
    initialisation, for smoke tests only, with a warning), loaded strictly."""
    spec = get_spec(setting.model)
    if setting.weights == "random":
        warnings.warn(
            f"{spec.name}: RANDOM weights (weights='random'); the features are meaningless, use only for smoke tests.",
            stacklevel=3,
        )
        return build(spec, setting, overrides)
    path = Path(setting.weights) if setting.weights is not None else spec.default_weights
    return load_weights(spec, read_checkpoint(path, spec), setting, overrides)


def load_weights(spec: BackboneSpec, ckpt: Checkpoint, setting: BackboneSettings, overrides: dict) -> Backbone:
    """A backbone of `spec` built as `setting` says (with timm `overrides`), loaded strictly with `ckpt`."""
    check_identity(ckpt, spec)
    bb = build(spec, setting, overrides, uninitialised=True)
    check_keys(ckpt, spec, bb.state_dict())
    state = dict(ckpt.state_dict)
    if spec.family == "dinov3" and "rope_periods" not in state:  # timm does not store its periods
        logger.info("%s has no RoPE periods (timm format): computing them from base %s", ckpt.path, DINOV3_ROPE_BASE)
        state["rope_periods"] = bb.rope_periods
    bb.load_state_dict(state, strict=True)
    bb.weights_path = str(ckpt.path)
    return bb


def build(spec: BackboneSpec, setting: BackboneSettings, overrides: dict, *, uninitialised: bool = False) -> Backbone:
    """A backbone on its device, in eval mode: randomly initialised, or with uninitialised parameters (much
    faster) that the caller then fills with a strict load_state_dict."""
    if setting.build not in BUILD_VARIANTS:
        raise ValueError(f"build must be one of {', '.join(BUILD_VARIANTS)}, got {setting.build!r}")
    if setting.precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {setting.precision!r}")
    family = FAMILY_CLASSES[spec.family]
    kwargs = {**family.timm_defaults(spec), **overrides}
    try:
        if not uninitialised:
            model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        else:
            with torch.device("meta"):  # skips timm's weight init, seconds for a ViT-B on CPU
                model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
            model = model.to_empty(device="cpu")
            for module in model.modules():  # the buffers that no checkpoint holds (e.g. Eva's zero k bias)
                if hasattr(module, "init_non_persistent_buffers"):
                    module.init_non_persistent_buffers()
    except TypeError as err:
        raise ValueError(f"timm.create_model({spec.timm_name!r}) rejected the overrides {overrides}: {err}") from err
    bb = family(spec, model, setting, overrides)
    if "norm_eps" in bb.variant:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = bb.variant["norm_eps"]
    return bb.to(setting.device).eval()


def normalise_layer(layer: int | None, depth: int) -> int | None:
    """A block index in 0..depth-1 (negative counts from the end); None stays None (the default features)."""
    if layer is None:
        return None
    if not -depth <= layer < depth:
        raise ValueError(f"layer must be a block index in [{-depth}, {depth - 1}], got {layer}")
    return layer % depth
