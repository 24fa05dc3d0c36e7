"""semcorr/runs/folders.py: every kind of run folder reads back exactly what was written, and says what it is."""

import json

import numpy as np
import pandas as pd
import pytest

from semcorr.runs import folders
from semcorr.storage.files import WriteError


def sample_files(kind: str) -> dict:
    """One file of each name a run of `kind` has, with values that a careless reader would change
    (ids that look like numbers, text that looks like NaN, floats at full precision)."""
    ids = pd.DataFrame({"pair_id": ["007", "1"], "category": ["NA", "cat"], "kp_id": ["01", "2"]})
    tables = {
        "per_keypoint": ids.assign(distance=[0.1 + 0.2, 1 / 3], **{"correct@0.1": [True, False]}),
        "per_pair": ids.drop(columns="kp_id").assign(src_image=["a/001", "b"], trg_image=["c", "nan"]),
        # a number left out (a keypoint not visible in the target has no positive) reads back as NaN, beside "NA" ids
        "per_keypoint_kap": ids.assign(trg_visible=[False, True], **{"positive@0.1": [np.nan, 1 / 3]}),
        "grid": pd.DataFrame({"matcher": ["argmax", "wsoftargmax"], "window": pd.array([None, 5], dtype="Int64")}),
        "weights": pd.DataFrame({"weight_0": [0.25, 0.75], "pck@0.1_per_image": [50.0, 2 / 3]}),
        "train_log": pd.DataFrame({"step": [0, 10], "loss": [np.nan, 1.5]}),
        "match_table": ids.drop(columns=["category", "kp_id"]).assign(id=["01", "NA"], truth_x=[np.nan, 2 / 3]),
        "benchmarks": pd.DataFrame({"run": ["dinov2, zero-shot", "1"], "SPair-71k PCK@0.1": [1 / 3, np.nan]}),
    }
    return {
        name: tables.get(name, {"value": 1 / 3, "nested": {"alpha": [0.05, 0.1]}}) for name in folders.RUN_FILES[kind]
    }


@pytest.mark.parametrize("kind", list(folders.RUN_FILES))
def test_every_kind_reads_back_what_was_written(tmp_path, kind):
    run_dir = folders.new_run_dir(tmp_path, ["model", kind])
    files = sample_files(kind)
    folders.write_run(run_dir, kind, {"args": {"x": 1}, "kind": "ignored"}, **files)
    assert json.loads((run_dir / "config.json").read_text()) == {"kind": kind, "args": {"x": 1}}
    run = folders.read_run(run_dir)
    assert run.kind == kind and run.config["args"] == {"x": 1}
    for name, written in files.items():
        read = run.read(name)
        if isinstance(written, pd.DataFrame):
            pd.testing.assert_frame_equal(read, written, check_dtype=name in folders.TEXT_COLUMNS)
        else:
            assert read == written
    assert folders.find_runs([tmp_path]) == [run_dir]
    assert folders.find_runs([tmp_path], kinds=("nothing",)) == []


def test_run_folders_are_new_and_never_reused(tmp_path):
    first = folders.new_run_dir(tmp_path, ["a", "b/c"], started=0)
    second = folders.new_run_dir(tmp_path, ["a", "b/c"], started=0)
    assert first != second and first.name.endswith("_a_b-c") and second.name.endswith("_a_b-c-2")


def test_a_run_written_at_its_end_appears_whole_or_not_at_all(tmp_path):
    def write(folder):
        folders.write_run(folder, "match", {}, matches={"n": 1})

    first = folders.write_new_run(tmp_path, ["a"], 0, write)
    second = folders.write_new_run(tmp_path, ["a"], 0, write)  # the same name taken: the next one, never overwritten
    assert first.name.endswith("_a") and second.name == f"{first.name}-2"
    assert folders.read_run(first).read("matches") == {"n": 1}

    def fails(folder):
        write(folder)
        raise WriteError("the disk is full")

    with pytest.raises(WriteError):
        folders.write_new_run(tmp_path, ["b"], 0, fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, second.name]  # no folder, no staging left


def test_a_staging_folder_is_never_read_as_a_run(tmp_path):
    staging = tmp_path / f".20990101-000000_x.abc{folders.STAGING_SUFFIX}"
    staging.mkdir()
    folders.write_run(staging, "match", {}, matches={})
    assert folders.find_runs([tmp_path]) == []


def test_a_folder_whose_config_names_no_kind_is_not_a_run(tmp_path):
    """Only the released format is read: config.json names the run's kind."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text('{"args": {}}')
    (tmp_path / "old" / "metrics.json").write_text("{}")
    with pytest.raises(folders.RunFolderError, match="no known 'kind'"):
        folders.read_run(tmp_path / "old")
    assert folders.find_runs([tmp_path]) == []


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(folders.RunFolderError, match="no such results folder"):
        folders.read_run(tmp_path / "missing")
    with pytest.raises(folders.RunFolderError, match="not a results folder"):
        folders.read_run(tmp_path)
    run_dir = folders.write_run(tmp_path, "grid", {})
    with pytest.raises(folders.RunFolderError, match="holds a grid run, not evaluation"):
        folders.read_run(run_dir, kinds=("evaluation",))
    with pytest.raises(folders.RunFolderError, match=r"no grid_search_results\.csv"):
        folders.read_run(run_dir).read("grid")
    with pytest.raises(ValueError, match="a grid run has no file 'metrics'"):
        folders.write_file(run_dir, "grid", "metrics", {})
    with pytest.raises(ValueError, match="unknown run kind"):
        folders.write_config(run_dir, "nope", {})
    (run_dir / "best_parameters.json").write_text("{")
    with pytest.raises(folders.RunFolderError, match="unreadable JSON"):
        folders.read_run(run_dir).read("best_parameters")


def test_a_file_is_read_once_and_each_caller_gets_its_own_table(evaluation_runs, monkeypatch):
    run = folders.read_run(evaluation_runs[0])
    reads = []
    read_csv = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **kw: reads.append(a[0]) or read_csv(*a, **kw))
    first = run.keypoints()
    first["distance"] = -1.0  # a caller's change stays its own
    second = run.keypoints()
    assert len(reads) == 1 and (second["distance"] >= 0).all()
