"""The fault campaign: bad input, damaged files and interruptions, each through a real script.

Every case is one row: the script, its arguments, the exit code it must end with (0 done, 1 a
one-line error, 2 a usage error), a fragment its output must hold (and fragments it must not), the
files that must come through untouched (or exist, or never appear), and what its results folder must
record. A case's `fault` damages a private copy of the tiny world (datasets in their on-disk formats,
a tiny checkpoint) before the script runs; a case with a `file_limit` runs the script as its own
process under that file-size limit (`ulimit -f`, as on a full disk). No output may hold a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from dataset_factory import fake_images, fake_pairs, make_custom, make_pf_pascal, make_pf_willow, make_spair
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
    forbidden: tuple[str, ...] = ()  # fragments the output must not hold
    check: Callable[[World], None] | None = None  # what the world (e.g. the run folder made) must hold
    file_limit: int | None = None  # run as a process with this file-size limit in bytes (ulimit -f)


EVAL = ("--device", "cpu", "--num-workers", "0", "--quiet", "--image-size", "56", "--cache-dir", "{cache}")
SPAIR = ("--checkpoint", "{ckpt}", "--dataset", "spair", "--data-root", "{spair}", *EVAL, "--output-dir", "{out}")
PASCAL = ("--checkpoint", "{ckpt}", "--dataset", "pf-pascal", "--data-root", "{pascal}", *EVAL, "--output-dir", "{out}")
CUSTOM = ("--checkpoint", "{ckpt}", "--dataset", "custom", "--data-root", "{custom}", *EVAL, "--output-dir", "{out}")
TRAIN = ("--checkpoint", "{ckpt}", "--data-root", "{spair}", "--image-size", "56", "--batch-size", "2")
TRAIN += ("--num-workers", "0", "--device", "cpu", "--quiet", "--output-dir", "{out}")
MATCH = ("--checkpoint", "{ckpt}", "--src", "{image}", "--trg", "{image}", *EVAL, "--output-dir", "{out}")
WILLOW = ("--checkpoint", "{ckpt}", "--dataset", "pf-willow", "--data-root", "{willow}", *EVAL, "--output-dir", "{out}")
GRID = (*SPAIR, "--windows", "3", "--temperatures", "0.1")
REPORT = ("{out}",)


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


def change_cache_entry(path: Path, change: Callable[[torch.Tensor], object]) -> None:
    """Replace the features of a cache entry (a tensor, or in an entry that names its image) by change(features)."""
    entry = torch.load(path, weights_only=True)
    torch.save({**entry, "features": change(entry["features"])} if isinstance(entry, dict) else change(entry), path)


def nan_in_cache(world: World, _) -> None:
    fill_cache(world)
    change_cache_entry(cache_entries(world)[0], lambda feats: torch.full_like(feats, float("nan")))


def wrong_shape_in_cache(world: World, _) -> None:
    fill_cache(world)
    change_cache_entry(cache_entries(world)[0], lambda feats: torch.zeros(3, 2, 2, dtype=torch.float16))


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


# --- faults of the second campaign: thresholds, contradictions, unused settings, stale features, full disks,
# environments, damaged results, refusals -----------------------------------------------------------------


def spair_annotations(world: World, split: str = "test") -> list[Path]:
    return sorted((world["spair"] / "PairAnnotation" / split).glob("*.json"))


def edit_spair(edit: Callable[[dict], object], nth: int | None = 0) -> Callable[[World, pytest.MonkeyPatch], None]:
    """A fault that edits the nth test pair annotation of SPair-71k (every one with nth None)."""

    def fault(world: World, _) -> None:
        paths = spair_annotations(world)
        for path in paths if nth is None else [paths[nth]]:
            ann = json.loads(path.read_text())
            edit(ann)
            path.write_text(json.dumps(ann))

    return fault


def edit_custom(edit: Callable[[dict], object]) -> Callable[[World, pytest.MonkeyPatch], None]:
    """A fault that edits the first pair of the custom pairs file."""

    def fault(world: World, _) -> None:
        data = json.loads(world["custom"].read_text())
        edit(data["pairs"][0])
        world["custom"].write_text(json.dumps(data))

    return fault


def spair_image_sized_twice(world: World, _) -> None:
    """Two pair annotations of one source image that give it two sizes."""
    by_source: dict[str, list[Path]] = {}
    for path in spair_annotations(world):
        by_source.setdefault(json.loads(path.read_text())["src_imname"], []).append(path)
    second = next(paths for paths in by_source.values() if len(paths) > 1)[1]
    ann = json.loads(second.read_text())
    ann["src_imsize"] = [96, 72, 3]
    second.write_text(json.dumps(ann))


def willow_target_at_one_point(world: World, _) -> None:
    path = world["willow"] / "test_pairs.csv"
    header, first, *rest = path.read_text().splitlines()
    names, cells = header.split(","), first.split(",")
    cells = [("5" if name[:2] in ("XB", "YB") else cell) for name, cell in zip(names, cells, strict=True)]
    path.write_text("\n".join([header, ",".join(cells), *rest]) + "\n")


def pascal_annotations(world: World) -> list[Path]:
    return sorted((world["pascal"] / "PF-dataset-PASCAL" / "Annotations").rglob("*.mat"))


def pascal_box_without_area(world: World, _) -> None:
    path = pascal_annotations(world)[0]
    mat = scipy.io.loadmat(str(path))
    scipy.io.savemat(str(path), {"kps": mat["kps"], "bbox": np.array([[10.0, 10.0, 10.0, 10.0]])})


def pascal_text_field(world: World, _) -> None:
    path = pascal_annotations(world)[0]
    scipy.io.savemat(str(path), {"kps": np.array(["hello"]), "bbox": scipy.io.loadmat(str(path))["bbox"]})


def best_parameters(window: object, temperature: object = 0.1) -> Callable[[World, pytest.MonkeyPatch], None]:
    def fault(world: World, _) -> None:
        best = {"0.1": {"window": window, "temperature": temperature}}
        world["params"] = world["out"].parent / "best_parameters.json"
        world["params"].write_text(json.dumps({"matcher": "wsoftargmax", "best": best}))

    return fault


def the_run(world: World) -> Path:
    """The newest results folder in the output folder (a fault may have made others before)."""
    return sorted(path for path in world["out"].iterdir() if path.is_dir())[-1]


def recorded_skip(pairs: int) -> Callable[[World], None]:
    """A check: metrics.json counts this many pairs skipped for their threshold length, and names the first."""

    def check(world: World) -> None:
        run = the_run(world)
        counts = json.loads((run / "metrics.json").read_text())["counts"]
        assert counts["pairs_skipped"]["no usable PCK threshold length"] == pairs, counts
        assert any("first: pair" in note for note in counts["notes"]), counts

    return check


def cache_not_written(world: World) -> None:
    """A check: config.json says why the features were not cached."""
    off = json.loads((the_run(world) / "config.json").read_text())["resolved"]["members"][0]["feature_cache_off"]
    assert off.startswith("not written: cannot write"), off


def recorded(path: str, value: object) -> Callable[[World], None]:
    """A check: the run's config.json holds `value` at the dotted `path`."""

    def check(world: World) -> None:
        run = the_run(world)
        config = json.loads((run / "config.json").read_text())
        for key in path.split("."):
            config = config[int(key)] if isinstance(config, list) else config[key]
        assert config == value, (path, config, value)

    return check


def extracted(images: int) -> Callable[[World], None]:
    """A check: the run extracted this many images (the others came from the feature cache)."""

    def check(world: World) -> None:
        run = the_run(world)
        assert json.loads((run / "metrics.json").read_text())["timings"]["images_extracted"] == images

    return check


def no_run_folder(world: World) -> None:
    """A check: nothing in the output folder (no results folder, complete or not, no staging folder)."""
    assert not list(world["out"].iterdir()), list(world["out"].iterdir())


def image_replaced_keeping_size_and_time(world: World, mp) -> None:
    """After a run fills the cache, one image gets other pixels in as many bytes, its old mtime put back (cp -p)."""
    fill_cache(world)
    path = spair_image(world)
    data, stat = bytearray(path.read_bytes()), path.stat()
    table = data.index(b"\xff\xdb") + 5  # the first quantisation table's values: every pixel changes
    data[table : table + 16] = bytes(v % 50 + 5 for v in data[table : table + 16])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def cache_entries_swapped(world: World, _) -> None:
    fill_cache(world)
    a, b = cache_entries(world)[:2]
    a.rename(a.with_suffix(".swap"))
    b.rename(a)
    a.with_suffix(".swap").rename(b)


def disk_full(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file put in place fails as on a full disk (the feature cache's, the results', the checkpoints')."""

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)


def cache_dir_is_a_file(world: World, _) -> None:
    world["cache"].write_text("my notes\n")


def runs_to_report(world: World, _) -> None:
    run_case(world, CLEAN_SPAIR)
    run_case(world, CLEAN_SPAIR)


def damaged_run(damage: Callable[[Path], None]) -> Callable[[World, pytest.MonkeyPatch], None]:
    """A fault: two evaluations, the files of the second damaged."""

    def fault(world: World, mp) -> None:
        runs_to_report(world, mp)
        damage(sorted(p for p in world["out"].iterdir() if p.is_dir())[-1])

    return fault


def metrics_value(value: object) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["pck@0.1"]["per_image"] = value
        (run / "metrics.json").write_text(json.dumps(metrics))

    return damage


def csv_cell(file: str, column: str, value: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        import pandas as pd

        table = pd.read_csv(run / file, dtype=str, keep_default_na=False)
        table.loc[0, column] = value
        table.to_csv(run / file, index=False)

    return damage


class RunsCode:
    """Pickles as a call of os.makedirs(marker): a file that would run code when unpickled (and leave the marker)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def checkpoint_running_code(world: World, _) -> None:
    payload = torch.load(world["ckpt"], weights_only=True)
    torch.save({**payload, "extra": {"note": RunsCode(world["home"] / "ran")}}, world["ckpt"])


def weights_running_code(world: World, _) -> None:
    world["weights"] = world["home"] / "dinov2_vitb14.pth"
    torch.save({"pos_embed": RunsCode(world["home"] / "ran")}, world["weights"])


def last_running_code(world: World, mp) -> None:
    run_to_resume(world, mp)
    torch.save({"format": RunsCode(world["home"] / "ran")}, world["run"] / "last.pt")


def cache_entry_running_code(world: World, _) -> None:
    fill_cache(world)
    torch.save({"features": RunsCode(world["home"] / "ran")}, cache_entries(world)[0])


def with_byte_order_mark(*parts: str) -> Callable[[World, pytest.MonkeyPatch], None]:
    """A fault that saves a file of the world (name, then a path under it; a glob) with a UTF-8 byte-order mark."""

    def fault(world: World, _) -> None:
        for path in world[parts[0]].glob(parts[1]):
            path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    return fault


def last_checkpoint_fails(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills while the second last.pt is written (torch's writer says so as a RuntimeError)."""
    save, calls = torch.save, []

    def failing(obj, path, *args, **kw):
        calls.extend([1] if "last" in Path(path).name else [])
        if len(calls) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return save(obj, path, *args, **kw)

    monkeypatch.setattr(torch, "save", failing)


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
    # --- the second campaign ---
    # thresholds that cannot be: official datasets skip the pair (counted, first one named); a custom file is refused
    Case("SPair target box without area", "evaluate", SPAIR, 0, "1 pair (no usable PCK threshold length)",
         fault=edit_spair(lambda a: a.update(trg_bndbox=[10, 10, 10, 10])), check=recorded_skip(1)),
    Case("SPair target box inverted", "evaluate", SPAIR, 0, "is inverted",
         fault=edit_spair(lambda a: a.update(trg_bndbox=[40, 30, 5, 2])), check=recorded_skip(1)),
    Case("SPair target box 100x its image", "evaluate", SPAIR, 0, "over 2x the target image's longer side",
         fault=edit_spair(lambda a: a.update(trg_bndbox=[0, 0, 4800, 3600])), check=recorded_skip(1)),
    Case("SPair: every target box without area", "evaluate", SPAIR, 1, "no pairs to evaluate",
         fault=edit_spair(lambda a: a.update(trg_bndbox=[3, 3, 3, 3]), nth=None)),
    Case("PF-Willow target keypoints at one point", "evaluate", WILLOW, 0, "span no length",
         fault=willow_target_at_one_point, check=recorded_skip(1)),
    Case("PF-Pascal .mat box without area, --pck-norm bbox", "evaluate", (*PASCAL, "--split", "trn", "--pck-norm",
         "bbox"), 0, "has no width or no height", fault=pascal_box_without_area),
    Case("custom target_bbox without area", "evaluate", (*CUSTOM, "--pck-norm", "bbox"), 1, "target_bbox gives no "
         "usable PCK threshold length", fault=edit_custom(lambda p: p.update(target_bbox=[5, 5, 5, 5]))),
    Case("custom target keypoints at one point", "evaluate", (*CUSTOM, "--pck-norm", "kpbox"), 1, "pair 0001-",
         fault=edit_custom(lambda p: p.update(target_kps=[[7, 7]] * len(p["target_kps"])))),
    # annotations that contradict themselves
    Case("SPair keypoint id twice", "evaluate", SPAIR, 1, "kps_ids: keypoint id(s) '0' given more than once",
         fault=edit_spair(lambda a: a["kps_ids"].__setitem__(1, a["kps_ids"][0]))),
    Case("custom kp_ids all the same", "evaluate", CUSTOM, 1, "kp_ids: keypoint id(s) 'nose'",
         fault=edit_custom(lambda p: p.update(kp_ids=["nose"] * len(p["kp_ids"])))),
    Case("custom kp_ids a string", "evaluate", CUSTOM, 1, "kp_ids must be a list",
         fault=edit_custom(lambda p: p.update(kp_ids="abcde"))),
    Case("custom category a list", "evaluate", CUSTOM, 1, "category must be text",
         fault=edit_custom(lambda p: p.update(category=["cat", "dog"]))),
    Case("custom pair_id an object", "evaluate", CUSTOM, 1, "pair_id must be text",
         fault=edit_custom(lambda p: p.update(pair_id={"a": 1}))),
    Case("SPair image given two sizes", "evaluate", SPAIR, 1, "src_imsize says", fault=spair_image_sized_twice),
    # settings recorded but not used, or used but not said
    Case("--layout with PF-Pascal", "evaluate", (*PASCAL, "--layout", "small"), 0, "--layout small",
         check=recorded("settings.data.layout", None)),  # a dataset with one pair list has no layout
    Case("--window and --temperature with argmax", "evaluate", (*SPAIR, "--window", "7", "--temperature", "0.05"), 0,
         "--window 7 ignored", check=recorded("settings.match.window", 5)),
    Case("--window-border with argmax", "evaluate", (*SPAIR, "--window-border", "clip"), 0, "--window-border clip "
         "ignored", check=recorded("settings.match.window_border", "shrink")),
    Case("--image-size not a multiple of the patch", "evaluate", (*SPAIR, "--image-size", "57"), 0, "56x56 is used",
         check=recorded("resolved.members.0.image_size", [56, 56])),
    Case("--params window 3.7", "evaluate", (*SPAIR, "--params", "{params}"), 1, "best.0.1.window: must be a whole "
         "number", fault=best_parameters(3.7)),
    Case("--params window 4", "evaluate", (*SPAIR, "--params", "{params}"), 1, "best.0.1.window: window must be a "
         "positive odd number", fault=best_parameters(4)),
    Case("--params temperature text", "evaluate", (*SPAIR, "--params", "{params}"), 1, "best.0.1.temperature",
         fault=best_parameters(3, "hot")),
    Case("--params-alpha without --params", "evaluate", (*SPAIR, "--params-alpha", "0.2"), 0, "--params-alpha 0.2 "
         "ignored"),
    Case("--cache-dir with --no-cache", "evaluate", (*SPAIR, "--no-cache"), 0, "--cache-dir", absent=("cache",),
         check=recorded("settings.extract.cache_dir", None)),
    Case("--no-pf-shift with SPair", "evaluate", (*SPAIR, "--no-pf-shift"), 0, "--no-pf-shift ignored",
         check=recorded("settings.data.pf_shift", True)),
    Case("grid windows given twice", "grid_search_hyperparams", (*SPAIR, "--windows", "3", "3"), 1,
         "--windows: 3 given more than once", absent=("cache",)),
    Case("grid temperature 1e-9", "grid_search_hyperparams", (*SPAIR, "--temperatures", "1e-9"), 2, "--temperatures"),
    Case("grid search on the test split", "grid_search_hyperparams", (*GRID, "--split", "test"), 0, "test split"),
    Case("ensemble weights 1e308 and 1e308", "ensemble_evaluate", ("--member", "dinov2:{ckpt}:1e308", "--member",
         "dinov2:{ckpt}:1e308", *SPAIR[2:]), 0, "0.50 x", check=recorded("resolved.members.1.weight", 0.5)),
    # stale features
    Case("image replaced keeping its size and time", "evaluate", SPAIR, 0, "PCK@0.1",
         fault=image_replaced_keeping_size_and_time, check=extracted(1)),
    Case("two cache entries swapped", "evaluate", SPAIR, 0, "the entry of another image",
         fault=cache_entries_swapped, check=extracted(2)),
    # a full disk and unwritable paths
    Case("evaluation, disk full", "evaluate", SPAIR, 1, "no space is left", fault=disk_full, check=no_run_folder),
    Case("evaluation under ulimit -f", "evaluate", SPAIR, 1, "cannot write", file_limit=3000, check=no_run_folder),
    Case("--cache-dir a file", "evaluate", SPAIR, 0, "feature cache not written", intact=("cache",),
         fault=cache_dir_is_a_file, check=cache_not_written),
    Case("--cache-dir under a file", "evaluate", (*SPAIR, "--cache-dir", "{cache}/features"), 0,
         "feature cache not written", intact=("cache",), fault=cache_dir_is_a_file),
    Case("grid search, disk full", "grid_search_hyperparams", GRID, 1, "no space is left", fault=disk_full,
         check=no_run_folder),
    Case("match_pair, disk full", "match_pair", MATCH, 1, "no space is left", fault=disk_full, check=no_run_folder),
    Case("fine-tuning, disk full at the second last.pt", "finetuning.finetune", (*TRAIN, "--val-every", "1"), 1,
         "The last complete checkpoint is", fault=last_checkpoint_fails),
    Case("fine-tuning resumed under ulimit -f", "finetuning.finetune", ("--resume", "{run}"), 1,
         "(step 1). Continue with: python ", fault=run_to_resume, file_limit=100_000),
    Case("report --latex under ulimit -f", "report", (*REPORT, "--latex", "{home}/paper"), 1, "cannot write",
         fault=runs_to_report, file_limit=300),
    Case("report --latex into a file", "report", (*REPORT, "--latex", "{image}"), 1, "is a file, not a folder",
         intact=("image",), fault=runs_to_report),
    Case("report --csv into a missing folder", "report", (*REPORT, "--csv", "{home}/none/report.csv"), 1,
         "does not exist", fault=runs_to_report),
    # bad environment and devices
    Case("SEMCORR_MAX_IMAGE_PIXELS=abc", "evaluate", SPAIR, 1, "SEMCORR_MAX_IMAGE_PIXELS='abc'",
         env={"SEMCORR_MAX_IMAGE_PIXELS": "abc"}),
    Case("WORLD_SIZE=abc", "finetuning.finetune", TRAIN, 1, "WORLD_SIZE='abc'", env={"WORLD_SIZE": "abc"}),
    Case("LOCAL_RANK=x", "finetuning.finetune", TRAIN, 1, "LOCAL_RANK='x'", env={"WORLD_SIZE": "2", "LOCAL_RANK": "x"}),
    Case("--device mps", "evaluate", (*SPAIR, "--device", "mps"), 1, "--device mps"),
    Case("--device cuda:7", "evaluate", (*SPAIR, "--device", "cuda:7"), 1, "--device cuda:7"),
    # damaged results in the report: the folder is skipped, naming the file and the field
    Case("report: NaN in metrics.json", "report", REPORT, 0, "field pck@0.1.per_image is nan",
         fault=damaged_run(metrics_value(float("nan")))),
    Case("report: text in metrics.json", "report", REPORT, 0, "field pck@0.1.per_image is 'high'",
         fault=damaged_run(metrics_value("high"))),
    Case("report: nan in per_keypoint.csv", "report", REPORT, 0, "column distance holds 'nan'",
         fault=damaged_run(csv_cell("per_keypoint.csv", "distance", "nan"))),
    Case("report: text in per_pair.csv", "report", REPORT, 0, "column norm_L holds 'wide'",
         fault=damaged_run(csv_cell("per_pair.csv", "norm_L", "wide"))),
    # honest refusals
    Case("checkpoint that runs code", "evaluate", SPAIR, 1, "asks to run code when it is loaded (it names "
         "os.makedirs)", absent=("home/ran",), forbidden=("weights_only=False", "truncated"),
         fault=checkpoint_running_code),
    Case("weights file that runs code", "evaluate", ("--model", "dinov2", "--weights", "{weights}", *SPAIR[2:]), 1,
         "asks to run code", absent=("home/ran",), forbidden=("weights_only=False",), fault=weights_running_code),
    Case("last.pt that runs code", "finetuning.finetune", ("--resume", "{run}"), 1, "asks to run code",
         absent=("home/ran",), forbidden=("weights_only=False",), fault=last_running_code),
    Case("cache entry that runs code", "evaluate", SPAIR, 0, "asks to run code", absent=("home/ran",),
         fault=cache_entry_running_code, check=extracted(1)),
    Case("SPair difficulty flag out of range", "evaluate", SPAIR, 1, "viewpoint_variation must be a level 0..2",
         fault=edit_spair(lambda a: a.update(viewpoint_variation=7))),
    Case("SPair difficulty flag text", "evaluate", SPAIR, 1, "truncation must be a level",
         fault=edit_spair(lambda a: a.update(truncation="both"))),
    Case("PF-Pascal .mat field of text", "evaluate", (*PASCAL, "--split", "trn"), 1, "field 'kps' must hold numbers",
         fault=pascal_text_field),
    Case("SPair layout with a byte-order mark", "evaluate", SPAIR, 0, "PCK@0.1",
         fault=with_byte_order_mark("spair", "Layout/*/*.txt")),
    Case("SPair annotation with a byte-order mark", "evaluate", SPAIR, 0, "PCK@0.1",
         fault=with_byte_order_mark("spair", "PairAnnotation/test/*.json")),
    Case("PF-Willow pairs CSV with a byte-order mark", "evaluate", WILLOW, 0, "PCK@0.1",
         fault=with_byte_order_mark("willow", "*.csv")),
    Case("PF-Pascal pairs CSV with a byte-order mark", "evaluate", PASCAL, 0, "PCK@0.1",
         fault=with_byte_order_mark("pascal", "*.csv")),
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
        "willow": make_pf_willow(tmp / "PF-Willow"),
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


def run_process(world: World, case: Case) -> tuple[int, str]:
    """Run a case's script as `python <script>.py ARGS` would, as a process whose files may not grow past
    case.file_limit bytes (`ulimit -f`); its exit code and its output."""
    limit = (
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({case.file_limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))"
    )
    code = f"import resource, runpy; {limit}; runpy.run_module({case.script!r}, run_name='__main__', alter_sys=True)"
    paths = [str(REPO), str(REPO / "finetuning"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    env |= {name: fill(value, world) for name, value in case.env.items()}
    env.pop("SEMCORR_TRACEBACK", None)
    argv = [fill(a, world) for a in case.argv]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=world["cwd"], env=env, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout + done.stderr


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
    code, text = run_process(world, case) if case.file_limit else run_in_process(world, case, capsys)
    assert code == case.exit, text
    assert case.message in text, text
    assert "Traceback" not in text, text
    assert not [fragment for fragment in case.forbidden if fragment in text], text
    assert {name: digest(world[name]) for name in case.intact} == before
    tmp = world["home"].parent
    assert all((tmp / p).exists() for p in case.exists), text
    assert not [p for p in case.absent if (tmp / p).exists()], text
    if case.check:
        case.check(world)


def run_in_process(world: World, case: Case, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run a case's script in this process as its command line would: its exit code, its output and warnings."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            run_case(world, case)
            code, message = 0, ""
        except SystemExit as end:
            code, message = (1, end.code) if isinstance(end.code, str) else (end.code or 0, "")
    out = capsys.readouterr()
    return code, "\n".join([out.out, out.err, message, *(str(w.message) for w in warned)])


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
