"""The fault campaign: bad input, damaged files and interruptions, each through a real script.

Every case is one row: the script, its arguments, the exit code it must end with (0 done, 1 a
one-line error, 2 a usage error), a fragment its output must hold, and the files that must come
through untouched (or exist, or never appear). A case's `fault` damages a private copy of the tiny
world (datasets in their on-disk formats, a tiny checkpoint) before the script runs. No output may
hold a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_factory import fake_images, fake_pairs, make_custom, make_pf_pascal, make_spair
from model_factory import tiny_checkpoint
from PIL import Image

from semcorr.cli.errors import run_main
from semcorr.runs.folders import read_run

World = dict[str, Path]
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    script: str  # module: "evaluate", "finetuning.finetune", ...
    argv: tuple[str, ...]  # {placeholders} name paths of the world
    exit: int
    message: str  # a fragment of stdout + stderr + the exit message
    intact: tuple[str, ...] = ()  # world files whose bytes must not change
    exists: tuple[str, ...] = ()  # paths that must exist afterwards
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards (e.g. no work was started)
    fault: Callable[[World, pytest.MonkeyPatch], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


EVAL = ("--device", "cpu", "--num-workers", "0", "--quiet", "--image-size", "56", "--cache-dir", "{cache}")
SPAIR = ("--checkpoint", "{ckpt}", "--dataset", "spair", "--data-root", "{spair}", *EVAL, "--output-dir", "{out}")
PASCAL = ("--checkpoint", "{ckpt}", "--dataset", "pf-pascal", "--data-root", "{pascal}", *EVAL, "--output-dir", "{out}")
CUSTOM = ("--checkpoint", "{ckpt}", "--dataset", "custom", "--data-root", "{custom}", *EVAL, "--output-dir", "{out}")
TRAIN = ("--checkpoint", "{ckpt}", "--data-root", "{spair}", "--image-size", "56", "--batch-size", "2")
TRAIN += ("--num-workers", "0", "--device", "cpu", "--quiet", "--output-dir", "{out}")
MATCH = ("--checkpoint", "{ckpt}", "--src", "{image}", "--trg", "{image}", *EVAL, "--output-dir", "{out}")


# --- faults ----------------------------------------------------------------------------------------


def output_dir_is_a_file(world: World, _) -> None:
    world["out"].parent.mkdir(parents=True, exist_ok=True)
    world["out"].write_text("my notes\n")


def spair_image(world: World) -> Path:
    return next((world["spair"] / "JPEGImages").rglob("*.jpg"))


def downscale_spair_image(world: World, _) -> None:
    path = spair_image(world)
    with Image.open(path) as im:
        im.resize((im.width // 2, im.height // 2)).save(path)


def corrupt_spair_image(world: World, _) -> None:
    path = spair_image(world)
    path.write_bytes(path.read_bytes()[:200])


def decompression_bomb(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the 48x36 images are bombs at this limit


def nan_checkpoint(world: World, _) -> None:
    payload = torch.load(world["ckpt"], weights_only=True)
    for name, tensor in payload["state_dict"].items():
        if tensor.is_floating_point() and name.endswith("norm.weight"):
            tensor.fill_(float("nan"))
    torch.save(payload, world["ckpt"])


def cache_entries(world: World) -> list[Path]:
    return sorted(world["cache"].rglob("*.pt"))


def fill_cache(world: World) -> None:
    run_case(world, CLEAN_SPAIR)


def nan_in_cache(world: World, _) -> None:
    fill_cache(world)
    entry = cache_entries(world)[0]
    feats = torch.load(entry, weights_only=True)
    torch.save(torch.full_like(feats, float("nan")), entry)


def wrong_shape_in_cache(world: World, _) -> None:
    fill_cache(world)
    torch.save(torch.zeros(3, 2, 2, dtype=torch.float16), cache_entries(world)[0])


def garbage_in_cache(world: World, _) -> None:
    fill_cache(world)
    cache_entries(world)[0].write_bytes(b"\x00garbage" * 10)


def text_mat(world: World, _) -> None:
    for path in (world["pascal"] / "PF-dataset-PASCAL" / "Annotations").rglob("*.mat"):
        path.write_text("not a mat file\n")


def empty_mat(world: World, _) -> None:
    for path in (world["pascal"] / "PF-dataset-PASCAL" / "Annotations").rglob("*.mat"):
        path.write_bytes(b"")


def empty_pairs_file(world: World, _) -> None:
    world["custom"].write_text(json.dumps({"pairs": []}))


def empty_layout(world: World, _) -> None:
    (world["spair"] / "Layout" / "large" / "test.txt").write_text("")


def utf16_pairs_csv(world: World, _) -> None:
    csv = make_custom(world["custom"].parent, world["custom_pairs"], fmt="csv")
    csv.write_text(csv.read_text(), encoding="utf-16")
    world["custom"] = csv


def run_to_resume(world: World, _) -> None:
    world["run"] = run_case(world, Case("", "finetuning.finetune", (*TRAIN, "--stop-after", "1"), 0, ""))
    assert (world["run"] / "last.pt").is_file()


def truncated_last(world: World, mp) -> None:
    run_to_resume(world, mp)
    last = world["run"] / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])


def foreign_last(world: World, mp) -> None:
    run_to_resume(world, mp)
    torch.save({"weights": torch.zeros(3)}, world["run"] / "last.pt")


def interrupt_training(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from finetuning import training

    step = training.train_step

    def interrupted(*args, **kw):
        monkeypatch.setattr(training, "train_step", raise_interrupt)
        return step(*args, **kw)

    monkeypatch.setattr(training, "train_step", interrupted)


def raise_interrupt(*args, **kw):
    raise KeyboardInterrupt


def params_of_another_size(world: World, _) -> None:
    best = {"0.1": {"window": 3, "temperature": 0.1}}
    setting = {"model": "dinov2_vitb14", "image_size": [112, 112], "grid": [8, 8]}
    world["params"] = world["out"].parent / "best_parameters.json"
    world["params"].write_text(json.dumps({"best": best, **setting}))


def read_only_output_dir(world: World, _) -> None:
    world["out"].mkdir(parents=True)
    world["out"].chmod(0o555)


CLEAN_SPAIR = Case("clean SPair run", "evaluate", SPAIR, 0, "PCK@0.1")

CASES = [
    CLEAN_SPAIR,
    # finished work lost / discovered late
    Case("output dir is a file", "evaluate", SPAIR, 1, "--output-dir", intact=("out",),
         absent=("cache",), fault=output_dir_is_a_file),
    Case("output dir under a file", "evaluate", (*SPAIR, "--output-dir", "{out}/runs"), 1,
         "--output-dir", intact=("out",), absent=("cache",), fault=output_dir_is_a_file),
    Case("output dir read-only", "evaluate", SPAIR, 1, "--output-dir", absent=("cache",),
         fault=read_only_output_dir),
    Case("output dir with ~", "evaluate", (*SPAIR, "--output-dir=~/results"), 0, "PCK@0.1",
         exists=("home/results",), absent=("cwd/~",), env={"HOME": "{home}"}),
    Case("output dir with $VAR", "evaluate", (*SPAIR, "--output-dir", "$RESULTS/runs"), 0,
         "PCK@0.1", exists=("home/results/runs",), absent=("cwd/$RESULTS",), env={"RESULTS": "{home}/results"}),
    Case("match output dir is a file", "match_pair", MATCH, 1, "--output-dir", intact=("out",),
         fault=output_dir_is_a_file),
    Case("fine-tuning output dir is a file", "finetuning.finetune", TRAIN, 1, "--output-dir", intact=("out",),
         fault=output_dir_is_a_file),
    Case("grid search output dir is a file", "grid_search_hyperparams", (*SPAIR, "--windows", "3", "--temperatures",
         "0.1"), 1, "--output-dir", intact=("out",), absent=("cache",), fault=output_dir_is_a_file),
    # silent wrong results
    Case("NaN weights", "evaluate", SPAIR, 1, "non-finite features", fault=nan_checkpoint),
    Case("SPair image smaller than its annotation", "evaluate", SPAIR, 1, "--rescale-annotations",
         fault=downscale_spair_image),
    Case("SPair annotations rescaled on request", "evaluate", (*SPAIR, "--rescale-annotations"), 0,
         "rescaled", fault=downscale_spair_image),
    Case("NaN cache entry", "evaluate", SPAIR, 0, "re-extracting", fault=nan_in_cache),
    Case("wrong-shaped cache entry", "evaluate", SPAIR, 0, "re-extracting", fault=wrong_shape_in_cache),
    Case("garbage cache entry", "evaluate", SPAIR, 0, "re-extracting", fault=garbage_in_cache),
    Case("--layer with a checkpoint", "evaluate", (*SPAIR, "--layer", "0"), 1, "Drop --layer"),  # block 0 of 2
    Case("--layer naming the checkpoint's own block", "evaluate", (*SPAIR, "--layer", "-1"), 0, "PCK@0.1"),
    Case("--model of another backbone with a checkpoint", "evaluate", (*SPAIR, "--model", "sam"), 1, "drop --model"),
    Case("fine-tuning on a custom file without --val-data", "finetuning.finetune", (*TRAIN[:2], "--dataset", "custom",
         "--data-root", "{custom}", *TRAIN[4:]), 0, "no validation: best.pt is not selected"),
    Case("diverging fine-tuning", "finetuning.finetune", (*TRAIN, "--lr", "1e6", "--grad-clip", "0", "--stop-after",
         "3"), 1, "NaN or infinite"),
    # guard rails: settings that run but do not fit
    Case("window as large as the grid", "evaluate", (*SPAIR, "--matcher", "wsoftargmax", "--window", "5"), 0,
         "--window 5 is not smaller than the 4x4 patch grid"),
    Case("--params of another image size", "evaluate", (*SPAIR, "--params", "{params}"), 0,
         "K and T were searched with image size 112x112, grid 8x8, but this run has image size 56x56, grid 4x4",
         fault=params_of_another_size),
    Case("grid windows beyond the grid", "grid_search_hyperparams", (*SPAIR, "--windows", "3", "7", "9",
         "--temperatures", "0.1"), 0, "windows 7, 9 give identical results"),
    # nonsense refused
    Case("negative threshold", "evaluate", (*SPAIR, "--thresholds", "-0.1"), 2, "--thresholds"),
    Case("duplicate thresholds", "evaluate", (*SPAIR, "--thresholds", "0.1", "0.1"), 1, "--thresholds"),
    Case("nan threshold", "evaluate", (*SPAIR, "--thresholds", "nan"), 2, "--thresholds"),
    Case("inf threshold", "evaluate", (*SPAIR, "--thresholds", "inf"), 2, "--thresholds"),
    Case("nan temperature", "evaluate", (*SPAIR, "--temperature", "nan"), 2, "--temperature"),
    Case("tiny temperature", "evaluate", (*SPAIR, "--temperature", "1e-9"), 2, "--temperature"),
    Case("image smaller than two patches", "evaluate", (*SPAIR, "--image-size", "14"), 1,
         "--image-size"),
    Case("--limit 0", "evaluate", (*SPAIR, "--limit", "0"), 2, "--limit"),
    Case("negative soft sigma", "finetuning.finetune", (*TRAIN, "--soft-sigma", "-1"), 2, "--soft-sigma"),
    Case("negative jitter", "finetuning.finetune", (*TRAIN, "--jitter", "-0.1"), 2, "--jitter"),
    Case("negative grad clip", "finetuning.finetune", (*TRAIN, "--grad-clip", "-1"), 2, "--grad-clip"),
    Case("negative warmup", "finetuning.finetune", (*TRAIN, "--warmup-steps", "-1"), 2, "--warmup-steps"),
    Case("nan learning rate", "finetuning.finetune", (*TRAIN, "--lr", "nan"), 2, "--lr"),
    Case("negative learning rate", "finetuning.finetune", (*TRAIN, "--lr", "-1e-4"), 2, "--lr"),
    Case("--stop-after 0", "finetuning.finetune", (*TRAIN, "--stop-after", "0"), 2, "--stop-after"),
    Case("nan logit scale", "finetuning.finetune", (*TRAIN, "--logit-scale", "nan"), 2, "--logit-scale"),
    # tracebacks instead of messages
    Case("corrupt image with workers", "evaluate", (*SPAIR, "--num-workers", "2"), 1, ".jpg",
         fault=corrupt_spair_image),
    Case("corrupt image without workers", "evaluate", SPAIR, 1, ".jpg", fault=corrupt_spair_image),
    Case("--device gpu", "evaluate", (*SPAIR, "--device", "gpu"), 2, "--device"),
    Case("text .mat", "evaluate", (*PASCAL, "--split", "trn"), 1, ".mat", fault=text_mat),
    Case("0-byte .mat", "evaluate", (*PASCAL, "--split", "trn"), 1, ".mat", fault=empty_mat),
    Case("truncated last.pt on --resume", "finetuning.finetune", ("--resume", "{run}"), 1, "last.pt",
         fault=truncated_last),
    Case("foreign last.pt on --resume", "finetuning.finetune", ("--resume", "{run}"), 1, "last.pt",
         fault=foreign_last),
    Case("Ctrl-C during fine-tuning", "finetuning.finetune", (*TRAIN, "--val-every", "1"), 1, "--resume",
         fault=interrupt_training),
    Case("decompression bomb", "evaluate", SPAIR, 1, "SEMCORR_MAX_IMAGE_PIXELS",
         fault=decompression_bomb),
    Case("empty pairs file", "evaluate", CUSTOM, 1, "no pairs", fault=empty_pairs_file),
    Case("empty SPair layout", "evaluate", SPAIR, 1, "no pairs", fault=empty_layout),
    Case("UTF-16 pairs CSV", "evaluate", CUSTOM, 0, "PCK@0.1", fault=utf16_pairs_csv),
    Case("--resume of a model-specific script", "finetune_dinov2", ("--resume", "{run}"), 0, "evaluate it:",
         fault=run_to_resume),
    Case("negative --points", "match_pair", (*MATCH, "--points", "-5,10"), 1, "outside the source image"),
]  # fmt: skip


# --- running ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    """SPair-71k, PF-Pascal and a custom pairs file of 48x36 images, and a tiny DINOv2 checkpoint."""
    tmp = tmp_path_factory.mktemp("world")
    images = fake_images("cat", 3, size=(48, 36), num_kps=5)
    pairs = [*fake_pairs(images, "trn"), *fake_pairs(images, "val"), *fake_pairs(images, "test")]
    return {
        "spair": make_spair(tmp / "SPair-71k", pairs),
        "pascal": make_pf_pascal(tmp / "PF-Pascal"),
        "custom": make_custom(tmp / "custom", fake_pairs(images, "test")),
        "ckpt": tiny_checkpoint(tmp / "weights"),
    }


@pytest.fixture
def world(world_template: World, tmp_path: Path) -> World:
    """A private copy of the world, with an output dir, a cache, a home and a working directory."""
    copy = {}
    for name, path in world_template.items():
        top = path if path.is_dir() else path.parent
        shutil.copytree(top, tmp_path / top.name, dirs_exist_ok=True)
        copy[name] = tmp_path / top.name / path.relative_to(top) if path.is_file() else tmp_path / top.name
    images = fake_images("cat", 3, size=(48, 36), num_kps=5)
    copy |= {"out": tmp_path / "out", "cache": tmp_path / "cache", "home": tmp_path / "home", "cwd": tmp_path / "cwd"}
    copy["custom_pairs"] = fake_pairs(images, "test")
    copy["image"] = spair_image(copy)
    copy["home"].mkdir()
    copy["cwd"].mkdir()
    return copy


def fill(text: str, world: World) -> str:
    return text.format(**{k: v for k, v in world.items() if isinstance(v, Path)})


def run_case(world: World, case: Case) -> Path | None:
    """Run a case's script in this process as its command line would; its return value."""
    module = importlib.import_module(case.script)
    result = []
    run_main(lambda: result.append(module.main([fill(a, world) for a in case.argv])))
    return result[0] if result else None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fault(case: Case, world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    if case.fault is read_only_output_dir and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    if case.fault:
        case.fault(world, monkeypatch)
    for name, value in case.env.items():
        monkeypatch.setenv(name, fill(value, world))
    monkeypatch.chdir(world["cwd"])
    monkeypatch.syspath_prepend(str(REPO / "finetuning"))  # as `python finetuning/finetune_dinov2.py` has it
    monkeypatch.delenv("SEMCORR_TRACEBACK", raising=False)
    before = {name: digest(world[name]) for name in case.intact}
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            run_case(world, case)
            code, message = 0, ""
        except SystemExit as end:
            code, message = (1, end.code) if isinstance(end.code, str) else (end.code or 0, "")
    out = capsys.readouterr()
    text = "\n".join([out.out, out.err, message, *(str(w.message) for w in warned)])
    assert code == case.exit, text
    assert case.message in text, text
    assert "Traceback" not in text, text
    assert {name: digest(world[name]) for name in case.intact} == before
    tmp = world["home"].parent
    assert all((tmp / p).exists() for p in case.exists), text
    assert not [p for p in case.absent if (tmp / p).exists()], text


def test_every_case_names_a_known_script(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "finetuning"))
    for case in CASES:
        assert callable(importlib.import_module(case.script).main), case.name


# --- a kill while a checkpoint is written ------------------------------------------------------------

KILL_POINTS = [  # (file about to be put in place, its n-th write): every point of step 2's checkpoint
    ("best.pt", 2),
    ("train_log.csv", 3),
    ("last.pt", 2),
    ("train_curves.png", 2),
]


@pytest.fixture
def one_thread():
    """The same arithmetic in the killed child, the resumed run and the uninterrupted run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_until_killed(argv: list[str], name: str, nth: int) -> None:
    """Fine-tune in this (forked) process and die like SIGKILL just before the nth rename onto `name`."""
    from finetuning.finetune import main

    replace, seen = os.replace, []

    def killed(src, dst, *args, **kw):
        seen.extend([Path(dst).name] if Path(dst).name == name else [])
        if len(seen) == nth:
            os._exit(137)
        return replace(src, dst, *args, **kw)

    os.replace = killed
    main(argv)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "nth"), KILL_POINTS, ids=[f"before {n} #{k}" for n, k in KILL_POINTS])
def test_a_run_killed_while_checkpointing_resumes_to_the_same_result(world, name, nth, one_thread):
    from finetuning.finetune import main

    argv = [
        fill(a, world) for a in (*TRAIN, "--val-every", "1", "--select", "best", "--lr", "3e-2", "--warmup-steps", "0")
    ]
    whole = main([*argv, "--output-dir", str(world["out"] / "whole")])
    child = multiprocessing.get_context("fork").Process(
        target=train_until_killed, args=([*argv, "--output-dir", str(world["out"] / "killed")], name, nth)
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 137
    (killed,) = (world["out"] / "killed").iterdir()
    assert main(["--resume", str(killed), "--quiet"]) == killed
    for file in ("last.pt", "best.pt"):
        a, b = (torch.load(run / file, weights_only=True) for run in (whole, killed))
        assert a["extra"]["step"] == b["extra"]["step"]
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    logs = [read_run(run).read("train_log") for run in (whole, killed)]
    assert logs[0]["step"].tolist() == logs[1]["step"].tolist()
    assert np.allclose(logs[0]["val_pck@0.1"], logs[1]["val_pck@0.1"], equal_nan=True)
