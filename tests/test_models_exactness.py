"""The backbones against Meta's own formulas, on random official-format files (fp32, CPU).

DINOv2 and DINOv3: small independent re-implementations of Meta's forward pass (written from
facebookresearch/dinov2 and dinov3: interpolate_pos_encoding, RopePositionEmbedding, apply_rope,
LinearKMaskedBias, LayerScale blocks) read the official state dict directly. SAM: Meta's own
`segment_anything` package. Tiny widths by default; SEMCORR_FULL_CHECK=1 adds the real ViT-B
(slow on a laptop: SAM at 1024 takes about a minute).
"""

from __future__ import annotations

import math
import os
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from model_factory import TINY_OVERRIDES, num_heads, random_official_state_dict, write_official_checkpoint
from segment_anything.modeling import ImageEncoderViT
from timm.layers import resample_abs_pos_embed

from models import create_backbone

TOLERANCE = 1e-4
CONFIGS = ["tiny", "base"] if os.environ.get("SEMCORR_FULL_CHECK") else ["tiny"]
DINOV2_SIZES = [(518, 518), (448, 448), (840, 840), (518, 700)]
DINOV3_SIZES = [(512, 512), (480, 640)]


def _load(tmp_path, name: str, config: str, **kwargs):
    """(backbone, official state dict, heads) for a random official file of `name`."""
    tiny = config == "tiny"
    path = write_official_checkpoint(tmp_path, name, tiny=tiny)
    state = torch.load(path, weights_only=True)
    overrides = TINY_OVERRIDES if tiny else {}
    heads = TINY_OVERRIDES["num_heads"] if tiny else num_heads(name)
    return create_backbone(name, weights=path, device="cpu", **overrides, **kwargs), state, heads


def _images(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# --- Meta's DINOv2 -----------------------------------------------------------------------------


def meta_interpolate_pos_encoding(pos_embed, x, w, h, patch_size, offset, antialias):
    """DinoVisionTransformer.interpolate_pos_encoding (Meta's naming: w, h = image height, width)."""
    npatch, n = x.shape[1] - 1, pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    pos = pos_embed.float()
    class_pos, patch_pos = pos[:, 0], pos[:, 1:]
    dim = x.shape[-1]
    w0, h0 = w // patch_size, h // patch_size
    m = int(math.sqrt(n))
    if offset:
        kwargs = {"scale_factor": (float(w0 + offset) / m, float(h0 + offset) / m)}
    else:
        kwargs = {"size": (w0, h0)}
    patch_pos = F.interpolate(
        patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic", antialias=antialias, **kwargs
    )
    assert (w0, h0) == patch_pos.shape[-2:]
    patch_pos = patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos.unsqueeze(0), patch_pos), dim=1).to(x.dtype)


def meta_dinov2(sd, images, heads, offset, antialias, blocks=None):
    """Meta's DINOv2 forward -> normalised patch tokens as (B, C, h, w)."""
    p = sd["patch_embed.proj.weight"].shape[-1]
    b, _, height, width = images.shape
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat((sd["cls_token"].expand(b, -1, -1), x), dim=1)
    x = x + meta_interpolate_pos_encoding(sd["pos_embed"], x, height, width, p, offset, antialias)
    n_reg = 0
    if "register_tokens" in sd:
        n_reg = sd["register_tokens"].shape[1]
        x = torch.cat((x[:, :1], sd["register_tokens"].expand(b, -1, -1), x[:, 1:]), dim=1)
    c = x.shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth if blocks is None else blocks):
        pre = f"blocks.{i}."

        def ln(t, name, pre=pre):
            return F.layer_norm(t, (c,), sd[pre + name + ".weight"], sd[pre + name + ".bias"], eps=1e-6)

        x = x + sd[pre + "ls1.gamma"] * _meta_attention(ln(x, "norm1"), sd, pre, heads)
        hidden = F.gelu(F.linear(ln(x, "norm2"), sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"]))
        x = x + sd[pre + "ls2.gamma"] * F.linear(hidden, sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"])
    x = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return x[:, 1 + n_reg :].reshape(b, height // p, width // p, c).permute(0, 3, 1, 2)


def _meta_attention(x, sd, pre, heads):
    """dinov2.layers.Attention (the non-xformers path)."""
    b, n, c = x.shape
    qkv = F.linear(x, sd[pre + "attn.qkv.weight"], sd[pre + "attn.qkv.bias"])
    qkv = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, c)
    return F.linear(out, sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])


DINOV2_VARIANTS = {  # name -> Meta's hub settings (offset, antialias)
    "dinov2_vitb14": (0.1, False),
    "dinov2_vitb14_reg4": (0.0, True),
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", list(DINOV2_VARIANTS))
def test_dinov2_matches_meta_at_every_size(tmp_path, name, config):
    bb, sd, heads = _load(tmp_path, name, config)
    offset, antialias = DINOV2_VARIANTS[name]
    for h, w in DINOV2_SIZES:
        images = _images(h, w)
        with torch.no_grad():
            diff = _max_diff(bb(images), meta_dinov2(sd, images, heads, offset, antialias))
        assert diff < TOLERANCE, f"{name} at {h}x{w}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("name", list(DINOV2_VARIANTS))
def test_dinov2_pos_embed_resizing_is_not_timms(tmp_path, name):
    """The trap the test above guards: timm's resizing and the other variant's drift at 448 / 840."""
    pos = random_official_state_dict(name, tiny=True)["pos_embed"][:, 1:]
    grid = pos.reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    offset, antialias = DINOV2_VARIANTS[name]
    for n in (32, 60):
        x = torch.zeros(1, 1 + n * n, pos.shape[-1])
        full = torch.cat((torch.zeros(1, 1, pos.shape[-1]), pos), dim=1)
        meta = meta_interpolate_pos_encoding(full, x, 14 * n, 14 * n, 14, offset, antialias)[:, 1:]
        timm_default = resample_abs_pos_embed(pos, (n, n), num_prefix_tokens=0)  # bicubic, antialias
        other = F.interpolate(grid, size=(n, n), mode="bicubic", antialias=not antialias)
        other = other.permute(0, 2, 3, 1).reshape(1, n * n, -1)
        assert _max_diff(meta, other) > 1e-3
        if offset:  # the original models: timm's default is not Meta's
            assert _max_diff(meta, timm_default) > 1e-3


def test_dinov2_intermediate_layer_is_block_output_through_final_norm(tmp_path):
    bb, sd, heads = _load(tmp_path, "dinov2_vitb14_reg4", "tiny", layer=-2)
    assert bb.layer == TINY_OVERRIDES["depth"] - 2
    images = _images(140, 196)
    with torch.no_grad():
        diff = _max_diff(bb(images), meta_dinov2(sd, images, heads, 0.0, True, blocks=bb.layer + 1))
    assert diff < TOLERANCE


# --- Meta's DINOv3 -----------------------------------------------------------------------------


def meta_rope(periods, h, w):
    """RopePositionEmbedding.forward, normalize_coords='separate', eval mode, fp32."""
    dd = {"dtype": torch.float32}
    coords_h = torch.arange(0.5, h, **dd) / h
    coords_w = torch.arange(0.5, w, **dd) / w
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
    coords = 2.0 * coords - 1.0
    angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]
    angles = angles.flatten(1, 2).tile(2)
    return torch.sin(angles), torch.cos(angles)


def _rope_apply(x, sin, cos):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def meta_dinov3(sd, images, heads, mask_k_bias=True, periods=None, blocks=None):
    """Meta's DINOv3 forward (SelfAttentionBlock, LinearKMaskedBias, eps 1e-5) -> (B, C, h, w)."""
    p = sd["patch_embed.proj.weight"].shape[-1]
    b = images.shape[0]
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    _, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = sd["cls_token"] + 0 * sd["mask_token"]
    storage = sd["storage_tokens"]
    x = torch.cat((cls.expand(b, -1, -1), storage.expand(b, -1, -1), x), dim=1)
    prefix = 1 + storage.shape[1]
    sin, cos = meta_rope(sd["rope_embed.periods"] if periods is None else periods, h, w)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth if blocks is None else blocks):
        pre = f"blocks.{i}."

        def ln(t, name, pre=pre):
            return F.layer_norm(t, (c,), sd[pre + name + ".weight"], sd[pre + name + ".bias"], eps=1e-5)

        bias = sd[pre + "attn.qkv.bias"] * (sd[pre + "attn.qkv.bias_mask"] if mask_k_bias else 1)
        qkv = F.linear(ln(x, "norm1"), sd[pre + "attn.qkv.weight"], bias)
        q, k, v = qkv.reshape(b, -1, 3, heads, c // heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q = torch.cat((q[:, :, :prefix], _rope_apply(q[:, :, prefix:], sin, cos)), dim=2)
        k = torch.cat((k[:, :, :prefix], _rope_apply(k[:, :, prefix:], sin, cos)), dim=2)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        x = x + sd[pre + "ls1.gamma"] * F.linear(attn, sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])
        hidden = F.gelu(F.linear(ln(x, "norm2"), sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"]))
        x = x + sd[pre + "ls2.gamma"] * F.linear(hidden, sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"])
    x = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], eps=1e-5)
    return x[:, prefix:].reshape(b, h, w, c).permute(0, 3, 1, 2)


@pytest.mark.parametrize("config", CONFIGS)
def test_dinov3_matches_meta_at_every_size(tmp_path, config):
    bb, sd, heads = _load(tmp_path, "dinov3_vitb16", config)
    for h, w in DINOV3_SIZES:
        images = _images(h, w)
        with torch.no_grad():
            diff = _max_diff(bb(images), meta_dinov3(sd, images, heads))
        assert diff < TOLERANCE, f"dinov3 at {h}x{w}: max abs diff {diff:.2e}"


def test_dinov3_k_bias_mask_and_stored_periods_matter(tmp_path):
    """The file's k bias and its periods differ from what timm assumes; both change the output."""
    bb, sd, heads = _load(tmp_path, "dinov3_vitb16", "tiny")
    head_dim = TINY_OVERRIDES["embed_dim"] // heads
    formula = 100.0 ** (2 * torch.arange(head_dim // 4) / (head_dim // 2))
    images = _images(96, 128)
    with torch.no_grad():
        ours = bb(images)
        assert _max_diff(ours, meta_dinov3(sd, images, heads)) < TOLERANCE
        assert _max_diff(ours, meta_dinov3(sd, images, heads, mask_k_bias=False)) > 1e-2
        assert _max_diff(ours, meta_dinov3(sd, images, heads, periods=formula)) > 1e-2
    assert torch.equal(bb.rope_periods, sd["rope_embed.periods"])


def test_dinov3_intermediate_layer(tmp_path):
    bb, sd, heads = _load(tmp_path, "dinov3_vitb16", "tiny", layer=0)
    images = _images(64, 80)
    with torch.no_grad():
        assert _max_diff(bb(images), meta_dinov3(sd, images, heads, blocks=1)) < TOLERANCE


def test_dinov3_rope_stays_fp32_under_autocast(tmp_path):
    bb, _, _ = _load(tmp_path, "dinov3_vitb16", "tiny", precision="bf16")
    with torch.no_grad():
        state = bb.embed(_images(64, 64))
        feats = bb(_images(64, 64))
    assert bb.autocast_dtype == torch.bfloat16
    assert state.rope.dtype == torch.float32
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()


# --- Meta's SAM (the segment_anything package) -------------------------------------------------


def meta_sam_encoder(sd, config):
    """segment_anything's ImageEncoderViT as build_sam builds it, with the file's image encoder."""
    tiny = config == "tiny"
    encoder = ImageEncoderViT(
        depth=TINY_OVERRIDES["depth"] if tiny else 12,
        embed_dim=TINY_OVERRIDES["embed_dim"] if tiny else 768,
        num_heads=TINY_OVERRIDES["num_heads"] if tiny else 12,
        global_attn_indexes=[2, 5, 8, 11],
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=14,
        out_chans=256,
    )
    prefix = "image_encoder."
    encoder.load_state_dict({k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)})
    return encoder.eval()


@pytest.mark.parametrize("config", CONFIGS)
def test_sam_matches_segment_anything_at_1024(tmp_path, config):
    bb, sd, _ = _load(tmp_path, "sam_vit_b", config)
    images = _images(1024, 1024)
    with torch.no_grad():
        diff = _max_diff(bb(images), meta_sam_encoder(sd, config)(images))
    assert diff < TOLERANCE, f"sam at 1024: max abs diff {diff:.2e}"


def test_sam_intermediate_layer_is_block_output_without_neck(tmp_path):
    bb, sd, _ = _load(tmp_path, "sam_vit_b", "tiny", layer=1)
    assert bb.feature_dim == TINY_OVERRIDES["embed_dim"]
    encoder = meta_sam_encoder(sd, "tiny")
    images = _images(1024, 1024)
    with torch.no_grad():
        x = encoder.patch_embed(images) + encoder.pos_embed
        for block in encoder.blocks[:2]:
            x = block(x)
        diff = _max_diff(bb(images), x.permute(0, 3, 1, 2))
    assert diff < TOLERANCE


def test_sam_other_sizes_resize_pos_embed_and_rel_pos(tmp_path):
    """At 512 the 64x64 pos_embed is resized bicubic with antialias; rel-pos tables are interpolated."""
    bb, sd, _ = _load(tmp_path, "sam_vit_b", "tiny")
    images = _images(512, 512)
    with torch.no_grad():
        state = bb.embed(images)
        pos = sd["image_encoder.pos_embed"].permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(32, 32), mode="bicubic", antialias=True).permute(0, 2, 3, 1)
        patches = F.conv2d(
            images, sd["image_encoder.patch_embed.proj.weight"], sd["image_encoder.patch_embed.proj.bias"], stride=16
        )
        assert _max_diff(state.tokens, patches.permute(0, 2, 3, 1) + pos) < 1e-5
        feats = bb(images)
    assert feats.shape == (1, 256, 32, 32) and torch.isfinite(feats).all()
    assert bb(_images(480, 640)).shape == (1, 256, 30, 40)


# --- LayerNorm eps ------------------------------------------------------------------------------


def test_sam_layernorm_eps_shows_on_small_activations(tmp_path):
    """timm's samvit defaults to eps 1e-5; with tiny activations only Meta's 1e-6 matches."""
    sd = random_official_state_dict("sam_vit_b", tiny=True)
    for key in (
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.patch_embed.proj.bias",
        "image_encoder.pos_embed",
    ):
        sd[key] = sd[key] * 1e-3
    path = tmp_path / "sam_small_activations.pth"
    torch.save(sd, path)
    bb = create_backbone("sam_vit_b", weights=path, device="cpu", **TINY_OVERRIDES)
    encoder = meta_sam_encoder(sd, "tiny")
    images = _images(224, 224)
    with torch.no_grad():
        x = encoder.patch_embed(images) + F.interpolate(
            encoder.pos_embed.permute(0, 3, 1, 2), size=(14, 14), mode="bicubic", antialias=True
        ).permute(0, 2, 3, 1)
        for block in encoder.blocks:
            x = block(x)
        assert _max_diff(bb(images), encoder.neck(x.permute(0, 3, 1, 2))) < TOLERANCE
        for module in bb.model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = 1e-5
        assert _max_diff(bb(images), encoder.neck(x.permute(0, 3, 1, 2))) > 1e-2


@pytest.mark.parametrize(("name", "eps"), [("dinov2_vitb14", 1e-6), ("dinov3_vitb16", 1e-5), ("sam_vit_b", 1e-6)])
def test_layernorm_eps_is_metas(name, eps):
    with pytest.warns(UserWarning, match="RANDOM"):
        bb = create_backbone(name, weights="random", device="cpu", **TINY_OVERRIDES)
    norms = [m for m in bb.model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == eps for m in norms)
