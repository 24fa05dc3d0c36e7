"""End to end geometry: an object shifted and scaled between two non-square images of different
sizes, seen by a backbone whose right answer is known, must be matched to within a pixel."""

import numpy as np
import pytest
import torch
from synthetic import ColourCodeBackbone, render_object

import pck
from helper_functions import extract_features, preprocess_image
from semcorr.config.settings import ExtractSettings, MatchSettings
from semcorr.data.geometry import Preprocess, image_geometry
from semcorr.data.images import ImageRef
from semcorr.data.pairs import PairRecord
from semcorr.engine import matching
from semcorr.engine.matching import predict_keypoints
from semcorr.engine.members import Member

P, CANVAS, N = 14, 224, 8  # patch, input side, object size in patches
SRC_SIZE, TRG_SIZE = (300, 200), (180, 300)  # (W, H): non-square, different sizes
SRC_BOX_IN = (84, 42, 196, 154)  # object box on the network input (patch aligned), x0 y0 x1 y1
TRG_BOX_IN = (56, 84, 168, 196)


def documented_layout(size, resize):
    """The documented input layout, written out independently: scale (sx, sy) and offset (ox, oy)."""
    w, h = size
    if resize == "squash":
        return (CANVAS / w, CANVAS / h), (0, 0)
    s = min(CANVAS / w, CANVAS / h)
    cw, ch = round(w * s), round(h * s)
    return (cw / w, ch / h), ((CANVAS - cw) // 2, (CANVAS - ch) // 2)


def box_in_original(box_in, size, resize):
    (sx, sy), (ox, oy) = documented_layout(size, resize)
    x0, y0, x1, y1 = box_in
    return ((x0 - ox) / sx, (y0 - oy) / sy, (x1 - ox) / sx, (y1 - oy) / sy)  # pixel-edge coordinates


def object_points(box):
    """Pixel-centre coordinates of the object's interior patch centres (2 patches from its edge)."""
    x0, y0, x1, y1 = box
    cells = (np.arange(2, N - 2) + 0.5) / N
    u, v = np.meshgrid(cells, cells)
    return np.stack([x0 + u.ravel() * (x1 - x0) - 0.5, y0 + v.ravel() * (y1 - y0) - 0.5], 1).astype(np.float32)


def make_pair(tmp_path, resize):
    src_box = box_in_original(SRC_BOX_IN, SRC_SIZE, resize)
    trg_box = box_in_original(TRG_BOX_IN, TRG_SIZE, resize)
    refs = []
    for name, size, box in [("src", SRC_SIZE, src_box), ("trg", TRG_SIZE, trg_box)]:
        path = tmp_path / f"{name}-{resize}.png"
        render_object(size, box).save(path)
        refs.append(ImageRef(f"test/{name}-{resize}", str(path), size))
    src_kps, trg_kps = object_points(src_box), object_points(trg_box)
    return PairRecord(
        pair_id="p0",
        dataset="test",
        category="object",
        src=refs[0],
        trg=refs[1],
        src_kps=src_kps,
        trg_kps=trg_kps,
        kp_ids=[str(i) for i in range(len(src_kps))],
        trg_bbox=tuple(c - 0.5 for c in trg_box),
    )


def evaluate_pair(tmp_path, resize, matcher):
    pair = make_pair(tmp_path, resize)
    prep = Preprocess.create(CANVAS, P, resize)
    feats = extract_features(
        ColourCodeBackbone(P), [pair.src, pair.trg], prep, ExtractSettings(num_workers=0), progress=False
    )
    cfg = MatchSettings(matcher=matcher, window=5, temperature=0.05)
    pred = predict_keypoints([pair], [Member(feats)], cfg, progress=False)
    return pck.keypoint_table([pair], pred, [0.05], "bbox")


@pytest.mark.parametrize("resize", ["squash", "pad"])
@pytest.mark.parametrize("matcher", ["argmax", "wsoftargmax"])
def test_known_correspondence_is_found_to_the_pixel(tmp_path, resize, matcher):
    table = evaluate_pair(tmp_path, resize, matcher)
    assert table["correct@0.05"].all()
    assert table["distance"].max() < 1.0


@pytest.mark.parametrize("resize", ["squash", "pad"])
def test_half_patch_error_in_back_projection_fails(tmp_path, monkeypatch, resize):
    monkeypatch.setattr(matching, "patch_to_input", lambda pq, p: pq * p)  # forgets the patch centre
    table = evaluate_pair(tmp_path, resize, "argmax")
    assert not table["correct@0.05"].all()


@pytest.mark.parametrize("resize", ["squash", "pad"])
def test_half_patch_error_in_source_lookup_fails(tmp_path, monkeypatch, resize):
    monkeypatch.setattr(matching, "input_to_patch", lambda uv, p, convention: (uv + 0.5) / p)  # half a patch off
    table = evaluate_pair(tmp_path, resize, "argmax")
    assert not table["correct@0.05"].all()


@pytest.mark.parametrize("resize", ["squash", "pad"])
@pytest.mark.parametrize("size", [(300, 200), (181, 299), (64, 512)])
def test_geometry_round_trip_and_documented_layout(resize, size):
    prep = Preprocess.create(CANVAS, P, resize)
    geom = image_geometry(size, prep)
    scale, offset = documented_layout(size, resize)
    assert geom.scale == pytest.approx(scale) and geom.offset == pytest.approx(offset)
    xy = np.random.default_rng(0).uniform(-0.5, max(size) - 0.5, (50, 2))
    np.testing.assert_allclose(geom.to_original(geom.to_input(xy)), xy, atol=1e-9)
    # the image's outer pixel edges land on the content's edges
    corners = geom.to_input(np.array([[-0.5, -0.5], [size[0] - 0.5, size[1] - 0.5]]))
    np.testing.assert_allclose(corners[0], np.array(offset) - 0.5, atol=1e-9)
    np.testing.assert_allclose(corners[1], np.array(offset) + np.array(geom.content) - 0.5, atol=1e-9)


def test_preprocess_pads_with_zero_and_rounds_to_patch():
    prep = Preprocess.create((230, 100), P, "pad")
    assert (prep.height, prep.width) == (224, 98)
    from PIL import Image

    tensor = preprocess_image(Image.new("RGB", (50, 200), (255, 255, 255)), prep)
    geom = image_geometry((50, 200), prep)
    ox = int(geom.offset[0])
    assert tensor.shape == (3, 224, 98)
    assert torch.all(tensor[:, :, :ox] == 0) and torch.all(tensor[:, :, ox + geom.content[0] :] == 0)
    assert tensor[:, :, ox : ox + geom.content[0]].min() > 2.0  # white, normalised


def test_preprocess_names_are_checked_where_it_is_made():
    with pytest.raises(
        ValueError, match="resample must be one of pil-bicubic, pil-lanczos, torch-bilinear, got 'nearest'"
    ):
        Preprocess.create(224, 14, "squash", resample="nearest")
    with pytest.raises(ValueError, match="resize must be one of squash, pad"):
        Preprocess.create(224, 14, "crop")
