"""Features beyond --feature-memory: written to the disk cache and read back one image at a time, with the same
results as features held in memory (plain runs, flips, ensembles on one grid), and a clear error when the cache
they need cannot be read."""

from __future__ import annotations

import gc
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from synthetic import ColourCodeBackbone, colour_backbone, colour_config

from helper_functions import feature_budget
from semcorr.config.settings import EnsembleSettings, ExtractSettings, MatchSettings
from semcorr.engine.evaluation import evaluate
from semcorr.runs.folders import read_run

TINY = 1e-9  # GB: below one image's features, so that every run streams


def streamed(settings, budget: float | None = TINY):
    return replace(settings, extract=replace(settings.extract, feature_memory_gb=budget))


def keypoints(run) -> pd.DataFrame:
    return read_run(run).keypoints()


@pytest.mark.parametrize("matcher", ["argmax", "wsoftargmax"])
@pytest.mark.parametrize("descriptor", ["nearest", "bilinear"])
def test_streamed_features_give_the_results_of_features_in_memory(tmp_path, colour_pairs, matcher, descriptor):
    settings = colour_config(tmp_path, match=MatchSettings(matcher, 3, 0.05, descriptor=descriptor))
    backbone = colour_backbone(tmp_path)
    held = evaluate(settings, colour_pairs, backbone)
    backbone.calls = 0
    run = evaluate(streamed(settings), colour_pairs, backbone)
    assert backbone.calls == 0  # the first run's cache serves the streamed one
    pd.testing.assert_frame_equal(keypoints(run), keypoints(held))
    timings = json.loads((run / "metrics.json").read_text())["timings"]
    assert (
        timings["features_streamed"]
        and not json.loads((held / "metrics.json").read_text())["timings"]["features_streamed"]
    )
    assert timings["features_gb"] > TINY


def test_features_without_a_cache_stream_from_a_temporary_one_that_is_removed(tmp_path, colour_pairs, capsys):
    settings = colour_config(tmp_path)
    backbone = ColourCodeBackbone(patch_size=8, image_size=128)  # random weights: nothing is cached
    held = evaluate(settings, colour_pairs, backbone)
    run = evaluate(streamed(settings), colour_pairs, backbone)
    pd.testing.assert_frame_equal(keypoints(run), keypoints(held))
    assert "read from the disk cache one image at a time" in capsys.readouterr().out
    gc.collect()
    assert list((tmp_path / "cache").glob("run-*")) == []


def test_streamed_flips_and_ensembles_match_features_in_memory(tmp_path, colour_pairs):
    for pair in colour_pairs.pairs:
        pair.kp_mirror = [{"0": "1", "1": "0"}.get(kp, kp) for kp in pair.kp_ids]
    settings = colour_config(tmp_path, weights=[0.6, 0.4], flip_align="mutual-nn")
    backbones = [colour_backbone(tmp_path), colour_backbone(tmp_path, patch_size=16)]  # 16x16 and 8x8 grids
    for combine in ("similarity", "features"):
        with_combine = replace(settings, ensemble=EnsembleSettings(combine=combine))
        held = evaluate(with_combine, colour_pairs, backbones)
        for run in (
            evaluate(with_combine, colour_pairs, backbones),
            evaluate(streamed(with_combine), colour_pairs, backbones),
        ):  # both from the cache
            pd.testing.assert_frame_equal(keypoints(run), keypoints(held))
            pairs_held, pairs_run = (pd.read_csv(r / "per_pair.csv") for r in (held, run))
            pd.testing.assert_frame_equal(pairs_run, pairs_held)


def test_a_cache_entry_removed_while_it_streams_is_an_error_naming_it(tmp_path, colour_pairs, monkeypatch):
    settings = streamed(colour_config(tmp_path))
    backbone = colour_backbone(tmp_path)
    evaluate(settings, colour_pairs, backbone)  # fills the cache

    from semcorr.storage import feature_cache

    read = feature_cache.CachedFeatures._read

    def entry_gone(self, row):
        self.cache.path(self.images[row]).unlink(missing_ok=True)
        return read(self, row)

    monkeypatch.setattr(feature_cache.CachedFeatures, "_read", entry_gone)
    with pytest.raises(RuntimeError, match=r"feature cache entry of .* went missing during the run"):
        evaluate(settings, colour_pairs, backbone)


def test_features_that_cannot_be_cached_and_do_not_fit_say_what_to_do(tmp_path, colour_pairs):
    settings = colour_config(tmp_path)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    settings = streamed(replace(settings, extract=replace(settings.extract, cache_dir=str(blocked / "cache"))))
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="raise --feature-memory"):
        evaluate(settings, colour_pairs, colour_backbone(tmp_path))


def test_the_budget_decides_between_memory_and_disk(tmp_path, colour_pairs):
    settings = colour_config(tmp_path)
    backbone = colour_backbone(tmp_path)
    per_image = backbone.feature_dim * 16 * 16 * 2  # fp16 features on a 16x16 grid
    images = len(colour_pairs.unique_images())
    for budget, expect in ((images * per_image / 2**30, False), ((images * per_image - 1) / 2**30, True)):
        run = evaluate(streamed(settings, budget), colour_pairs, backbone)
        assert json.loads((run / "metrics.json").read_text())["timings"]["features_streamed"] is expect


def test_the_default_budget_is_a_laptops_share_on_the_cpu_and_half_the_free_gpu_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 16 * 2**30))
    assert feature_budget(ExtractSettings(), torch.device("cuda:0")) == 4 * 2**30
    assert feature_budget(ExtractSettings(), torch.device("cpu")) == 2**30
    assert feature_budget(ExtractSettings(feature_memory_gb=0.5), torch.device("cuda:0")) == 2**29
