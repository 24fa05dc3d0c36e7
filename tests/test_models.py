"""create_backbone: the files it accepts, the errors it gives, and the Backbone contract."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from model_factory import (
    TINY_OVERRIDES,
    random_official_state_dict,
    write_official_checkpoint,
)
from safetensors.torch import save_file

from models import (
    BACKBONES,
    Backbone,
    CheckpointError,
    create_backbone,
    get_spec,
    is_finetuned,
    save_finetuned,
    weights_origin,
)
from semcorr.storage import files

BASE_MODELS = ["dinov2_vitb14", "dinov2_vitb14_reg4", "dinov3_vitb16", "sam_vit_b"]
OTHER_SIZES = [name for name in BACKBONES if name not in BASE_MODELS]


def _tiny(tmp_path, name: str, **kwargs) -> Backbone:
    path = write_official_checkpoint(tmp_path, name, tiny=True)
    return create_backbone(name, weights=path, device="cpu", **TINY_OVERRIDES, **kwargs)


def _images(bb: Backbone, h_patches: int, w_patches: int) -> torch.Tensor:
    p = bb.patch_size
    return torch.randn(2, 3, h_patches * p, w_patches * p, generator=torch.Generator().manual_seed(1))


# --- official files --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BASE_MODELS)
def test_official_vit_b_file_loads_strictly_with_right_shapes(tmp_path, name):
    """The full ViT-B file, every key of Meta's manifest, into the default architecture."""
    path = write_official_checkpoint(tmp_path, name)
    bb = create_backbone(name, weights=path, device="cpu")
    spec = get_spec(name)
    assert (bb.name, bb.patch_size, bb.feature_dim, bb.weights_path) == (
        name,
        spec.patch_size,
        spec.feature_dim,
        str(path),
    )
    assert len(bb.blocks) == spec.depth and isinstance(bb.blocks, torch.nn.ModuleList)
    with torch.no_grad():
        for h, w in [(3, 3), (4, 6)]:
            assert bb(_images(bb, h, w)).shape == (2, spec.feature_dim, h, w)


def test_loaded_values_are_the_files(tmp_path):
    path = write_official_checkpoint(tmp_path, "sam_vit_b", tiny=True)
    sd = torch.load(path, weights_only=True)
    bb = create_backbone("sam_vit_b", weights=path, device="cpu", **TINY_OVERRIDES)
    assert torch.equal(bb.model.blocks[2].attn.rel_pos_h, sd["image_encoder.blocks.2.attn.rel_pos_h"])
    assert torch.equal(bb.model.blocks[0].mlp.fc1.weight, sd["image_encoder.blocks.0.mlp.lin1.weight"])


@pytest.mark.parametrize("name", OTHER_SIZES)
def test_other_sizes_load_their_official_format(tmp_path, name):
    """ViT-S/L/g and SAM L/H: the ViT-B manifest rescaled, one block deep to stay fast."""
    path = write_official_checkpoint(tmp_path, name, depth=1)
    bb = create_backbone(name, weights=path, device="cpu", depth=1)
    with torch.no_grad():
        assert bb(_images(bb, 2, 3)).shape == (2, get_spec(name).feature_dim, 2, 3)


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory) -> dict[str, Backbone]:
    """One tiny backbone per family, loaded from a random official-format file."""
    return {name: _tiny(tmp_path_factory.mktemp(name), name) for name in BASE_MODELS}


@pytest.mark.parametrize("name", BASE_MODELS)
def test_tiny_models_give_right_shapes_square_and_not(tiny_backbones, name):
    bb = tiny_backbones[name]
    for h, w in [(37, 37), (25, 40), (7, 9)]:
        with torch.no_grad():
            feats = bb(_images(bb, h, w))
        assert feats.shape == (2, bb.feature_dim, h, w) and feats.dtype == torch.float32
        assert torch.isfinite(feats).all()


# --- other accepted formats ------------------------------------------------------------------------


@pytest.mark.parametrize("name", BASE_MODELS)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_format_and_safetensors_give_the_same_features(tmp_path, name, suffix):
    bb = _tiny(tmp_path, name)
    timm_state = {k: v.contiguous() for k, v in bb.model.state_dict().items()}
    path = tmp_path / f"timm_format{suffix}"
    save_file(timm_state, path) if suffix == ".safetensors" else torch.save(timm_state, path)
    again = create_backbone(name, weights=path, device="cpu", **TINY_OVERRIDES)
    images = _images(bb, 3, 4)
    with torch.no_grad():
        same = torch.equal(again(images), bb(images))
    # timm does not store DINOv3's RoPE periods: a timm-format file gets the formula's periods
    assert same == (name != "dinov3_vitb16")


def test_backbone_state_dict_loads_back(tmp_path):
    bb = _tiny(tmp_path, "dinov3_vitb16")
    path = tmp_path / "backbone.safetensors"
    save_file(bb.state_dict(), path)
    again = create_backbone("dinov3", weights=path, device="cpu", **TINY_OVERRIDES)
    images = _images(bb, 3, 4)
    with torch.no_grad():
        assert torch.equal(again(images), bb(images))


@pytest.mark.parametrize("name", ["dinov2_vitb14_reg4", "sam_vit_b"])
def test_finetuned_checkpoint_round_trip(tmp_path, name):
    bb = _tiny(tmp_path, name, layer=1)
    with torch.no_grad():
        bb.model.blocks[1].norm1.weight.add_(1.0)  # "fine-tuned"
    path = save_finetuned(bb, tmp_path / "run" / "best.pt", extra={"epoch": 3, "pck": [0.5, 0.25], "note": None})
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # atomic write, nothing left over
    again = create_backbone(checkpoint=str(path), device="cpu")
    assert (again.name, again.layer, again.timm_overrides, again.extra) == (
        bb.name,
        1,
        TINY_OVERRIDES,
        {"epoch": 3, "pck": [0.5, 0.25], "note": None},
    )
    images = _images(bb, 3, 4)
    with torch.no_grad():
        assert torch.equal(again(images), bb(images))
    for model in (name, "dinov3_vitb16"):  # a fine-tuned file is no weights file, whichever model is asked for
        with pytest.raises(CheckpointError, match=r"fine-tuned checkpoint of this project.*pass it as --checkpoint"):
            create_backbone(model, weights=path)


def test_finetuned_extra_must_be_plain_data(tmp_path):
    bb = _tiny(tmp_path, "dinov2_vitb14")
    with pytest.raises(TypeError, match=r"extra\['lr'\]"):
        save_finetuned(bb, tmp_path / "x.pt", extra={"lr": torch.optim.SGD})
    assert not (tmp_path / "x.pt").exists()


def test_unknown_finetuned_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": "semcorr-backbone/3", "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="this version reads 'semcorr-backbone/2'"):
        create_backbone(checkpoint=str(path))


def test_a_checkpoint_must_be_a_finetuned_one(tmp_path):
    path = write_official_checkpoint(tmp_path, "dinov2_vitb14", tiny=True)
    with pytest.raises(CheckpointError, match="not a fine-tuned checkpoint"):
        create_backbone(checkpoint=str(path))


# --- errors ----------------------------------------------------------------------------------------


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        create_backbone("dinov2", weights=tmp_path / "nope.pth")
    message = str(err.value)
    spec = get_spec("dinov2")
    assert "nope.pth" in message and spec.url in message and "download.py --models dinov2_vitb14" in message


def test_missing_licence_gated_file_says_where_to_request_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        create_backbone("dinov3", weights=tmp_path / "nope.pth")
    spec = get_spec("dinov3")
    assert spec.request_url in str(err.value) and spec.official_file in str(err.value)


def test_default_weights_location_is_in_the_message(monkeypatch, tmp_path):
    monkeypatch.setattr("models.registry.WEIGHTS_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "sam" / "weights" / "sam_vit_b_01ec64.pth")):
        create_backbone("sam")


def test_truncated_file(tmp_path):
    path = write_official_checkpoint(tmp_path, "dinov2_vitb14", tiny=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        create_backbone("dinov2", weights=path, **TINY_OVERRIDES)
    message = str(err.value)
    assert str(path) in message and "truncated" in message and get_spec("dinov2").url in message


def test_partial_state_dict_lists_missing_keys(tmp_path):
    sd = random_official_state_dict("dinov2_vitb14", depth=2)
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        create_backbone("dinov2", weights=path, depth=2)
    message = str(err.value)
    assert "missing keys" in message and "model.blocks.1.attn.qkv.weight" in message
    assert "depth 1" in message and "like dinov2_vitb14" in message


def test_wrong_variant_says_what_the_file_looks_like(tmp_path):
    path = write_official_checkpoint(tmp_path, "dinov2_vitb14_reg4", depth=1)
    with pytest.raises(CheckpointError) as err:
        create_backbone("dinov2", weights=path, depth=1)
    message = str(err.value)
    assert "like dinov2_vitb14_reg4" in message and "not dinov2_vitb14" in message
    assert "create_backbone('dinov2_vitb14_reg4'" in message


def test_wrong_size_says_what_the_file_looks_like(tmp_path):
    path = write_official_checkpoint(tmp_path, "dinov3_vits16", depth=1)
    with pytest.raises(CheckpointError, match="like dinov3_vits16"):
        create_backbone("dinov3", weights=path)


@pytest.mark.parametrize(
    ("requested", "file_of"), [("dinov2", "sam_vit_b"), ("sam", "dinov3_vitb16"), ("dinov3", "dinov2_vitb14")]
)
def test_wrong_family(tmp_path, requested, file_of):
    path = write_official_checkpoint(tmp_path, file_of, depth=1)
    with pytest.raises(CheckpointError) as err:
        create_backbone(requested, weights=path)
    message = str(err.value)
    assert f"like {file_of}" in message and get_spec(requested).name in message


def test_unrecognised_state_dict(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of any supported backbone"):
        create_backbone("dinov2", weights=path)


def test_unmasked_k_bias_is_rejected(tmp_path):
    sd = random_official_state_dict("dinov3_vitb16", tiny=True)
    sd["blocks.0.attn.qkv.bias_mask"] = torch.ones_like(sd["blocks.0.attn.qkv.bias_mask"])
    path = tmp_path / "bad_mask.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.bias"):
        create_backbone("dinov3", weights=path, **TINY_OVERRIDES)


def test_image_size_must_be_a_multiple_of_the_patch(tmp_path):
    bb = _tiny(tmp_path, "dinov2_vitb14")
    with pytest.raises(ValueError, match="multiples of its patch size 14"):
        bb(torch.zeros(1, 3, 225, 224))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        bb(torch.zeros(1, 224, 224, 3))


def test_random_weights_warn_loudly():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        bb = create_backbone("dinov2", weights="random", device="cpu", depth=2, embed_dim=48, num_heads=2)
    assert bb.weights_path == "random" and bb.feature_dim == 48


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown backbone"):
        create_backbone("dinov4", weights="random")
    with pytest.raises(ValueError, match="precision"):
        create_backbone("dinov2", weights="random", precision="fp64", depth=1)
    with pytest.raises(ValueError, match="layer"):
        create_backbone("dinov2", weights="random", layer=2, depth=2)
    with pytest.raises(ValueError, match="rejected the overrides"):
        create_backbone("dinov2", weights="random", not_an_argument=1)


# --- the Backbone contract -------------------------------------------------------------------------


def test_names_are_case_insensitive_and_unknown_ones_list_the_choices():
    assert [get_spec(a.upper()).name for a in ("dinov2", "dinov2_reg", "dinov3", "sam")] == BASE_MODELS
    with pytest.raises(ValueError, match=r"Unknown backbone 'dinov9'\. Choose one of: dinov2, dinov2_reg") as err:
        create_backbone("dinov9")
    assert all(name in str(err.value) for name in BACKBONES)


def test_cpu_defaults_to_fp32_and_bf16_is_optional(tmp_path):
    bb = _tiny(tmp_path, "sam_vit_b")
    assert bb.device == torch.device("cpu") and bb.autocast_dtype is None
    bf16 = create_backbone("sam", weights=bb.weights_path, precision="bf16", **TINY_OVERRIDES)
    images = _images(bb, 4, 4)
    with torch.no_grad():
        exact, approx = bb(images), bf16(images)
    assert approx.dtype == torch.float32 and bf16.autocast_dtype == torch.bfloat16
    assert 0 < (exact - approx).abs().max() < 0.5


@pytest.mark.parametrize("name", BASE_MODELS)
def test_split_forward_equals_forward(tiny_backbones, name):
    bb = tiny_backbones[name]
    images = _images(bb, 3, 5)
    with torch.no_grad():
        state = bb.embed(images)
        frozen = bb.run_blocks(state, 0, 2)
        feats = bb.to_feature_map(bb.run_blocks(frozen, 2, len(bb.blocks)))
        assert torch.equal(feats, bb(images))
    assert state.grid == (3, 5)


@pytest.mark.parametrize(
    ("name", "layer", "head"),
    [("dinov3_vitb16", None, "LayerNorm"), ("sam_vit_b", None, "Sequential"), ("sam_vit_b", 1, None)],
)
def test_trainable_modules_are_the_last_blocks_and_head(tmp_path, name, layer, head):
    bb = _tiny(tmp_path, name, layer=layer)
    modules = bb.trainable_modules(2)
    last = bb.layer if layer is not None else len(bb.blocks) - 1
    assert modules[:2] == [bb.blocks[last - 1], bb.blocks[last]]
    assert [type(m).__name__ for m in modules[2:]] == ([head] if head else [])
    with pytest.raises(ValueError, match="n_last_blocks"):
        bb.trainable_modules(last + 2)


def test_intermediate_layer_feature_dims(tmp_path):
    assert _tiny(tmp_path, "sam_vit_b", layer=-1).feature_dim == TINY_OVERRIDES["embed_dim"]
    assert _tiny(tmp_path, "sam_vit_b").feature_dim == 256
    assert _tiny(tmp_path, "dinov2_vitb14", layer=0).feature_dim == TINY_OVERRIDES["embed_dim"]


def test_checkpoint_and_weights_each_mean_one_thing(tmp_path):
    """--checkpoint takes a fine-tuned checkpoint, --weights a weights file; each refuses the other's
    file, both together are refused, and a checkpoint refuses another model or layer."""
    tiny = _tiny(tmp_path, "dinov2_vitb14", layer=1)
    finetuned = save_finetuned(tiny, tmp_path / "best.pt", {"note": "test"})
    plain = tmp_path / "plain.pth"
    torch.save(tiny.state_dict(), plain)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert is_finetuned(finetuned)
    assert not any(is_finetuned(p) for p in (plain, garbage, tmp_path / "missing.pth"))

    loaded = create_backbone(checkpoint=str(finetuned), device="cpu")
    assert (loaded.name, loaded.layer, loaded.extra) == ("dinov2_vitb14", 1, {"note": "test"})
    assert create_backbone("dinov2", checkpoint=str(finetuned), layer=1, device="cpu").layer == 1
    plain_bb = create_backbone("dinov2", weights=str(plain), device="cpu", **TINY_OVERRIDES)
    assert plain_bb.weights_path == str(plain) and plain_bb.extra == {}
    with pytest.raises(CheckpointError, match=r"plain weights\. Pass it as --weights"):
        create_backbone(checkpoint=str(plain), device="cpu")
    with pytest.raises(CheckpointError, match="pass it as --checkpoint"):
        create_backbone("dinov2", weights=str(finetuned), device="cpu")
    with pytest.raises(ValueError, match="both given"):
        create_backbone(weights=str(plain), checkpoint=str(finetuned))
    with pytest.raises(ValueError, match="holds a fine-tuned dinov2_vitb14, not sam_vit_b"):
        create_backbone("sam", checkpoint=str(finetuned), device="cpu")
    with pytest.raises(ValueError, match="fine-tuned on the features of block 1; --layer 2"):
        create_backbone(checkpoint=str(finetuned), layer=2, device="cpu")


def test_official_weights_are_told_by_the_hash_their_file_name_carries(tmp_path):
    """DINOv3's file names end in a sha256 prefix, SAM's in an md5 prefix (sam_vit_b_01ec64.pth)."""
    assert get_spec("sam_vit_b").md5_prefix == "01ec64" and get_spec("sam_vit_b").sha256_prefix is None
    assert get_spec("dinov3_vitb16").sha256_prefix and get_spec("dinov3_vitb16").md5_prefix is None
    path = tmp_path / "sam_vit_b_01ec64.pth"
    path.write_bytes(b"weights")
    spec = replace(get_spec("sam_vit_b"), md5_prefix=hashlib.md5(b"weights").hexdigest()[:6])
    bb = SimpleNamespace(weights_path=str(path), base_origin=None, spec=spec)
    assert weights_origin(bb) == "official"
    bb.spec = replace(spec, md5_prefix=hashlib.sha256(b"weights").hexdigest()[:6])  # a sha256 prefix is not it
    assert weights_origin(bb) == "custom"


def test_a_checkpoint_takes_a_layer_that_gives_its_own_features(tmp_path):
    """--layer with a checkpoint: any index of the block it was trained on (negative too) is accepted,
    DINO's last block is its default features, SAM's default goes through the neck, and an index out
    of the model's blocks is refused (not wrapped round)."""
    dino = save_finetuned(_tiny(tmp_path, "dinov2_vitb14"), tmp_path / "dino.pt")
    default = create_backbone(checkpoint=str(dino), device="cpu")
    last = create_backbone(checkpoint=str(dino), layer=-1, device="cpu")
    assert create_backbone(checkpoint=str(dino), layer=2, device="cpu").layer is None  # the checkpoint's own
    images = _images(default, 2, 3)
    with torch.no_grad():
        assert torch.equal(last(images), default(images))
    with pytest.raises(ValueError, match="fine-tuned on the features of the last block; --layer 1"):
        create_backbone(checkpoint=str(dino), layer=1, device="cpu")

    block1 = save_finetuned(_tiny(tmp_path, "dinov2_vitb14", layer=1), tmp_path / "block1.pt")
    assert create_backbone(checkpoint=str(block1), layer=-2, device="cpu").layer == 1
    for out_of_range in (4, -4):  # 4 % 3 == 1 and -4 % 3 == 2 are no blocks of a 3-block model
        with pytest.raises(ValueError, match=rf"layer must be a block index in \[-3, 2\], got {out_of_range}"):
            create_backbone(checkpoint=str(block1), layer=out_of_range, device="cpu")

    sam = save_finetuned(_tiny(tmp_path, "sam_vit_b"), tmp_path / "sam.pt")
    with pytest.raises(ValueError, match="features of the last block through the neck; --layer -1"):
        create_backbone(checkpoint=str(sam), layer=-1, device="cpu")
    sam_last = save_finetuned(_tiny(tmp_path, "sam_vit_b", layer=-1), tmp_path / "sam_last.pt")
    assert create_backbone(checkpoint=str(sam_last), layer=-1, device="cpu").layer == 2
    assert create_backbone(checkpoint=str(sam_last), layer=2, device="cpu").layer == 2


def test_a_file_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    """The weights file is hashed by several callers (its origin, a checkpoint's base, every validation):
    its digest is kept per file and algorithm, and computed again only when the file changes."""
    path = tmp_path / "weights.pth"
    path.write_bytes(b"weights")
    opened = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(files, "open", counting_open, raising=False)
    digest = hashlib.sha256(b"weights").hexdigest()
    assert files.file_sha256(path) == digest
    assert files.file_sha256(str(path)) == digest
    link = tmp_path / "link.pth"
    link.symlink_to(path)
    assert files.file_sha256(link) == digest
    assert len(opened) == 1
    assert files.file_sha256(path, algorithm="md5") == hashlib.md5(b"weights").hexdigest()
    assert len(opened) == 2

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched: read again
    assert files.file_sha256(path) == digest and len(opened) == 3
    path.write_bytes(b"other weights")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime as first, other size
    assert files.file_sha256(path) == hashlib.sha256(b"other weights").hexdigest() and len(opened) == 4


def test_a_weights_files_sha256_is_remembered_for_the_next_run_until_the_file_changes(tmp_path, monkeypatch):
    """A run keeps the weights' sha256 beside its feature cache: the next process takes it without reading the
    file, while its inode, size, modification and change times are the same."""
    path, memo = tmp_path / "weights.pth", tmp_path / "cache" / "file_digests.json"
    path.write_bytes(b"weights")
    read = []
    real = files.read_digest
    monkeypatch.setattr(files, "read_digest", lambda *a: read.append(a) or real(*a))
    assert files.file_sha256(path, remember=memo) == hashlib.sha256(b"weights").hexdigest() and len(read) == 1
    monkeypatch.setattr(files, "_DIGESTS", {})  # the next process
    assert files.file_sha256(path, remember=memo) == hashlib.sha256(b"weights").hexdigest() and len(read) == 1
    stat = path.stat()
    time.sleep(0.05)  # past the file system's clock tick: the change time moves
    path.write_bytes(b"Weights")  # other bytes, same size, the old times put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(files, "_DIGESTS", {})
    assert files.file_sha256(path, remember=memo) == hashlib.sha256(b"Weights").hexdigest() and len(read) == 2
    memo.write_text("not json")  # a damaged record is read as empty
    monkeypatch.setattr(files, "_DIGESTS", {})
    assert files.file_sha256(path, remember=memo) == hashlib.sha256(b"Weights").hexdigest() and len(read) == 3
