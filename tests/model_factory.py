"""Random checkpoints in Meta's official formats, built from the key manifests in fixtures/.

The manifests (copies of shared/reference/checkpoint_keys) list every key, shape and dtype of the
official ViT-B files. `tiny=True` keeps the keys and the position grids but shrinks width and
depth (TINY_OVERRIDES), so a forward pass takes milliseconds. The other sizes of each family
(ViT-S/L/g, SAM L/H) are the ViT-B manifest rescaled to their width and head count.

    path = write_official_checkpoint(tmp_path, "dinov2_vitb14", tiny=True)
    bb = create_backbone("dinov2_vitb14", weights=path, **TINY_OVERRIDES)

Values are drawn so that mistakes show: LayerScale ~ N(0, 1), biases and tokens ~ N(0, 0.5),
DINOv3's k bias non-zero (its mask must remove it) and RoPE periods off the formula.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import timm
import torch

from models.registry import get_spec

MANIFEST_DIR = Path(__file__).parent / "fixtures" / "checkpoint_keys"
MANIFESTS = {  # family (and registers) -> the ViT-B manifest
    "dinov2": "dinov2_vitb14_pretrain.json",
    "dinov2_reg": "dinov2_vitb14_reg4_pretrain.json",
    "dinov3": "dinov3_vitb16_pretrain_lvd1689m.json",
    "sam": "sam_vit_b_01ec64.json",
}
MANIFEST_WIDTH, MANIFEST_HEADS = 768, 12  # every manifest is a ViT-B
# depth 3 keeps SAM's block 2, a global-attention block in ViT-B, so both attention kinds are tested
TINY_OVERRIDES = {"embed_dim": 64, "num_heads": 2, "depth": 3}
# per family: the smallest models fine-tuning and the scripts run on (SAM keeps windowed and global blocks)
TINY = {
    "dinov2": {"depth": 2, "embed_dim": 48, "num_heads": 2},
    "dinov3": {"depth": 4, "embed_dim": 48, "num_heads": 2},
    "sam": {"depth": 5, "embed_dim": 48, "num_heads": 2, "window_size": 4, "global_attn_indexes": (2, 4)},
}


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official ViT-B file of a backbone's family."""
    spec = get_spec(name)
    key = "dinov2_reg" if spec.family == "dinov2" and spec.num_prefix_tokens > 1 else spec.family
    keys = json.loads((MANIFEST_DIR / MANIFESTS[key]).read_text())["keys"]
    return {k: tuple(shape) for k, shape in keys.items()}


def official_shapes(name: str, tiny: bool = False, depth: int | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official file of `name` (tiny: of the TINY_OVERRIDES model)."""
    spec = get_spec(name)
    if tiny:
        width, heads, depth = TINY_OVERRIDES["embed_dim"], TINY_OVERRIDES["num_heads"], TINY_OVERRIDES["depth"]
    else:
        width, heads, depth = spec.embed_dim, num_heads(name), depth or spec.depth
    head_dim = width // heads
    scale = {MANIFEST_WIDTH: width, 3 * MANIFEST_WIDTH: 3 * width, 4 * MANIFEST_WIDTH: 4 * width}
    shapes = {}
    for key, shape in manifest(name).items():
        block = re.search(r"blocks\.(\d+)\.", key)
        if block and int(block.group(1)) >= depth:
            continue
        if key.endswith(("rel_pos_h", "rel_pos_w")):
            shape = (shape[0], head_dim)
        elif key.endswith("rope_embed.periods"):
            shape = (head_dim // 4,)
        elif not key.startswith(("prompt_encoder", "mask_decoder")):
            shape = tuple(scale.get(n, n) for n in shape)
        shapes[key] = shape
    return _swiglu(shapes, width) if "vitg" in spec.name else shapes


def num_heads(name: str) -> int:
    """Attention heads of a registered backbone, as timm defines it."""
    with torch.device("meta"):
        return timm.create_model(get_spec(name).timm_name, pretrained=False, depth=1).blocks[0].attn.num_heads


def random_official_state_dict(
    name: str, tiny: bool = False, seed: int = 0, depth: int | None = None
) -> dict[str, torch.Tensor]:
    """A state dict in the official format of `name`, with random values (see module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    return {key: _random(key, shape, gen) for key, shape in official_shapes(name, tiny, depth).items()}


def write_official_checkpoint(
    directory: Path, name: str, tiny: bool = False, seed: int = 0, depth: int | None = None
) -> Path:
    """Save a random official-format file under its official name in `directory`."""
    path = Path(directory) / get_spec(name).official_file
    torch.save(random_official_state_dict(name, tiny, seed, depth), path)
    return path


def _random(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    def normal(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std

    if key.endswith("bias_mask"):  # 1 over q and v, 0 over k, as in the official files
        mask = torch.ones(shape)
        mask[shape[0] // 3 : 2 * shape[0] // 3] = 0
        return mask
    if key.endswith("periods"):  # Meta's formula (base 100) times a random factor: not recomputable
        head_dim = 4 * shape[0]
        periods = 100.0 ** (2 * torch.arange(shape[0]) / (head_dim // 2))
        return periods * (0.7 + 0.7 * torch.rand(shape, generator=gen))
    if key.endswith(("ls1.gamma", "ls2.gamma")):
        return normal(1.0)
    if key.endswith(".weight") and len(shape) == 1:  # norms
        return 1 + normal(0.3)
    if key.endswith(".weight"):  # linear and conv: unit-variance outputs
        return normal(1 / math.sqrt(math.prod(shape[1:])))
    return normal(0.5)  # biases, tokens, position tables


def _swiglu(shapes: dict[str, tuple[int, ...]], width: int) -> dict[str, tuple[int, ...]]:
    """ViT-g's MLP is Meta's SwiGLUFFNFused: w12 (2 x hidden, width) and w3 (width, hidden)."""
    hidden = (int(4 * width * 2 / 3) + 7) // 8 * 8
    out = {}
    for key, shape in shapes.items():
        if ".mlp.fc1." in key:
            out[key.replace(".mlp.fc1.", ".mlp.w12.")] = (2 * hidden, *shape[1:])
        elif ".mlp.fc2." in key:
            out[key.replace(".mlp.fc2.", ".mlp.w3.")] = (width, hidden) if key.endswith("weight") else shape
        else:
            out[key] = shape
    return out


def tiny_checkpoint(folder: Path, family: str = "dinov2", seed: int = 0, trained: dict | None = None) -> Path:
    """A self-contained checkpoint of a TINY random backbone, as scripts take with --checkpoint (`trained`: the
    image size and resize its training recorded)."""
    from models import create_backbone, save_finetuned

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bb = create_backbone(family, weights="random", device="cpu", **TINY[family])
    return save_finetuned(bb, folder / f"init_{family}.pt", {"finetune": trained} if trained else {})
