"""The evaluation run: results folder, reproducibility from the CSV, feature cache, resumption."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import ColourCodeBackbone, render_object

import pck
from evaluation import EvalConfig, MatchConfig, evaluate
from pairs import ImageRef, PairRecord, PairSet

BOXES = [(20, 30, 120, 110), (50, 10, 170, 140), (10, 60, 90, 150), (70, 40, 190, 130)]


def make_pairset(tmp_path, n_images=4):
    """Images of one colour-coded object in different places; pairs between all of them."""
    refs = []
    for i in range(n_images):
        size = (200 + 10 * i, 160 - 5 * i)
        path = tmp_path / f"im{i}.png"
        render_object(size, BOXES[i]).save(path)
        refs.append(ImageRef(f"test/im{i}", str(path), size))
    rng = np.random.default_rng(0)
    pairs = []
    for s in range(n_images):
        for t in range(n_images):
            if s == t:
                continue
            uv = rng.uniform(0.2, 0.8, (5, 2))
            sb, tb = np.array(BOXES[s], float), np.array(BOXES[t], float)
            src = sb[:2] + uv * (sb[2:] - sb[:2]) - 0.5
            trg = tb[:2] + uv * (tb[2:] - tb[:2]) - 0.5
            pairs.append(
                PairRecord(
                    f"{s}-{t}",
                    "test",
                    ["a", "b"][s % 2],
                    refs[s],
                    refs[t],
                    src.astype(np.float32),
                    trg.astype(np.float32),
                    list("abcde"),
                    trg_bbox=tuple(tb - 0.5),
                )
            )
    return PairSet("test", "test", str(tmp_path), pairs, skipped={"no keypoints": 2})


@pytest.fixture
def backbone(tmp_path):
    bb = ColourCodeBackbone(patch_size=8, image_size=128)
    weights = tmp_path / "fake_weights.bin"
    weights.write_bytes(b"weights")
    bb.weights_path = str(weights)  # a real file, so the feature cache is used
    return bb


def config(tmp_path, **kw):
    return EvalConfig(
        model="colourcode",
        dataset="test",
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "results"),
        num_workers=0,
        batch_size=3,
        progress=False,
        pck_norm="bbox",
        **kw,
    )


def test_run_folder_files_and_figures_recompute_from_csv(tmp_path, backbone):
    pairset = make_pairset(tmp_path)
    run = evaluate(config(tmp_path, match=MatchConfig("wsoftargmax", 3, 0.05)), pairset, backbone)
    assert run.name.endswith("_colourcode_test_test_wsoftargmax")
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.json", "per_keypoint.csv", "per_pair.csv"]
    metrics = json.loads((run / "metrics.json").read_text())
    recomputed = pck.summarize(pck.read_keypoint_table(run / "per_keypoint.csv"))
    for key, value in recomputed.items():
        assert metrics[key] == value, key  # JSON floats round-trip exactly
    assert metrics["pck@0.1"]["per_keypoint"] > 90  # the colour code makes this an easy benchmark
    assert metrics["counts"]["pairs"] == 12 and metrics["counts"]["images"] == 4
    assert metrics["counts"]["pairs_skipped"] == {"no keypoints": 2}
    assert metrics["protocol"]["pck_norm"] == "bbox"
    per_pair = pd.read_csv(run / "per_pair.csv", dtype={"pair_id": str})
    table = pck.read_keypoint_table(run / "per_keypoint.csv")
    assert per_pair.set_index("pair_id")["pck@0.1"].to_dict() == pytest.approx(
        (table.groupby("pair_id")["correct@0.1"].mean() * 100).to_dict()
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["weights_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert cfg["resolved"]["image_size"] == [128, 128] and cfg["args"]["match"]["window"] == 3
    assert torch.__version__.startswith(cfg["environment"]["packages"]["torch"])


def test_rerun_uses_cache_and_never_overwrites(tmp_path, backbone):
    pairset = make_pairset(tmp_path)
    first = evaluate(config(tmp_path), pairset, backbone)
    assert backbone.calls == 2  # 4 images in batches of 3
    backbone.calls = 0
    second = evaluate(config(tmp_path), pairset, backbone)
    assert backbone.calls == 0
    assert first != second and first.exists()
    a = pd.read_csv(first / "per_keypoint.csv")
    b = pd.read_csv(second / "per_keypoint.csv")
    pd.testing.assert_frame_equal(a, b)


def test_interrupted_extraction_resumes(tmp_path, backbone):
    pairset = make_pairset(tmp_path)
    forward = backbone.forward

    def dies_on_second_batch(images):
        if backbone.calls == 1:
            raise KeyboardInterrupt
        return forward(images)

    backbone.forward = dies_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        evaluate(config(tmp_path), pairset, backbone)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
    backbone.forward = forward
    backbone.calls = 0
    run = evaluate(config(tmp_path), pairset, backbone)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timings"]["images_from_cache"] == 3 and metrics["timings"]["images_extracted"] == 1


def test_cache_is_keyed_by_preprocessing(tmp_path, backbone):
    pairset = make_pairset(tmp_path)
    evaluate(config(tmp_path), pairset, backbone)
    backbone.calls = 0
    evaluate(config(tmp_path, resize="pad"), pairset, backbone)
    assert backbone.calls == 2


def test_finetuned_checkpoint_defaults_to_its_training_preprocessing(tmp_path, backbone):
    backbone.extra = {"finetune": {"image_size": [96], "resize": "pad"}}
    run = evaluate(config(tmp_path), make_pairset(tmp_path), backbone)
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert (resolved["image_size"], resolved["resize"]) == ([96, 96], "pad")
    run = evaluate(config(tmp_path, image_size=[64], resize="squash"), make_pairset(tmp_path), backbone)
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert (resolved["image_size"], resolved["resize"]) == ([64, 64], "squash")


def test_checkpoint_flag_takes_finetuned_files_and_plain_weights(tmp_path, monkeypatch):
    import evaluation
    from models import is_finetuned, load_backbone, save_finetuned

    tiny = load_backbone("dinov2", weights="random", device="cpu", depth=1, embed_dim=32, num_heads=2)
    finetuned = save_finetuned(tiny, tmp_path / "best.pt", {"note": "test"})
    plain = tmp_path / "plain.pth"
    torch.save(tiny.state_dict(), plain)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert is_finetuned(finetuned)
    assert not any(is_finetuned(p) for p in (plain, garbage, tmp_path / "missing.pth"))

    calls = []
    monkeypatch.setattr(evaluation, "load_finetuned", lambda path, device: calls.append(("finetuned", str(path))))
    monkeypatch.setattr(
        evaluation, "load_backbone", lambda name, weights, device, layer: calls.append((name, str(weights)))
    )
    evaluation.load_model(EvalConfig(checkpoint=str(finetuned)))
    evaluation.load_model(EvalConfig(model="dinov3", checkpoint=str(plain)))
    evaluation.load_model(EvalConfig(model="sam", weights="w.pth"))
    assert calls == [("finetuned", str(finetuned)), ("dinov3", str(plain)), ("sam", "w.pth")]
