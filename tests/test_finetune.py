"""Fine-tuning on tiny random backbones and tiny SPair-format datasets: it learns, it freezes what it
should, resume and DDP are exact, the cache changes nothing, evaluate.py loads the result, and bad
input gets a clear error."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from dataset_factory import KP_COLOURS, fake_images, fake_pairs, make_custom, make_spair
from model_factory import TINY, tiny_checkpoint
from PIL import ImageOps

from finetuning import FinetuneError
from finetuning import training as training_module
from finetuning.checkpoints import read_resume_folder
from finetuning.command import main
from finetuning.data import TrainingPairs, collate, epoch_batches, flip_keypoints
from finetuning.distributed import Process, all_mean
from finetuning.loss import correspondence_loss, soft_targets
from finetuning.model import warmup_cosine
from finetuning.presets import PRESETS
from finetuning.training import setup, train
from helper_functions import IMAGENET_MEAN, IMAGENET_STD, preprocess_image
from models import create_backbone
from models.finetuned import read_finetuned
from semcorr.cli.resolve import resolve
from semcorr.config.settings import Augment, TrainSettings
from semcorr.data.datasets import load_pairs
from semcorr.data.geometry import Preprocess, patch_to_input
from semcorr.data.images import load_image
from semcorr.data.pairs import PairSet
from semcorr.engine.evaluation import run_evaluation

REPO = Path(__file__).resolve().parents[1]
IMAGE = ["--image-size", "112", "--num-workers", "0", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, especially on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def spair(tmp_path_factory) -> Path:
    """SPair-71k on disk: 3 images of 48x36 with 6 coloured keypoint markers; the 6 ordered pairs
    are both the trn and the val split (so validation measures the pairs being fitted)."""
    images = fake_images("cat", 3, size=(48, 36), num_kps=6, seed=0)  # seed 0: no two markers touch
    return make_spair(
        tmp_path_factory.mktemp("spair") / "SPair-71k", fake_pairs(images, "trn") + fake_pairs(images, "val")
    )


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("init"))


def config(init: Path, spair: Path, out: Path, **flags) -> TrainSettings:
    """The settings of `finetune.py --checkpoint init --data-root spair ...` with `flags` given too."""
    values = {
        "checkpoint": str(init), "data_root": str(spair), "image_size": (112,), "batch_size": 4, "lr": 3e-2,
        "warmup_steps": 2, "log_every": 1, "num_workers": 0, "device": "cpu", "output_dir": str(out), "quiet": True,
    }  # fmt: skip
    return resolve("finetune", values | flags)


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every weight of a checkpoint, its base file's included (Backbone layout)."""
    return read_finetuned(path)[0].state_dict


def training_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["training"]["step"]


# --- learning --------------------------------------------------------------------------------------


def test_overfitting_lowers_loss_raises_pck_and_leaves_frozen_weights_bit_identical(init, spair, tmp_path):
    trn = load_pairs("spair", root=spair, split="trn")
    repeated = PairSet("spair", "trn", str(spair), trn.pairs * 6)  # 36 pairs: 9 steps of 4
    cfg = config(init, spair, tmp_path, trainable_blocks=1, val_limit=None)
    run = train(cfg, repeated, load_pairs("spair", root=spair, split="val"))

    log = pd.read_csv(run / "train_log.csv")
    loss = log["loss"].dropna().to_numpy()
    assert len(loss) == 9 and loss[-3:].mean() < 0.5 * loss[:3].mean()
    pck = log.dropna(subset=["val_pck@0.1"]).set_index("step")["val_pck@0.1"]
    assert list(pck.index) == [0, 9]
    assert pck[9] > pck[0] + 40, pck.to_dict()

    before, after = state_dict(init), state_dict(run / "last.pt")
    trained = {k for k in before if k.startswith(("model.blocks.1.", "model.norm."))}
    assert trained and all(not torch.equal(before[k], after[k]) for k in trained)
    frozen = set(before) - trained
    assert {"model.patch_embed.proj.weight", "model.pos_embed", "model.blocks.0.attn.qkv.weight"} <= frozen
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(after[k].dtype == before[k].dtype for k in before)  # the weights' dtype, not the optimiser's
    assert (run / "best.pt").is_file() and (run / "train_curves.png").stat().st_size > 0


@pytest.mark.parametrize("family", ["dinov3", "sam"])
def test_each_preset_trains_its_last_blocks_and_head_only(family, spair, tmp_path):
    init = tiny_checkpoint(tmp_path, family)
    cfg = config(init, spair, tmp_path / "out", val_split=None, stop_after=1)
    run = train(cfg, load_pairs("spair", root=spair, split="trn"), None)
    before, after = state_dict(init), state_dict(run / "last.pt")
    n = PRESETS[family].trainable_blocks
    first_trained = TINY[family]["depth"] - n
    head = "model.neck." if family == "sam" else "model.norm."
    trained = {
        k
        for k in before
        if k.startswith(head) or any(k.startswith(f"model.blocks.{i}.") for i in range(first_trained, 9))
    }
    assert any(k.startswith(head) for k in trained)  # SAM: the neck trains too
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= trained
    assert any(k.startswith(head) for k in changed)
    saved = json.loads((run / "config.json").read_text())["settings"]
    assert (saved["trainable_blocks"], saved["logit_scale"]) == (n, PRESETS[family].logit_scale)


# --- exactness: resume, DDP, frozen cache ------------------------------------------------------------


def test_resume_after_k_steps_equals_an_uninterrupted_run(init, spair, tmp_path):
    args = ["--checkpoint", str(init), "--data-root", str(spair), *IMAGE, "--batch-size", "2", "--epochs", "2",
            "--flip", "--jitter", "0.3", "--lr", "1e-2", "--val-every", "2"]  # fmt: skip
    whole = main([*args, "--output-dir", str(tmp_path / "a")])
    part = main([*args, "--output-dir", str(tmp_path / "b"), "--stop-after", "4"])  # mid-epoch 2 (3 steps each)
    assert training_step(part / "last.pt") == 4
    resumed = main(["--resume", str(part), "--quiet", "--num-workers", "0"])
    assert resumed == part
    a, b = state_dict(whole / "last.pt"), state_dict(part / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (torch.load(r / "last.pt", weights_only=True)["training"] for r in (whole, part))
    assert sa["step"] == sb["step"] == 6
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    log_a, log_b = (pd.read_csv(r / "train_log.csv") for r in (whole, part))
    assert log_b["step"].is_monotonic_increasing
    assert np.allclose(
        log_a.dropna(subset=["val_pck@0.1"])["val_pck@0.1"], log_b.dropna(subset=["val_pck@0.1"])["val_pck@0.1"]
    )


def test_resume_restores_the_training_state_and_keeps_no_copy_of_it(init, spair, tmp_path):
    run = main(["--checkpoint", str(init), "--data-root", str(spair), *IMAGE, "--output-dir", str(tmp_path),
                "--batch-size", "2", "--stop-after", "2", "--val-split", "none"])  # fmt: skip
    saved = torch.load(run / "last.pt", weights_only=True)["training"]
    training = setup(read_resume_folder(run, None), load_pairs("spair", root=spair, split="trn"), None, run)
    assert (training.step, training.last_saved, training.schedule.last_epoch) == (2, 2, 2)
    restored = training.optimizer.state_dict()["state"]
    assert restored.keys() == saved["optimizer"]["state"].keys()
    assert all(torch.equal(restored[i]["exp_avg"], saved["optimizer"]["state"][i]["exp_avg"]) for i in restored)
    assert training.backbone.training_state is None  # the optimiser holds it now, not a second copy
    assert not any(isinstance(value, dict) and "optimizer" in value for value in vars(training).values())


def test_the_interval_is_reduced_in_one_collective_on_the_process_device(monkeypatch):
    """Under DDP: loss, gradient norm and finiteness travel together, on the process's device (NCCL
    reduces only CUDA tensors); a non-finite value on any process ends the run."""
    devices = []

    def all_reduce(tensor):
        devices.append(tensor.device)
        raise InterruptedError  # a meta tensor cannot be read back

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    with pytest.raises(InterruptedError):
        all_mean([1.0, 2.0], Process(0, 2, "meta"))
    assert devices == [torch.device("meta")]

    calls = []

    def mean_of_two(values, process):  # the other process saw a finite loss of 1 and gradient norm 1
        calls.append(values)
        return [(values[0] + 1) / 2, (values[1] + 1) / 2, (values[2] + 1) / 2]

    monkeypatch.setattr(training_module, "all_mean", mean_of_two)
    log = SimpleNamespace(rows=[], add=lambda row: log.rows.append(row))
    training = SimpleNamespace(
        process=Process(0, 2, "cpu"), step=2, epoch=0, schedule=SimpleNamespace(get_last_lr=lambda: [0.5]),
        settings=SimpleNamespace(optimisation=SimpleNamespace(batch_size=1)), log=log, run_dir=Path("run"),
        last_saved=None,
    )  # fmt: skip
    bar = SimpleNamespace(set_postfix=lambda **kw: None)
    interval = training_module.Interval(loss=torch.tensor(6.0), grad_norm=torch.tensor(2.0), steps=2)
    training_module.log_interval(training, interval, bar)
    assert calls == [[1.0, 3.0, 1.0]]
    assert (log.rows[0]["loss"], log.rows[0]["grad_norm"]) == (2.0, 1.0)
    interval.finite = torch.tensor(False)
    with pytest.raises(FinetuneError, match="between steps 1 and 2: training diverged"):
        training_module.log_interval(training, interval, bar)
    assert len(calls) == 2


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_equals_one_process_on_the_same_global_batch(init, spair, tmp_path):
    args = ["finetuning/finetune.py", "--checkpoint", str(init), "--data-root", str(spair), *IMAGE,
            "--lr", "1e-2", "--val-every", "1"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*launch, *args, "--batch-size", "2", "--output-dir", str(tmp_path / "ddp")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    single = main([*args[1:], "--batch-size", "4", "--output-dir", str(tmp_path / "single")])

    runs = list((tmp_path / "ddp").iterdir())
    assert len(runs) == 1  # only rank 0 writes
    resolved = json.loads((runs[0] / "config.json").read_text())["resolved"]
    assert (resolved["processes"], resolved["global_batch"], resolved["steps"]) == (2, 4, 2)
    # Adam is blind to the gradient's scale: the logged norm shows that gradients are averaged, not summed
    log_a, log_b = (pd.read_csv(r / "train_log.csv").dropna(subset=["loss"]) for r in (runs[0], single))
    for column in ("loss", "grad_norm"):
        np.testing.assert_allclose(log_a[column], log_b[column], rtol=1e-5)
    # Adam's first steps divide by |gradient|, so rounding noise in tiny gradients grows to ~1e-5 here;
    # a wrong batch would move weights by ~lr (1e-2)
    a, b = state_dict(runs[0] / "last.pt"), state_dict(single / "last.pt")
    assert any(not torch.equal(a[k], state_dict(init)[k]) for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4, msg=k)


def test_cached_frozen_blocks_train_the_same_weights(init, spair, tmp_path):
    trn = load_pairs("spair", root=spair, split="trn")
    runs = [
        train(config(init, spair, tmp_path / str(cache), cache_frozen=cache, val_split=None), trn, None)
        for cache in (False, True)
    ]
    a, b = (state_dict(r / "last.pt") for r in runs)
    assert any(not torch.equal(a[k], state_dict(init)[k]) for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


# --- the checkpoint in evaluate.py ------------------------------------------------------------------


def test_evaluate_loads_the_checkpoint_with_no_other_flag(init, spair, tmp_path):
    run = main(["--checkpoint", str(init), "--data-root", str(spair), *IMAGE, "--batch-size", "4",
                "--output-dir", str(tmp_path), "--val-limit", "0"])  # fmt: skip
    best = run / "best.pt"
    bb = create_backbone(checkpoint=str(best), device="cpu")
    saved = state_dict(best)
    assert all(torch.equal(v, saved[k]) for k, v in bb.state_dict().items())
    assert bb.extra["finetune"]["backbone"]["model"] == "dinov2_vitb14" and bb.extra["step"] == 2
    raw = torch.load(best, weights_only=True)
    assert raw["format"] == "semcorr-backbone/2" and raw["base"]["weights"] == str(init)
    assert set(raw["state_dict"]) == {k for k in saved if k.startswith(("model.blocks.", "model.norm."))}  # 2 of 2

    flags = {"checkpoint": str(best), "data_root": str(spair), "split": "val", "device": "cpu", "no_cache": True,
             "output_dir": str(tmp_path / "eval"), "num_workers": 0, "quiet": True}  # fmt: skip
    settings = resolve("evaluation", flags)
    assert settings.member.image_size == (112, 112)  # the size it was trained at
    metrics = json.loads((run_evaluation(settings) / "metrics.json").read_text())
    val = pd.read_csv(run / "train_log.csv").dropna(subset=["val_pck@0.1"]).set_index("step")
    assert metrics["pck@0.1"]["per_image"] == pytest.approx(val.loc[bb.extra["step"], "val_pck@0.1"])


# --- pieces ----------------------------------------------------------------------------------------


def test_loss_is_cross_entropy_over_target_patches_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    src, trg = torch.randn(2, 8, 3, 4, generator=g), torch.randn(2, 8, 3, 4, generator=g)
    src_pq = torch.tensor([[[0.2, 0.1], [3.0, 2.0]], [[1.4, 0.6], [0.0, 0.0]]])
    trg_pq = torch.tensor([[[2.6, 1.2], [0.0, 0.0]], [[3.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    loss = correspondence_loss(src, trg, src_pq, trg_pq, mask, scale=10.0)

    def ce(b, s_xy, t_xy):
        desc = F.normalize(src[b, :, s_xy[1], s_xy[0]], dim=0)
        logits = 10.0 * torch.einsum("c,chw->hw", desc, F.normalize(trg[b], dim=0)).flatten()
        return -logits.log_softmax(0)[t_xy[1] * 4 + t_xy[0]]

    manual = ((ce(0, (0, 0), (3, 1)) + ce(0, (3, 2), (0, 0))) / 2 + ce(1, (1, 1), (3, 1))) / 2
    torch.testing.assert_close(loss, manual)
    moved = torch.zeros(2, 2, 2)
    moved[1, 1] = torch.tensor([3.0, 2.0])  # the padded keypoint elsewhere: the loss is the same
    torch.testing.assert_close(correspondence_loss(src, trg, src_pq + moved, trg_pq + moved, mask, scale=10.0), loss)
    assert not torch.allclose(correspondence_loss(src, trg, src_pq, trg_pq + moved.flip(0), mask, scale=10.0), loss)


def test_soft_targets_are_a_gaussian_around_the_keypoint_and_tend_to_one_hot():
    pq = torch.tensor([[[2.0, 1.0], [0.3, 2.4]]])
    t = soft_targets(pq, (3, 4), sigma=1.0)
    torch.testing.assert_close(t.sum(-1), torch.ones(1, 2))
    assert t[0, 0].argmax() == 1 * 4 + 2 and t[0, 1].argmax() == 2 * 4 + 0
    assert t[0, 0, 1 * 4 + 1] == pytest.approx(t[0, 0, 1 * 4 + 3])  # symmetric
    g = torch.Generator().manual_seed(0)
    src, trg = torch.randn(1, 8, 3, 4, generator=g), torch.randn(1, 8, 3, 4, generator=g)
    mask = torch.ones(1, 2, dtype=torch.bool)
    centres = torch.tensor([[[2.0, 1.0], [0.0, 2.0]]])
    hard = correspondence_loss(src, trg, centres, centres, mask, scale=10.0)
    torch.testing.assert_close(correspondence_loss(src, trg, centres, centres, mask, scale=10.0, soft_sigma=0.05), hard)
    # sigma 1: cross-entropy against weights exp(-d^2 / 2) over the patch centres, by hand
    log_p = [
        (10.0 * torch.einsum("c,chw->hw", F.normalize(src[0, :, y, x], dim=0), F.normalize(trg[0], dim=0)))
        .flatten()
        .log_softmax(0)
        for x, y in ((2, 1), (0, 2))
    ]
    yy, xx = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    weights = [torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2).flatten() for x, y in ((2, 1), (0, 2))]
    manual = sum(-(w / w.sum() * lp).sum() for w, lp in zip(weights, log_p, strict=True)) / 2
    torch.testing.assert_close(
        correspondence_loss(src, trg, centres, centres, mask, scale=10.0, soft_sigma=1.0), manual
    )


def marker_ids(sample: dict, key: str, prep: Preprocess) -> list[int]:
    """For each keypoint of image `key` (src or trg), the id whose marker colour is nearest to the
    input image's colour at the keypoint's input pixel."""
    image = sample[key] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    uv = patch_to_input(sample[f"{key}_pq"], prep.patch_size).round().long()
    rgb = image[:, uv[:, 1], uv[:, 0]].T.numpy() * 255
    palette = np.array(KP_COLOURS[:6])
    return np.linalg.norm(rgb[:, None] - palette[None], axis=2).argmin(axis=1).tolist()


def test_flipping_both_images_keeps_every_correspondence(spair):
    """The fake images carry a marker of colour KP_COLOURS[id] on each keypoint: after the
    augmentation, source and target keypoint i must still sit on markers of the same colour."""
    pairs = load_pairs("spair", root=spair, split="trn").pairs
    prep = Preprocess.create(112, 14, "squash")
    data = TrainingPairs(pairs, prep, Augment(flip=True), seed=0)
    flipped = 0
    for i, pair in enumerate(pairs):
        sample = data[(0, i)]
        expected = [int(k) for k in pair.kp_ids]
        assert marker_ids(sample, "src", prep) == marker_ids(sample, "trg", prep) == expected
        mirrored = preprocess_image(ImageOps.mirror(load_image(pair.src)), prep)
        flipped += torch.allclose(sample["src"], mirrored, atol=1e-5)
        # control: moving only the source keypoints (as if one image were flipped) breaks them
        bad = sample | {"src_pq": sample["src_pq"] * torch.tensor([-1.0, 1.0]) + torch.tensor([prep.grid[1] - 1.0, 0])}
        assert marker_ids(bad, "src", prep) != expected
    assert 0 < flipped < len(pairs)
    np.testing.assert_array_equal(flip_keypoints(np.array([[0.0, 5.0], [47.0, 1.0]]), 48), [[47.0, 5.0], [0.0, 1.0]])


def test_each_global_step_covers_the_same_pairs_for_any_number_of_processes():
    single = epoch_batches(10, 4, epoch=1, seed=3)
    split = [epoch_batches(10, 2, epoch=1, seed=3, rank=r, world=2) for r in range(2)]
    for step, batch in enumerate(single):
        assert sorted(batch) == sorted(split[0][step] + split[1][step])
    assert epoch_batches(10, 4, epoch=2, seed=3) != single  # reshuffled every epoch


def test_collate_pads_keypoints_with_a_mask():
    samples = [
        {"src_pq": torch.ones(n, 2), "trg_pq": torch.ones(n, 2), "src_key": f"s{n}", "trg_key": f"t{n}"} for n in (2, 3)
    ]
    batch = collate(samples)
    assert batch["src_pq"].shape == (2, 3, 2) and batch["mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["keys"] == ["s2", "s3", "t2", "t3"]


def test_warmup_then_cosine_to_zero():
    f = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [f(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert f(6) == pytest.approx(0.5) and f(9) < f(7) < f(5) and f(10) == pytest.approx(0.0)


# --- bad input -------------------------------------------------------------------------------------


def error_of(argv: list[str]) -> str:
    with pytest.raises(ValueError) as info:
        main(argv)
    return str(info.value)


def test_unknown_model_and_too_many_blocks_are_clear_errors(init, spair, tmp_path):
    assert "Unknown backbone 'dinov9'" in error_of(["--model", "dinov9", "--data-root", str(spair), *IMAGE])
    assert "holds a fine-tuned dinov2_vitb14, not sam_vit_b" in error_of(["--model", "sam", "--checkpoint", str(init), "--data-root",
                                                               str(spair), *IMAGE])  # fmt: skip
    message = error_of(["--checkpoint", str(init), "--trainable-blocks", "5", "--data-root", str(spair), *IMAGE,
                        "--output-dir", str(tmp_path)])  # fmt: skip
    assert "--trainable-blocks 5" in message and "0..2" in message


def test_a_split_without_keypoints_is_a_clear_error(init, tmp_path):
    images = fake_images("cat", 2, num_kps=3)
    pairs_file = make_custom(tmp_path / "custom", fake_pairs(images), keypoints=False)
    message = error_of(["--checkpoint", str(init), "--dataset", "custom", "--data-root", str(pairs_file),
                        "--val-split", "none", *IMAGE, "--output-dir", str(tmp_path)])  # fmt: skip
    assert "no pairs with keypoints" in message and "pairs.json" in message


def test_resume_refuses_another_model_changed_settings_and_incomplete_folders(init, spair, tmp_path):
    run = main(["--checkpoint", str(init), "--data-root", str(spair), *IMAGE, "--output-dir", str(tmp_path),
                "--stop-after", "1", "--val-split", "none"])  # fmt: skip
    assert "fine-tuning run of dinov2_vitb14, not sam_vit_b" in error_of(["--resume", str(run), "--model", "sam"])
    assert "--lr" in error_of(["--resume", str(run), "--lr", "0.1"])
    (run / "config.json").write_text("{")
    assert "its config.json is not one finetuning/finetune.py wrote" in error_of(["--resume", str(run)])
    (run / "last.pt").unlink()
    assert "last.pt missing" in error_of(["--resume", str(run)])


def test_cache_with_augmentation_is_refused(init, spair, tmp_path):
    with pytest.raises(ValueError, match="--cache-frozen"):
        config(init, spair, tmp_path, cache_frozen=True, flip=True)


# --- the original protocol ------------------------------------------------------------------------


def test_original_protocol_trains_as_the_original_did(spair, tmp_path):
    """Batch 1, constant lr 1e-4, AdamW weight decay 0.01 on every trainable tensor, no clipping, the
    last model (no best.pt), SAM's neck frozen, fp16 autocast with a gradient scaler."""
    init = tiny_checkpoint(tmp_path, "sam")
    run = main(["--checkpoint", str(init), "--protocol", "original", "--data-root", str(spair), *IMAGE,
                "--output-dir", str(tmp_path / "out"), "--log-every", "1"])  # fmt: skip
    assert not (run / "best.pt").exists()
    settings = json.loads((run / "config.json").read_text())["settings"]
    assert settings["protocol"] == {"name": "original", "overrides": {"image_size": [112, 112]}}  # tiny images
    opt = settings["optimisation"]
    assert (opt["batch_size"], opt["schedule"], opt["decay"], opt["grad_clip"]) == (1, "constant", "all", 0.0)
    log = pd.read_csv(run / "train_log.csv").dropna(subset=["loss"])
    assert len(log) == 6 and (log["lr"] == 1e-4).all()  # 6 training pairs, one a step
    raw = torch.load(run / "last.pt", weights_only=True)
    groups = raw["training"]["optimizer"]["param_groups"]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    assert raw["training"]["scaler"] is not None  # fp16: the loss was scaled
    before, after = state_dict(init), state_dict(run / "last.pt")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("model.neck."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.blocks.4."))


# --- the commands a run prints run as printed ------------------------------------------------------------


def printed_command(text: str, prefix: str) -> list[str]:
    """The command after `prefix` in printed text, as a shell splits it."""
    (line,) = [line for line in text.splitlines() if prefix in line]
    return shlex.split(line.split(prefix, 1)[1])


def run_as_printed(argv: list[str]) -> Path | None:
    """Run a printed `python <script> ...` command in this process, from the working folder it was printed in."""
    assert argv[0] == "python" and Path(argv[1]).resolve().parent in (REPO, REPO / "finetuning"), argv
    script = Path(argv[1]).resolve().relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
    entry = main if script == "finetuning.finetune" else importlib.import_module(script).main
    return entry(argv[2:])


def test_the_evaluation_command_of_a_custom_run_runs_as_printed(init, tmp_path, monkeypatch, capsys):
    pairs_file = make_custom(tmp_path / "pairs", fake_pairs(fake_images("cat", 3, num_kps=5)))
    monkeypatch.chdir(tmp_path)  # the printed command writes its results and cache here
    main(["--checkpoint", str(init), "--dataset", "custom", "--data-root", str(pairs_file), *IMAGE,
          "--output-dir", "runs", "--batch-size", "4"])  # fmt: skip
    printed = capsys.readouterr().out
    argv = printed_command(printed, "evaluate it: ")
    assert "--split" not in argv and argv[argv.index("--data-root") + 1] == str(pairs_file)
    assert "the file it trained on" in printed
    evaluated = run_as_printed(argv)
    assert evaluated.resolve().parent == tmp_path / "results" and (evaluated / "metrics.json").is_file()


def test_an_spair_run_is_evaluated_on_test_where_it_was_read_not_on_the_split_that_chose_best_pt(
    init, spair, tmp_path, capsys
):
    run = main(["--checkpoint", str(init), "--data-root", str(spair), *IMAGE, "--batch-size", "4",
                "--output-dir", str(tmp_path), "--protocol", "original", "--pck-norm", "image"])  # fmt: skip
    argv = printed_command(capsys.readouterr().out, "evaluate it: ")
    assert argv[argv.index("--checkpoint") + 1] == str(run / "last.pt")  # the original protocol keeps the last
    assert argv[argv.index("--data-root") + 1] == str(spair) and "--split" not in argv  # evaluate.py's test split
    assert argv[-4:] == ["--protocol", "original", "--pck-norm", "image"]


def test_a_stopped_or_interrupted_run_continues_with_the_command_it_prints(init, spair, tmp_path, capsys, monkeypatch):
    flags = ["--checkpoint", str(init), "--data-root", str(spair), *IMAGE, "--batch-size", "2", "--val-every", "1",
             "--output-dir", str(tmp_path), "--val-limit", "2"]  # fmt: skip
    run = main([*flags, "--stop-after", "1"])
    assert training_step(run / "last.pt") == 1
    stopped = capsys.readouterr().out
    assert run_as_printed(printed_command(stopped, "continue it: ")) == run
    assert training_step(run / "last.pt") == 3  # 6 pairs, 2 a step

    step = training_module.train_step
    calls = []

    def interrupted_at_the_second_step(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(*args, **kw)

    monkeypatch.setattr(training_module, "train_step", interrupted_at_the_second_step)
    with pytest.raises(KeyboardInterrupt) as stop:
        main(flags)
    assert "interrupted at step 1" in str(stop.value)
    monkeypatch.setattr(training_module, "train_step", step)
    resumed = run_as_printed(printed_command(str(stop.value), "Continue with: "))
    assert training_step(resumed / "last.pt") == 3 and "done at step 3/3" in capsys.readouterr().out


# --- training you can watch -----------------------------------------------------------------------------------


def test_tensorboard_gets_the_logs_numbers_and_match_pictures_unless_turned_off(init, spair, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flags = ["--checkpoint", str(init), "--data-root", str(spair), *IMAGE, "--batch-size", "2", "--val-every", "2",
             "--log-every", "1"]  # fmt: skip
    run = main([*flags, "--output-dir", str(tmp_path / "on")])
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}).Reload()
    log = pd.read_csv(run / "train_log.csv")
    for column, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("val_pck@0.1", "validation/pck@0.1 per image"),
                        ("val_pck@0.1_kpt", "validation/pck@0.1 per keypoint")):  # fmt: skip
        rows = log.dropna(subset=[column])
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(s, pytest.approx(v, rel=1e-6)) for s, v in zip(rows["step"], rows[column], strict=True)]
    pictures = [tag for tag in events.Tags()["images"] if tag.startswith("validation matches/")]
    assert len(pictures) == 2 and [e.step for e in events.Images(pictures[0])] == [0, 2, 3]  # at each validation
    quiet = main([*flags, "--output-dir", str(tmp_path / "off"), "--no-tensorboard"])
    assert (
        not list(quiet.glob("events.out.tfevents.*"))
        and json.loads((quiet / "config.json").read_text())["settings"]["tensorboard"] is False
    )
