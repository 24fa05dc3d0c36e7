"""The table of supported backbones: every per-model setting lives here as data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_ROOT = Path(__file__).resolve().parent

DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{arch}/{file}"
DINOV3_REQUEST_URL = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/{file}"


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that differs between backbones.

    `url` is None for licence-gated weights; `request_url` then says where to ask for them.
    `sha256_prefix` / `md5_prefix` is the hash prefix that Meta embeds in some file names: DINOv3's
    are sha256 prefixes (torch.hub's convention), SAM's md5 prefixes.
    """

    name: str
    family: str  # "dinov2" | "dinov3" | "sam": also the weights folder under models/
    timm_name: str
    patch_size: int
    default_image_size: int
    embed_dim: int
    depth: int
    feature_dim: int
    official_file: str
    url: str | None
    request_url: str | None = None
    sha256_prefix: str | None = None
    md5_prefix: str | None = None
    num_prefix_tokens: int = 1  # CLS + registers/storage tokens, dropped from the features
    # Absolute position embedding (DINOv2, SAM; DINOv3 uses RoPE and has none): the input size
    # its grid was trained for (grid = size / patch), and how it is resized for other inputs:
    # bicubic to scale_factor (n + offset) / grid when offset > 0 (Meta's DINOv2 kludge), else
    # to the exact size; antialias on or off.
    checkpoint_image_size: int | None = None
    pos_embed_offset: float = 0.0
    pos_embed_antialias: bool = True

    @property
    def default_weights(self) -> Path:
        return WEIGHTS_ROOT / self.family / "weights" / self.official_file


def _dinov2(size: str, embed_dim: int, depth: int, reg: bool) -> BackboneSpec:
    arch = f"dinov2_vit{size}14" + ("_reg4" if reg else "")
    file = f"{arch}_pretrain.pth"
    timm_size = {"s": "small", "b": "base", "l": "large", "g": "giant"}[size]
    return BackboneSpec(
        name=arch,
        family="dinov2",
        timm_name=f"vit_{timm_size}_patch14_{'reg4_' if reg else ''}dinov2",
        patch_size=14,
        default_image_size=518,
        embed_dim=embed_dim,
        depth=depth,
        feature_dim=embed_dim,
        official_file=file,
        url=DINOV2_URL.format(arch=f"dinov2_vit{size}14", file=file),
        num_prefix_tokens=5 if reg else 1,
        checkpoint_image_size=518,
        # Meta's interpolate_pos_encoding: the original models keep the 0.1 offset and no antialias,
        # the register models (hub `dinov2_vit*14_reg`) use the exact size with antialias.
        pos_embed_offset=0.0 if reg else 0.1,
        pos_embed_antialias=reg,
    )


def _dinov3(size: str, embed_dim: int, depth: int, file_hash: str) -> BackboneSpec:
    timm_size = {"s": "small", "b": "base", "l": "large"}[size]
    return BackboneSpec(
        name=f"dinov3_vit{size}16",
        family="dinov3",
        timm_name=f"vit_{timm_size}_patch16_dinov3_qkvb",
        patch_size=16,
        default_image_size=512,
        embed_dim=embed_dim,
        depth=depth,
        feature_dim=embed_dim,
        official_file=f"dinov3_vit{size}16_pretrain_lvd1689m-{file_hash}.pth",
        url=None,
        request_url=DINOV3_REQUEST_URL,
        sha256_prefix=file_hash,
        num_prefix_tokens=5,
    )


def _sam(size: str, embed_dim: int, depth: int, file_hash: str) -> BackboneSpec:
    timm_size = {"b": "base", "l": "large", "h": "huge"}[size]
    file = f"sam_vit_{size}_{file_hash}.pth"
    return BackboneSpec(
        name=f"sam_vit_{size}",
        family="sam",
        timm_name=f"samvit_{timm_size}_patch16",
        patch_size=16,
        default_image_size=512,
        embed_dim=embed_dim,
        depth=depth,
        feature_dim=256,
        official_file=file,
        url=SAM_URL.format(file=file),
        md5_prefix=file_hash,
        num_prefix_tokens=0,
        # Meta's SAM only runs at 1024; other sizes resize pos_embed bicubic with antialias
        # (as timm's samvit does), and the global blocks' relative-position tables are linearly
        # interpolated inside the attention (as in both Meta's and timm's get_rel_pos).
        checkpoint_image_size=1024,
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        _dinov2("s", 384, 12, reg=False),
        _dinov2("b", 768, 12, reg=False),
        _dinov2("l", 1024, 24, reg=False),
        _dinov2("g", 1536, 40, reg=False),
        _dinov2("s", 384, 12, reg=True),
        _dinov2("b", 768, 12, reg=True),
        _dinov2("l", 1024, 24, reg=True),
        _dinov2("g", 1536, 40, reg=True),
        _dinov3("s", 384, 12, "08c60483"),
        _dinov3("b", 768, 12, "73cec8be"),
        _dinov3("l", 1024, 24, "8aa4cbdd"),
        _sam("b", 768, 12, "01ec64"),
        _sam("l", 1024, 24, "0b3195"),
        _sam("h", 1280, 32, "4b8939"),
    ]
}

# Where the original project (PhilaMaster/semantic_correspondence) built a family otherwise than Meta's
# hub code does (`build="original"`); "meta" is Meta's configuration.
BUILD_VARIANTS: dict[str, dict[str, dict]] = {
    "meta": {},
    "original": {
        # its vit_base(...) kept the constructor defaults: LayerNorm eps 1e-6 (hub: 1e-5), RoPE in bf16 (hub: fp32)
        "dinov3": {"norm_eps": 1e-6, "rope_dtype": "bf16"},
        # its 64x64 position table was resized with F.interpolate(mode="bicubic"), no antialias
        "sam": {"pos_embed_antialias": False},
    },
}

ALIASES = {
    "dinov2": "dinov2_vitb14",
    "dinov2_reg": "dinov2_vitb14_reg4",
    "dinov3": "dinov3_vitb16",
    "sam": "sam_vit_b",
}


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone by canonical name or short alias (`dinov2`, `dinov3`, `sam`, ...)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BACKBONES:
        choices = ", ".join([*ALIASES, *BACKBONES])
        raise ValueError(f"Unknown backbone {name!r}. Choose one of: {choices}")
    return BACKBONES[key]
