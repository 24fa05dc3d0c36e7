"""semcorr/storage/feature_cache.py: one file per image, keyed by everything that changes features and by the image file."""

import os
import re
import warnings

import pytest
import torch

from semcorr.data.images import ImageRef
from semcorr.storage.feature_cache import FeatureCache

SHAPE = (8, 3, 4)
SETTING = {"backbone": "dinov2_vitb14", "weights_sha256": "ab" * 32, "layer": None, "preprocess": "518x518-squash-p14"}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"pixels")
    return ImageRef("spair/cat/a", str(path), (40, 30))


def test_features_round_trip_in_their_dtype_per_setting(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    assert cache.load(image, SHAPE) is None
    feats = torch.randn(1, 8, 3, 4, dtype=torch.float16)
    cache.save([image], feats)
    assert torch.equal(cache.load(image, SHAPE), feats[0])
    assert FeatureCache(tmp_path, SETTING).load(image, SHAPE) is not None  # the same setting finds it again
    assert FeatureCache(tmp_path, {**SETTING, "layer": 9}).load(image, SHAPE) is None
    assert FeatureCache(tmp_path, {**SETTING, "preprocess": "448x448-squash-p14"}).load(image, SHAPE) is None
    assert (cache.dir / "setting.json").is_file() and cache.dir.name.startswith("dinov2_vitb14-")


def test_a_changed_image_file_is_not_served_from_the_cache(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image], torch.randn(1, 8, 3, 4))
    stat = os.stat(image.path)
    os.utime(image.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # edited in place
    assert cache.load(image, SHAPE) is None


def test_an_unreadable_entry_is_recomputed_with_a_warning(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image], torch.randn(1, 8, 3, 4))
    cache.path(image).write_bytes(b"truncated")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load(image, SHAPE) is None
    assert str(cache.path(image)) in str(caught[0].message)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (torch.full(SHAPE, float("nan"), dtype=torch.float16), "holding NaN or infinite values"),
        (torch.zeros(8, 2, 2), "shaped (8, 2, 2) instead of (8, 3, 4)"),
        (torch.zeros(SHAPE, dtype=torch.int64), "not a floating-point tensor"),
        ({"feats": torch.zeros(SHAPE)}, "not a floating-point tensor (dict)"),
    ],
)
def test_a_damaged_entry_is_dropped_with_a_warning_naming_it(tmp_path, image, entry, problem):
    cache = FeatureCache(tmp_path, SETTING)
    torch.save(entry, cache.path(image))
    with pytest.warns(UserWarning, match=re.escape(f"{cache.path(image)} (of {image.path}) is {problem}")):
        assert cache.load(image, SHAPE) is None


def test_non_finite_features_are_never_stored(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image], torch.full((1, *SHAPE), float("inf")))
    assert not cache.path(image).exists()
