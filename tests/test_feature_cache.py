"""semcorr/storage/feature_cache.py: one file per image, keyed by everything that changes features and by the image
file's content; each entry names its image."""

import os
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from semcorr.data.images import ImageRef
from semcorr.storage.feature_cache import FeatureCache
from semcorr.storage.files import file_sha256

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


def test_an_image_replaced_by_other_content_of_the_same_size_and_time_is_not_served_its_old_features(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image], torch.randn(1, 8, 3, 4))
    stat = os.stat(image.path)
    Path(image.path).write_bytes(b"PIXELS")  # same size; then the old time put back, as `cp -p` or `rsync -t` do
    os.utime(image.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.load(image, SHAPE) is None


def test_an_image_touched_but_unchanged_is_still_served(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image], torch.randn(1, 8, 3, 4))
    stat = os.stat(image.path)
    os.utime(image.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.load(image, SHAPE) is not None


def test_two_entries_swapped_on_disk_are_not_used_for_each_other(tmp_path, image):
    other_path = tmp_path / "b.jpg"
    other_path.write_bytes(b"other pixels")
    other = ImageRef("spair/cat/b", str(other_path), (40, 30))
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image, other], torch.randn(2, 8, 3, 4))
    a, b = cache.path(image), cache.path(other)
    shutil.move(a, tmp_path / "swap")
    shutil.move(b, a)
    shutil.move(tmp_path / "swap", b)
    with pytest.warns(
        UserWarning, match=re.escape(f"{a} (of {image.path}) is the entry of another image ({other.path})")
    ):
        assert cache.load(image, SHAPE) is None


def test_a_cache_that_cannot_be_written_is_one_warning_and_nothing_else(tmp_path, image):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="feature cache not written: cannot write .*cache is a file") as caught:
        cache = FeatureCache(blocker / "features", SETTING)
        cache.save([image], torch.randn(1, 8, 3, 4))
        assert cache.load(image, SHAPE) is None
    assert len(caught) == 1 and cache.write_error


def test_an_unreadable_entry_is_recomputed_with_a_warning(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image], torch.randn(1, 8, 3, 4))
    cache.path(image).write_bytes(b"truncated")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load(image, SHAPE) is None
    assert str(cache.path(image)) in str(caught[0].message)


@pytest.mark.parametrize(
    ("features", "problem"),
    [
        (torch.full(SHAPE, float("nan"), dtype=torch.float16), "holding NaN or infinite values"),
        (torch.zeros(8, 2, 2), "shaped (8, 2, 2) instead of (8, 3, 4)"),
        (torch.zeros(SHAPE, dtype=torch.int64), "not a floating-point tensor"),
        ("features", "not a floating-point tensor (str)"),
    ],
)
def test_a_damaged_entry_is_dropped_with_a_warning_naming_it(tmp_path, image, features, problem):
    cache = FeatureCache(tmp_path, SETTING)
    entry = {"image_sha256": file_sha256(image.path), "image": image.path, "mirrored": False, "features": features}
    torch.save(entry, cache.path(image))
    with pytest.warns(UserWarning, match=re.escape(f"{cache.path(image)} (of {image.path}) is {problem}")):
        assert cache.load(image, SHAPE) is None


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (torch.zeros(SHAPE), "not a feature cache entry (Tensor)"),  # the entries of an older version
        ({"feats": torch.zeros(SHAPE)}, "not a feature cache entry (dict)"),
    ],
)
def test_an_entry_of_another_format_is_dropped(tmp_path, image, entry, problem):
    cache = FeatureCache(tmp_path, SETTING)
    torch.save(entry, cache.path(image))
    with pytest.warns(UserWarning, match=re.escape(problem)):
        assert cache.load(image, SHAPE) is None


def test_non_finite_features_are_never_stored(tmp_path, image):
    cache = FeatureCache(tmp_path, SETTING)
    cache.save([image], torch.full((1, *SHAPE), float("inf")))
    assert not cache.path(image).exists()


def test_an_image_and_its_mirror_have_entries_of_their_own(tmp_path, image):
    """--flip-align extracts each source and its mirror image from one file: each keeps its own features."""
    cache = FeatureCache(tmp_path, SETTING)
    plain, mirrored = torch.zeros(SHAPE), torch.ones(SHAPE)
    cache.save([image, image.mirror()], torch.stack([plain, mirrored]))
    assert cache.path(image) != cache.path(image.mirror())
    assert torch.equal(cache.load(image, SHAPE), plain) and torch.equal(cache.load(image.mirror(), SHAPE), mirrored)
    cache.path(image).replace(cache.path(image.mirror()))  # the plain image's entry where the mirror's should be
    with pytest.warns(UserWarning, match=r"the entry of another image \(.*\)"):
        assert cache.load(image.mirror(), SHAPE) is None
