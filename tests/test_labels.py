"""Runs shown together are each named by what differs among them (semcorr/report/labels.py), the rest said once;
run folders say zero-shot or fine-tuned and what is not the default."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from semcorr.cli.flags import MemberSpec
from semcorr.cli.resolve import resolve
from semcorr.config.settings import GridSettings, as_record
from semcorr.report.labels import folder_parts, run_labels

CHECKPOINTS = "results/finetune/20260101-120000_finetune_dinov2_vits14_112x112_spair-trn"


@dataclass
class Shown:
    """A results folder as labels read it: its config.json and its name."""

    config: dict
    name: str = "20260101-000000_run"


def config(kind: str = "evaluation", checkpoint: str | None = None, **flags) -> dict:
    """The config.json run_record writes for an evaluation with these flags (official weights, or `checkpoint`)."""
    given = {"model": "dinov2_vits14", "image_size": (112,), "device": "cpu", "dataset": "spair", **flags}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the original protocol's overrides are warned about
        settings = resolve(kind, given)
    settings, more = settings if isinstance(settings, tuple) else (settings, None)
    record = as_record(settings) | ({"grid": as_record(more)} if isinstance(more, GridSettings) else {})
    for member in record["members"]:
        member["backbone"]["checkpoint"] = checkpoint
    origin = "fine-tuned" if checkpoint else "official"
    resolved = [{"model": m.backbone.model, "weights_origin": origin, "weight": m.weight} for m in settings.members]
    return {"kind": kind, "settings": record, "resolved": {"members": resolved, "data_root": "/data/SPair-71k"}}


def names(*configs: dict) -> list[str]:
    return run_labels([Shown(c, f"2026010{i}-000000_run") for i, c in enumerate(configs)]).names


def test_runs_that_differ_in_resize_and_descriptor_are_named_by_them_and_share_a_caption():
    shown = run_labels([Shown(config()), Shown(config(resize="pad", descriptor="bilinear"))])
    assert shown.names == ["resize squash, descriptor nearest", "resize pad, descriptor bilinear"]
    assert shown.common.startswith("dinov2_vits14, zero-shot, 112x112, precision fp32, argmax, protocol default")
    assert "spair test, data SPair-71k, threshold bbox" in shown.common


def test_the_protocol_and_its_overrides_name_a_run():
    labels = names(config(), config(protocol="original"), config(protocol="original", resize="pad"))
    assert labels == [
        "resize squash, protocol default",
        "resize squash, protocol original (image_size=112x112)",  # the original ran DINOv2 at 518
        "resize pad, protocol original (image_size=112x112, resize=pad)",
    ]


def test_fine_tuned_runs_say_which_checkpoint_and_of_which_run():
    labels = names(config(), config(checkpoint=f"{CHECKPOINTS}/best.pt"), config(checkpoint=f"{CHECKPOINTS}/last.pt"))
    assert labels == [
        "zero-shot",
        "fine-tuned best.pt, of run 20260101-120000",
        "fine-tuned last.pt, of run 20260101-120000",
    ]


def test_runs_that_read_alike_get_their_folders_time_then_name():
    assert names(config(), config()) == [
        "dinov2_vits14, zero-shot (20260100-000000)",
        "dinov2_vits14, zero-shot (20260101-000000)",
    ]
    same_time = run_labels([Shown(config(), "20260101-000000_a"), Shown(config(), "20260101-000000_b")])
    assert same_time.names == [
        "dinov2_vits14, zero-shot (20260101-000000_a)",
        "dinov2_vits14, zero-shot (20260101-000000_b)",
    ]


def test_settings_that_change_no_result_are_not_named_and_unknown_ones_are_by_their_key():
    moved = config(output_dir="elsewhere", cache_dir="/tmp/cache", num_workers=0, batch_size=3)
    assert names(config(), moved) == [
        "dinov2_vits14, zero-shot (20260100-000000)",
        "dinov2_vits14, zero-shot (20260101-000000)",
    ]
    a, b = config(), config()
    a["settings"]["match"]["new_knob"], b["settings"]["match"]["new_knob"] = 1, 2  # a setting added later
    assert names(a, b) == ["new knob 1", "new knob 2"]


def test_grid_searches_of_other_sizes_and_checkpoints_read_apart():
    small = config("grid", image_size=(56,), split="val", windows=(3, 5), temperatures=(0.1,))
    tuned = config("grid", checkpoint=f"{CHECKPOINTS}/best.pt", split="val", windows=(3, 5), temperatures=(0.1,))
    shown = run_labels([Shown(small), Shown(tuned)])
    assert shown.names == ["zero-shot, 56x56", "fine-tuned best.pt, of run 20260101-120000, 112x112"]
    assert "wsoftargmax" in shown.common and "K 3 5, T 0.1" in shown.common and "spair val" in shown.common


def test_ensemble_members_that_agree_read_once():
    members = [MemberSpec("dinov2_vits14", weight=0.25), MemberSpec("dinov2_vitb14", weight=0.75)]
    both = config("ensemble", members=members)
    assert names(config(), both) == [
        "dinov2_vits14, zero-shot",
        "0.25 dinov2_vits14 + 0.75 dinov2_vitb14, zero-shot + zero-shot",
    ]
    assert "112x112" in run_labels([Shown(config()), Shown(both)]).common  # every member at 112


def test_run_folders_say_zero_shot_or_fine_tuned_and_what_is_not_the_default():
    assert folder_parts(config()) == ["zero-shot", "dinov2_vits14", "112x112", "spair-test", "argmax"]
    tuned = config(checkpoint=f"{CHECKPOINTS}/last.pt", matcher="wsoftargmax", window=5, temperature=0.2)
    assert folder_parts(tuned)[:2] == ["fine-tuned-last", "dinov2_vits14"] and "wsoftargmax-K5-T0.2" in folder_parts(
        tuned
    )
    original = config(protocol="original", resize="pad", descriptor="bilinear")
    assert folder_parts(original)[-6:] == [
        "resize-pad",
        "descriptor-bilinear",
        "protocol-original",
        "descriptor=bilinear",
        "image_size=112x112",
        "resize=pad",
    ]
    grid = config("grid", image_size=(56,), split="val")
    assert folder_parts(grid) == ["grid", "zero-shot", "dinov2_vits14", "56x56", "spair-val"]
