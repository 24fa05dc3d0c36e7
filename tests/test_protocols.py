"""Protocols: one table of conventions, each part overridable, and each convention of the original
project checked against a formula written from its code (the whole run against its own code is
tests/test_protocol_original.py)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_factory import FakeImage, fake_pairs, make_pf_pascal, make_pf_willow
from model_factory import TINY_OVERRIDES, random_official_state_dict
from PIL import Image

from helper_functions import IMAGENET_MEAN, IMAGENET_STD, preprocess_image
from matching_strategies import window_soft_argmax
from models import CheckpointError, create_backbone, weights_origin
from semcorr.cli.flags import evaluation_parser, given
from semcorr.cli.resolve import resolve
from semcorr.config.protocols import PROTOCOLS
from semcorr.config.settings import EvalSettings, MatchSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.geometry import Preprocess, image_geometry


def resolved(**flags) -> EvalSettings:
    return resolve("evaluation", flags)


# --- the table and its resolution -------------------------------------------------------------------


def test_a_protocol_sets_every_convention_and_a_flag_overrides_one_part():
    cfg = resolved(protocol="original", dataset="pf-willow")
    extract, data = cfg.extract, cfg.data
    assert (extract.resample, extract.coordinates, data.pf_shift, data.clamp_keypoints) == (
        "torch-bilinear", "corner", False, False
    )  # fmt: skip
    assert (cfg.match.window_border, data.pck_norm, extract.feature_dtype, cfg.member.backbone.build) == (
        "clip", "image", "fp32", "original"
    )  # fmt: skip
    assert cfg.member.backbone.precision == "fp32" and cfg.protocol.overrides == {}
    assert resolved(protocol="original", model="sam").member.backbone.precision == "fp16"
    cfg = resolved(dataset="pf-willow")
    assert (cfg.extract.resample, cfg.extract.coordinates, cfg.data.pck_norm, cfg.match.window_border) == (
        "pil-bicubic", "centre", "kpbox", "shrink"
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"coordinates='centre' leaves the original protocol \(it used 'corner'\)"):
        cfg = resolved(protocol="original", coordinates="centre")
    assert (cfg.extract.coordinates, cfg.extract.resample, cfg.protocol.overrides) == (
        "centre", "torch-bilinear", {"coordinates": "centre"}
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"resize='pad' leaves the original protocol \(it used 'squash'\)"):
        cfg = resolved(protocol="original", resize="pad")
    assert cfg.protocol.overrides == {"resize": "pad"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default protocol takes overrides without a word
        assert resolved(coordinates="corner").protocol.overrides == {"coordinates": "corner"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the original's own precision for the model is no override
        assert resolved(protocol="original", model="dinov2", precision="fp32").protocol.overrides == {}
    with pytest.raises(ValueError, match="unknown protocol 'paper': choose one of default, original"):
        resolved(protocol="paper")


def test_every_override_is_warned_about_once_even_when_every_convention_is_given():
    conventions = {"resample": "pil-bicubic", "coordinates": "centre", "pf_shift": True, "clamp_keypoints": True,
                   "window_border": "shrink", "feature_dtype": "fp16", "build": "meta", "precision": "fp32"}  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = resolved(protocol="original", dataset="pf-willow", matcher="wsoftargmax", **conventions)
    leaving = sorted(str(w.message).split("=")[0] for w in caught if "leaves the original protocol" in str(w.message))
    assert leaving == sorted(set(conventions) - {"precision"}) == sorted(cfg.protocol.overrides)


def test_the_command_line_refuses_an_unknown_protocol_and_records_the_flags(capsys):
    parser = evaluation_parser("test")
    with pytest.raises(SystemExit):
        parser.parse_args(["--protocol", "paper"])
    assert "invalid choice: 'paper'" in capsys.readouterr().err
    argv = ["--protocol", "original", "--dataset", "pf-pascal", "--no-pf-shift", "--matcher", "wsoftargmax"]
    argv += ["--window-border", "shrink"]
    with pytest.warns(UserWarning, match="window_border='shrink' leaves the original protocol"):
        cfg = resolve("evaluation", given(parser.parse_args(argv)))
    assert (cfg.protocol.name, cfg.data.pf_shift, cfg.match.window_border, cfg.extract.coordinates) == (
        "original", False, "shrink", "corner"
    )  # fmt: skip
    assert cfg.protocol.overrides == {"window_border": "shrink"}  # --no-pf-shift is the original's own


def test_each_protocol_fixes_the_same_conventions():
    assert len({frozenset(vars(p.conventions)) for p in PROTOCOLS.values()}) == 1
    opt = PROTOCOLS["original"].optimisation
    assert opt.batch_size == 1 and opt.select == "last" and not opt.train_neck


# --- the original's conventions, each against a formula written from its code ------------------------


def test_corner_coordinates_are_the_originals_pixel_to_patch_and_back():
    """helper_functions.pixel_to_patch_coord / patch_to_pixel_coord of the original: int(x * (S / W) // P)
    with x a float32 keypoint (numpy 2 keeps the product in float32), clamped; (p * P + P / 2) * (W / S)."""
    prep = Preprocess.create(518, 14, "squash", coordinates="corner")
    rng = np.random.default_rng(0)
    for w, h in [(500, 375), (333, 500), (370, 250)]:
        geom = image_geometry((w, h), prep)
        xy = np.stack([rng.uniform(0, w, 200), rng.uniform(0, h, 200)], axis=1)
        xy = np.round(xy, 1).astype(np.float32)  # keypoints as the original held them
        xy[:5] = [[0, 0], [w - 1, h - 1], [10 * w / 37, 0], [w, h], [-3, h + 2]]  # edges, a patch border, outside
        q = (geom.to_input(xy) + 0.5) / 14 - 0.5
        ours = np.clip(np.floor(q + 0.5), 0, 36)
        theirs = [[min(max(int(x * (518 / w) // 14), 0), 36), min(max(int(y * (518 / h) // 14), 0), 36)] for x, y in xy]
        assert np.array_equal(ours, np.array(theirs, float))
        p = rng.integers(0, 37, (50, 2)).astype(float)
        back = geom.to_original((p + 0.5) * 14 - 0.5)
        np.testing.assert_allclose(back, (p * 14 + 7) * np.array([w / 518, h / 518]), rtol=0, atol=1e-9)


def test_torch_bilinear_resizes_the_normalised_tensor_without_antialias():
    """SPairDataset.read_img + Normalize, then F.interpolate(bilinear, align_corners=False), as the original."""
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    ours = preprocess_image(image, Preprocess.create(518, 14, "squash", resample="torch-bilinear"))
    tensor = torch.tensor(pixels.transpose(2, 0, 1).astype(np.float32)) / 255.0
    tensor = (tensor - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    theirs = F.interpolate(tensor[None], size=(518, 518), mode="bilinear", align_corners=False)[0]
    assert torch.equal(ours, theirs)
    assert (ours - preprocess_image(image, Preprocess.create(518, 14, "squash"))).abs().max() > 0.1


def test_a_clipped_window_keeps_its_inner_side():
    """find_best_match_window_softargmax: the window [c - r, c + r] cut at the grid's edge, softmax over it."""
    sim = torch.rand(1, 6, 7, generator=torch.Generator().manual_seed(0))
    sim[0, 0, 1] = 2.0  # the peak, next to the top-left corner
    k, t = 5, 0.3
    weights = (sim[0, 0:3, 0:4] / t).flatten().softmax(0).view(3, 4)
    ys, xs = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    expected = torch.stack([(weights * xs).sum(), (weights * ys).sum()])
    clipped = window_soft_argmax(sim, MatchSettings("wsoftargmax", k, t, window_border="clip"))[0]
    torch.testing.assert_close(clipped, expected)
    shrunk = window_soft_argmax(sim, MatchSettings("wsoftargmax", k, t))[0]  # radius 0 in y, 1 in x around (1, 0)
    w = (sim[0, 0, 0:3] / t).softmax(0)
    torch.testing.assert_close(shrunk, torch.stack([(w * torch.arange(3.0)).sum(), torch.tensor(0.0)]))


def _pf_images() -> list[FakeImage]:
    return [
        FakeImage("car_a", "car", (60, 40), {0: (0.0, 5.0), 1: (30.0, 20.0), 2: (59.0, 39.0)}),
        FakeImage("car_b", "car", (50, 45), {0: (10.0, 0.0), 1: (25.0, 22.0), 2: (49.0, 44.0)}),
    ]


def test_pf_coordinates_as_stored_and_unclamped_under_the_original_protocol(tmp_path):
    root = make_pf_pascal(tmp_path / "pascal", fake_pairs(_pf_images(), "test"))
    shifted = load_pairs("pf-pascal", root=root)
    stored = load_pairs("pf-pascal", root=root, pf_shift=False, clamp_keypoints=False)
    np.testing.assert_array_equal(stored.pairs[0].src_kps, shifted.pairs[0].src_kps + 1)  # MATLAB's 1-based values
    assert stored.clamped_keypoints == 4 and "kept unclamped" in stored.notes[0]  # x = W, y = H: outside, 2 a pair
    assert stored.pairs[0].src_kps.max(axis=0).tolist() == [60, 40]
    willow = make_pf_willow(tmp_path / "willow", fake_pairs(_pf_images(), "test"), path_prefix="PF-dataset")
    cfg = resolved(protocol="original", dataset="pf-willow")
    assert cfg.data.pck_norm == "image"  # the original's threshold: the target image's max side, not the keypoint box
    assert load_pairs("pf-willow", root=willow, pf_shift=False, clamp_keypoints=False).pairs[0].trg_kps[2].tolist() == [
        50,
        45,
    ]


# --- backbones built as the original did ------------------------------------------------------------


def _rope(periods: torch.Tensor, h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's RopePositionEmbedding.forward in `dtype` (its pos_embed_rope_dtype), periods held in it."""
    dd = {"dtype": dtype}
    coords_h, coords_w = torch.arange(0.5, h, **dd) / h, torch.arange(0.5, w, **dd) / w
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
    angles = 2 * math.pi * (2.0 * coords - 1.0)[:, :, None] / periods.to(dtype)[None, None, :]
    angles = angles.flatten(1, 2).tile(2)
    return torch.sin(angles), torch.cos(angles)


def _apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, prefix: int) -> torch.Tensor:
    """Meta's SelfAttention.apply_rope: every token cast to the rope's dtype, the patch tokens rotated."""
    dtype, x = x.dtype, x.to(sin.dtype)
    first, second = x[:, :, prefix:].chunk(2, dim=-1)
    rotated = x[:, :, prefix:] * cos + torch.cat((-second, first), dim=-1) * sin
    return torch.cat((x[:, :, :prefix], rotated), dim=2).to(dtype)


def original_dinov3(sd: dict, images: torch.Tensor, heads: int, eps: float, rope_dtype: torch.dtype) -> torch.Tensor:
    """The original project's DINOv3: Meta's DinoVisionTransformer with LayerNorm eps 1e-6 and bf16 RoPE."""
    b = images.shape[0]
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    _, c, h, w = x.shape
    x = torch.cat((sd["cls_token"].expand(b, -1, -1), sd["storage_tokens"].expand(b, -1, -1), x.flatten(2).mT), dim=1)
    prefix = 1 + sd["storage_tokens"].shape[1]
    sin, cos = _rope(sd["rope_embed.periods"], h, w, rope_dtype)
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("blocks.")})):
        p = f"blocks.{i}."
        ln = lambda t, n, p=p: F.layer_norm(t, (c,), sd[p + n + ".weight"], sd[p + n + ".bias"], eps=eps)  # noqa: E731
        qkv = F.linear(
            ln(x, "norm1"), sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] * sd[p + "attn.qkv.bias_mask"]
        )
        q, k, v = (t.transpose(1, 2) for t in qkv.reshape(b, -1, 3, heads, c // heads).unbind(2))
        q, k = _apply_rope(q, sin, cos, prefix), _apply_rope(k, sin, cos, prefix)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        x = x + sd[p + "ls1.gamma"] * F.linear(attn, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        hidden = F.gelu(F.linear(ln(x, "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + sd[p + "ls2.gamma"] * F.linear(hidden, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    x = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], eps=eps)
    return x[:, prefix:].reshape(b, h, w, c).permute(0, 3, 1, 2)


def test_dinov3_built_as_the_original_has_bf16_rope_and_eps_1e6(tmp_path):
    sd = random_official_state_dict("dinov3_vitb16", tiny=True)
    torch.save(sd, tmp_path / "dinov3.pth")
    images = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    heads = TINY_OVERRIDES["num_heads"]
    with torch.no_grad():
        original = create_backbone("dinov3", weights=tmp_path / "dinov3.pth", build="original", **TINY_OVERRIDES)
        meta = create_backbone("dinov3", weights=tmp_path / "dinov3.pth", **TINY_OVERRIDES)
        reference = original_dinov3(sd, images, heads, 1e-6, torch.bfloat16)
        assert (original(images) - reference).abs().max() < 1e-4
        assert (meta(images) - original_dinov3(sd, images, heads, 1e-5, torch.float32)).abs().max() < 1e-4
        assert (meta(images) - reference).abs().max() > 1e-3  # the two builds differ where it shows


def test_sam_built_as_the_original_resizes_its_position_table_without_antialias(tmp_path):
    sd = random_official_state_dict("sam_vit_b", tiny=True)
    torch.save(sd, tmp_path / "sam.pth")
    images = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    pos = sd["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    patches = F.conv2d(
        images, sd["image_encoder.patch_embed.proj.weight"], sd["image_encoder.patch_embed.proj.bias"], stride=16
    ).permute(0, 2, 3, 1)
    for build, antialias in (("original", False), ("meta", True)):
        bb = create_backbone("sam", weights=tmp_path / "sam.pth", build=build, **TINY_OVERRIDES)
        expected = patches + F.interpolate(pos, size=(32, 32), mode="bicubic", antialias=antialias).permute(0, 2, 3, 1)
        with torch.no_grad():
            assert (bb.embed(images).tokens - expected).abs().max() < 1e-5, build


# --- the original's checkpoints -------------------------------------------------------------------


def test_the_originals_checkpoint_format_loads_with_checkpoint(tmp_path):
    """Its fine-tuning scripts saved {'model_state_dict': Meta's keys, 'epoch', 'n_blocks', ...}; the model
    is read off the shapes (a ViT-S/16 here, to keep the test small)."""
    sd = random_official_state_dict("dinov3_vits16")
    torch.save(sd, tmp_path / "official.pth")
    original = {"epoch": 1, "model_state_dict": sd, "optimizer_state_dict": {}, "n_blocks": 3, "temperature": 15}
    torch.save(original, tmp_path / "epoch_1.pth")
    bb = create_backbone(checkpoint=str(tmp_path / "epoch_1.pth"), device="cpu", build="original")
    plain = create_backbone("dinov3_vits16", weights=tmp_path / "official.pth", build="original")
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(bb(images), plain(images))
    assert bb.name == "dinov3_vits16" and weights_origin(bb) == "fine-tuned"
    assert bb.extra["original_checkpoint"] == {"epoch": 1, "n_blocks": 3, "temperature": 15}
    with pytest.raises(CheckpointError, match="of the original project, not a weights file: pass it as --checkpoint"):
        create_backbone("dinov3_vits16", weights=tmp_path / "epoch_1.pth")
    torch.save({"model_state_dict": {k: v for k, v in list(sd.items())[:-3]}}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        create_backbone(checkpoint=str(tmp_path / "cut.pth"), device="cpu")


def test_the_window_border_is_the_protocols_when_not_given():
    assert resolved(protocol="original", matcher="wsoftargmax").match.window_border == "clip"
    assert resolved(matcher="wsoftargmax", window_border="clip").match.window_border == "clip"


def test_settings_given_and_unused_are_said():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = resolved(window=7, temperature=0.05)
    assert [str(w.message) for w in caught] == [
        "--window 7 ignored: --matcher argmax does not use it",
        "--temperature 0.05 ignored: --matcher argmax does not use it",
    ]
    assert (cfg.match.matcher, cfg.match.window, cfg.match.temperature) == ("argmax", 5, 0.1)  # recorded as used
    with pytest.warns(UserWarning, match="--window-border clip ignored"):
        assert resolved(protocol="default", window_border="clip").protocol.overrides == {}
    with pytest.warns(UserWarning, match="--no-pf-shift ignored: spair's coordinates are 0-based already"):
        assert resolved(pf_shift=False).data.pf_shift
    with pytest.warns(UserWarning, match="--params-alpha 0.2 ignored"):
        resolved(params_alpha=0.2)
    with pytest.warns(UserWarning, match="--cache-dir c ignored: --no-cache"):
        assert resolved(cache_dir="c", no_cache=True).extract.cache_dir is None
    with pytest.warns(UserWarning, match="--layout small ignored: pf-pascal has no layouts"):
        assert resolved(dataset="pf-pascal", layout="small").data.layout is None
    with pytest.warns(UserWarning, match="--flip-masks m ignored: it is for --flip-align mask"):
        assert resolved(flip_masks="m").flip_masks is None
    with pytest.warns(UserWarning, match="--image-size 57 is not a multiple of dinov2_vitb14's 14-pixel patch: 56x56"):
        assert resolved(image_size=(57,)).member.image_size == (56, 56)
    with pytest.raises(ValueError, match=r"--thresholds: 0\.1 given more than once"):
        resolved(thresholds=(0.1, 0.1))


# --- GeoAware-SC's protocol: resolution and the pieces its goldens (tests/test_protocol_geoaware.py) rely on ----


def test_geoaware_starts_from_its_matcher_and_thresholds_and_fixes_its_conventions():
    cfg = resolved(protocol="geoaware")
    assert (cfg.member.image_size, cfg.member.resize, cfg.extract.resample, cfg.extract.pad_fill) == (
        (840, 840), "pad", "pil-lanczos", "black"
    )  # fmt: skip
    assert (cfg.extract.coordinates, cfg.member.backbone.final_norm, cfg.data.strict, cfg.data.pf_shift) == (
        "canvas", False, True, False
    )  # fmt: skip
    assert (cfg.match.matcher, cfg.match.window, cfg.match.temperature, cfg.data.thresholds) == (
        "geoaware-softargmax", 11, 0.02, (0.01, 0.05, 0.1)
    )  # fmt: skip
    pascal = resolved(protocol="geoaware", dataset="pf-pascal")
    assert (pascal.match.window, pascal.data.thresholds, pascal.data.pck_norm) == (15, (0.05, 0.1, 0.15), "image")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what the protocol starts from, a flag changes without leaving it
        assert resolved(protocol="geoaware", matcher="argmax", thresholds=(0.1,)).protocol.overrides == {}
    with pytest.warns(UserWarning, match=r"strict=False leaves the geoaware protocol \(it used True\)"):
        assert resolved(protocol="geoaware", strict=False).protocol.overrides == {"strict": False}
    with pytest.warns(UserWarning, match=r"image_size=\[518, 518\] leaves the geoaware protocol"):
        resolved(protocol="geoaware", image_size=(518,))
    with pytest.raises(ValueError, match="--no-final-norm applies to DINO backbones"):
        resolved(model="sam", final_norm=False)


def test_a_strict_rule_counts_a_keypoint_at_exactly_alpha_l_as_wrong():
    import pck

    distance, norm_l = np.array([9.0, 10.0, 11.0]), np.array([100.0] * 3)
    assert pck.is_correct(distance, norm_l, 0.1).tolist() == [True, True, False]
    assert pck.is_correct(distance, norm_l, 0.1, strict=True).tolist() == [True, False, False]


def test_without_the_final_norm_dino_gives_its_last_blocks_raw_output():
    torch.manual_seed(0)
    normed = create_backbone("dinov2", weights="random", **TINY_OVERRIDES).eval()
    raw = create_backbone("dinov2", weights="random", final_norm=False, **TINY_OVERRIDES).eval()
    raw.load_state_dict(normed.state_dict())
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        before, after = raw(x), normed(x)
        renormed = normed.model.norm(before.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(after, renormed)  # the same tokens, the norm left out
    assert not torch.allclose(before, after, atol=1e-2)


def test_canvas_coordinates_are_geoawares_float32_products():
    """A keypoint's canvas coordinate is float32 x * float32(840 / l) + offset, its patch float32(60 / 840) times
    that, truncated (utils_dataset.preprocess_kps_pad, utils_correspondence.kpts_to_patch_idx)."""
    from semcorr.data.geometry import input_to_patch

    prep = Preprocess.create(840, 14, "pad", resample="pil-lanczos", coordinates="canvas", fill="black")
    for w, h in ((100, 61), (333, 500), (500, 375), (210, 211)):
        geom = image_geometry((w, h), prep)
        xy = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).reshape(-1, 2).astype(np.float64)
        scale = np.float32(840 / max(w, h))
        theirs = xy.astype(np.float32) * scale + np.array(geom.offset, np.float32)
        patch = (np.float32(60 / 840) * theirs).astype(np.int32)
        uv = geom.to_input(xy)
        np.testing.assert_array_equal(uv + 0.5, theirs.astype(np.float64))
        np.testing.assert_array_equal(np.floor(input_to_patch(uv, 14, "canvas") + 0.5), patch)


def test_every_protocol_names_the_threshold_length_of_every_dataset():
    from semcorr.data.datasets import LOADERS

    for name, protocol in PROTOCOLS.items():
        assert set(protocol.conventions.pck_norms) == set(LOADERS), name
    assert resolved(protocol="geoaware", dataset="ap10k").data.pck_norm == "bbox"  # GeoAware-SC's own AP-10K rule
