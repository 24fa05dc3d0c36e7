"""report.py and semcorr/report/: the runs found (damaged ones skipped), evaluations beside the published numbers,
fine-tuning runs and grid searches, PCK at any threshold, and the paper tables and figures written per group."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dataset_factory import make_pf_pascal
from model_factory import tiny_checkpoint
from paper_runs import spair_runs

import pck
import report
from semcorr.cli.resolve import resolve
from semcorr.config.settings import TrainSettings, as_record
from semcorr.report import paper, published
from semcorr.runs import folders
from semcorr.runs.record import pairs_of_run
from semcorr.viz import viz2d


def test_report_table_and_markdown(evaluation_runs, tmp_path):
    table = report.main(
        [str(evaluation_runs[0].parent), "--markdown", str(tmp_path / "r.md"), "--csv", str(tmp_path / "r.csv")]
    )
    assert table["folder"].tolist() == [r.name for r in evaluation_runs]
    assert table["run"].tolist() == ["argmax", "wsoftargmax K3 T0.1"]  # each run named by what differs
    assert table["matcher"].tolist() == ["argmax", "wsoftargmax K3 T0.1"]
    assert table.loc[0, "setting"] == "custom weights weights-8.bin"  # the test backbone's file is no official one
    assert table.loc[0, "model"] == "colourcode"
    metrics = json.loads((evaluation_runs[1] / "metrics.json").read_text())
    assert table.loc[1, "pck@0.1_per_keypoint"] == metrics["pck@0.1"]["per_keypoint"]
    assert np.isnan(table.loc[1, "pck@0.2_per_image"])  # not evaluated at 0.2
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.splitlines()[0].startswith("| run | pairs | PCK@0.05 |")
    assert "\nEvery run: colourcode, custom weights weights-8.bin, 64x64, resize squash," in markdown
    assert f"{metrics['pck@0.1']['per_image']:.2f} ({metrics['pck@0.1']['per_keypoint']:.2f})" in markdown
    saved = pd.read_csv(tmp_path / "r.csv")
    assert saved["run"].tolist() == table["run"].tolist() and saved["folder"].tolist() == table["folder"].tolist()
    assert saved["pck@0.1_per_image"].tolist() == table["pck@0.1_per_image"].tolist()


def as_original_dinov2_run(run) -> None:
    """Edit a run's files in memory into a zero-shot DINOv2-B run of the original protocol on SPair test."""
    run.config["resolved"]["members"][0].update(model="dinov2_vitb14", weights_origin="official", image_size=[518, 518])
    run.config["settings"]["protocol"] = {"name": "original", "overrides": {}}
    run.metrics["protocol"].update(dataset="spair", split="test", pck_norm="bbox")
    run.metrics["counts"]["pairs"] = 12234


def test_published_numbers_only_for_the_whole_protocol(evaluation_runs):
    run = folders.read_run(evaluation_runs[0])
    as_original_dinov2_run(run)
    assert published.published_for(run).per_image == (35.61, 51.90, 67.64)
    assert published.published_for(run).per_keypoint == (38.12, 54.61, 70.41)
    changes = [
        ("protocol", lambda r: r.config["settings"].update(protocol={"name": "default", "overrides": {}})),
        ("an override", lambda r: r.config["settings"]["protocol"]["overrides"].update(resize="pad")),
        ("threshold", lambda r: r.metrics["protocol"].update(pck_norm="image")),
        ("pair count", lambda r: r.metrics["counts"].update(pairs=100)),
        ("image size", lambda r: r.config["resolved"]["members"][0].update(image_size=[448, 448])),
        ("weights origin", lambda r: r.config["resolved"]["members"][0].update(weights_origin="random")),
        ("matcher", lambda r: r.config["settings"]["match"].update(matcher="wsoftargmax")),
    ]
    for what, change in changes:
        run = folders.read_run(evaluation_runs[0])
        as_original_dinov2_run(run)
        change(run)
        assert published.published_for(run) is None, what
    run = folders.read_run(evaluation_runs[0])
    as_original_dinov2_run(run)
    run.metrics["protocol"].update(dataset="pf-willow", pck_norm="image")
    run.metrics["counts"]["pairs"] = 900
    assert published.published_for(run).per_image == (54.13, 80.78, 93.78)
    run.metrics["protocol"].update(dataset="pf-pascal")
    run.metrics["counts"]["pairs"] = 264  # the original's DINOv2 row covers the first 264 of 299 pairs
    assert published.published_for(run).per_image == (63.79, 82.52, 93.54)


def test_an_ensemble_matches_only_with_every_member_and_weight(evaluation_runs):
    run = folders.read_run(evaluation_runs[1])
    members = [("dinov2_vitb14", 0.25, 518), ("dinov3_vitb16", 0.65, 512), ("sam_vit_b", 0.10, 512)]
    run.config["resolved"] = {
        "members": [
            {"model": m, "weight": w, "weights_origin": "fine-tuned", "image_size": [s, s]} for m, w, s in members
        ]
    }
    run.config["settings"]["match"].update(matcher="wsoftargmax", window=5, temperature=0.2)
    run.config["settings"]["protocol"] = {"name": "original", "overrides": {}}
    run.metrics["protocol"].update(dataset="spair", split="test", pck_norm="bbox")
    run.metrics["counts"]["pairs"] = 12234
    assert published.published_for(run).per_image == (57.75, 70.08, 79.32)
    run.config["resolved"]["members"][0]["weight"] = 0.3
    assert published.published_for(run) is None


def test_pck_curve_agrees_with_the_metrics(evaluation_runs):
    run = folders.read_run(evaluation_runs[1])
    curve = pck.pck_curve(run.keypoints(), [0.05, 0.1])
    for alpha, row in zip(("0.05", "0.1"), curve.itertuples(), strict=True):
        assert row.per_image == run.metrics[f"pck@{alpha}"]["per_image"]
        assert row.per_keypoint == run.metrics[f"pck@{alpha}"]["per_keypoint"]
    assert pck.pck_curve(run.keypoints(), [1e-9])["per_keypoint"].iloc[0] == 0


def test_report_errors(tmp_path, evaluation_runs):
    with pytest.raises(FileNotFoundError, match="no evaluation, fine-tuning or grid-search results under"):
        report.main([str(tmp_path)])
    with pytest.raises(folders.RunFolderError, match="no such results folder"):
        report.main([str(tmp_path / "typo")])
    with pytest.raises(ValueError, match="--names gives 1 names for 2 evaluations"):
        report.main([str(evaluation_runs[0].parent), "--latex", str(tmp_path / "tex"), "--names", "a"])


def test_names_follow_the_order_of_the_paths_given(evaluation_runs, tmp_path):
    first, second = evaluation_runs  # the older run first
    table = report.main([str(second), str(first.parent), "--latex", str(tmp_path), "--names", "soft", "arg"])
    assert table["path"].tolist() == [str(second), str(first)]  # a folder found again is counted once
    overall = pd.read_csv(tmp_path / "custom-test-bbox" / "overall.csv").set_index("run")
    for name, run in (("soft", second), ("arg", first)):
        assert overall.loc[name, "PCK@0.1"] == json.loads((run / "metrics.json").read_text())["pck@0.1"]["per_image"]
        consistency = (tmp_path / "custom-test-bbox" / name / "consistency.tex").read_text()  # per run, by its name
        assert f"Keypoint consistency of {name}:" in consistency and f"consistency:{name}}}" in consistency
    with pytest.raises(ValueError, match=f"give one each, in this order: {second}, {first}$"):
        report.main([str(second), str(first), "--latex", str(tmp_path), "--names", "soft"])


def write_finetune(folder):
    """A fine-tuning run's folder as finetuning/training.py writes it: validated at steps 0, 10, 20, 30."""
    settings = resolve("finetune", {"model": "dinov2_vitb14", "lr": 3e-5, "device": "cpu"})
    assert isinstance(settings, TrainSettings) and settings.trainable_blocks == 2
    resolved = {"weights_origin": "official", "train_pairs": 100, "val_pairs": 50, "steps": 40, "global_batch": 8}
    log = pd.DataFrame({"step": [0, 5, 10, 15, 20, 25, 30], "loss": [np.nan, 2.0, np.nan, 1.5, np.nan, 1.2, np.nan],
                        "val_pck@0.1": [61.5, np.nan, 40.0, np.nan, 55.123, np.nan, 50.25]})  # fmt: skip
    folder.mkdir(parents=True)
    config = {"settings": as_record(settings), "resolved": resolved}
    return folders.write_run(folder, "finetune", config, train_log=log)


def write_grid(folder):
    best = {"0.1": {"window": 5, "temperature": 0.2, "pck_per_image": 70.084, "pck_per_keypoint": 71.0}}
    argmax = {"0.1": {"pck_per_image": 69.1234, "pck_per_keypoint": 70.0}}
    best_file = {"selected_by": "per_image", "best": best, "argmax": argmax, "model": "dinov3_vitb16",
                 "dataset": "spair", "split": "val", "pck_norm": "bbox", "pairs": 100}  # fmt: skip
    folder.mkdir(parents=True)
    grid = pd.DataFrame({"matcher": ["argmax"], "window": pd.array([None], dtype="Int64")})
    config = {"settings": {}, "resolved": {"members": []}}
    return folders.write_run(folder, "grid", config, best_parameters=best_file, grid=grid)


def test_report_counts_kinds_and_summarises_finetuning_and_grid_runs(evaluation_runs, tmp_path, capsys):
    write_finetune(tmp_path / "finetune" / "20260101-000000_dinov2_vitb14")
    write_grid(tmp_path / "20260101-000000_dinov3_vitb16_spair_val_grid")
    (tmp_path / "match").mkdir()
    folders.write_run(tmp_path / "match", "match", {"settings": {}, "resolved": {}}, matches={"points": []})
    report.main([str(evaluation_runs[0].parent), str(tmp_path)])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "found 5 results folders: 2 evaluation, 1 finetune, 1 grid, 1 match"
    finetune = next(line for line in out.splitlines() if "| 20260101-000000_dinov2_vitb14 |" in line)
    # best.pt is chosen among trained steps (step 0 is the starting point); every PCK with 2 decimals
    assert "| 55.12 at step 20 | 50.25 at step 30 |" in finetune and "40 of 40" not in finetune
    assert "30 of 40" in finetune and "last 2 blocks, lr 3e-05, batch 8" in finetune
    grid = next(line for line in out.splitlines() if "| 20260101-000000_dinov3_vitb16_spair_val_grid |" in line)
    assert "| K=5 T=0.2: 70.08 (argmax 69.12) |" in grid and "spair val (100 pairs, bbox threshold)" in grid


def test_damaged_or_incomplete_folders_are_skipped_with_a_warning_naming_the_file(evaluation_runs, tmp_path, capsys):
    copies = [shutil.copytree(run, tmp_path / run.name) for run in evaluation_runs]
    broken = shutil.copytree(evaluation_runs[0], tmp_path / "20990101-000000_broken")
    (broken / "metrics.json").write_text('{"protocol": ')
    partial = shutil.copytree(evaluation_runs[0], tmp_path / "20990101-000001_partial")
    (partial / "per_keypoint.csv").unlink()
    foreign = shutil.copytree(evaluation_runs[0], tmp_path / "20990101-000002_foreign")
    (foreign / "metrics.json").write_text("{}")
    bad_config = shutil.copytree(evaluation_runs[0], tmp_path / "20990101-000003_config")
    (bad_config / "config.json").write_text("[1, 2")
    write_finetune(tmp_path / "20990101-000004_finetune")
    (tmp_path / "20990101-000004_finetune" / "train_log.csv").unlink()
    listed = shutil.copytree(evaluation_runs[0], tmp_path / "20990101-000005_list")
    (listed / "config.json").write_text("[1, 2]")
    table = report.main([str(tmp_path), "--latex", str(tmp_path / "tex")])
    assert table["path"].tolist() == [str(f) for f in copies]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 6 and all(line.startswith("warning: skipped ") for line in err)
    expected = [
        f"{broken / 'metrics.json'}: unreadable JSON",
        f"{partial / 'per_keypoint.csv'}: missing",
        f"{foreign / 'metrics.json'}: no protocol, counts",
        f"{bad_config / 'config.json'}: unreadable JSON",
        "20990101-000004_finetune/train_log.csv: missing",
        f"{listed / 'config.json'}: not the config.json of a run",
    ]
    for needle in expected:
        assert any(needle in line for line in err), needle
    assert (tmp_path / "tex" / "custom-test-bbox" / "overall.tex").is_file()


@pytest.mark.parametrize(
    ("file", "damage", "problem"),
    [
        ("best_parameters.json", lambda p: p.write_text(p.read_text().replace('"window": 5', '"window": "5"')),
         "field best.0.1.window is '5', not a finite number"),
        ("train_log.csv", lambda p: p.write_text(p.read_text().replace("\n5,", "\nfive,", 1)),
         "column step holds 'five' in row 2"),
    ],
)  # fmt: skip
def test_numbers_a_report_reads_that_are_not_numbers_skip_the_folder(tmp_path, capsys, file, damage, problem):
    write_finetune(tmp_path / "20990101-000000_finetune")
    write_grid(tmp_path / "20990101-000001_grid")
    report.main([str(tmp_path)])
    assert capsys.readouterr().err == ""
    damage(next(tmp_path.rglob(file)))
    report.main([str(tmp_path)])
    assert f"{file}: {problem}" in capsys.readouterr().err


def test_report_writes_latex_figures_and_a_comparison_per_group(evaluation_runs, tmp_path, capsys, monkeypatch):
    spair = spair_runs(tmp_path / "spair")
    out = tmp_path / "paper"
    figures, save_plot = {}, viz2d.save_plot  # every figure written, by its path under out

    def recording(figure, path):
        figures[Path(path).relative_to(out).as_posix()] = figure
        return save_plot(figure, path)

    monkeypatch.setattr(viz2d, "save_plot", recording)
    report.main([str(evaluation_runs[0].parent), str(spair[0].parent), "--latex", str(out), "--figures", str(out),
                 "--compare", str(spair[0]), str(spair[1]), "--alphas", "0.05", "0.1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "the evaluations are of different datasets, splits or thresholds; one set of tables each:" in printed
    assert f"  spair-test-bbox: {spair[0].name}, {spair[1].name}" in printed
    assert f"  custom-test-bbox: {evaluation_runs[0].name}, {evaluation_runs[1].name}" in printed
    spair_dir, custom_dir = out / "spair-test-bbox", out / "custom-test-bbox"
    for name in ("overall", "per_category", "difficulty", "comparison"):
        assert all((spair_dir / f"{name}.{ext}").is_file() for ext in ("tex", "csv", "md")), name
    assert not (custom_dir / "difficulty.tex").exists()  # custom pairs carry no difficulty flags
    for group in (spair_dir, custom_dir):  # one \label per table across the groups
        assert f"\\label{{tab:{group.name}:overall}}" in (group / "overall.tex").read_text()
    assert (
        "\\label{tab:spair-test-bbox:consistency:wsoftargmax-K3-T0-1}"
        in (spair_dir / "wsoftargmax-K3-T0.1" / "consistency.tex").read_text()
    )
    overall = pd.read_csv(spair_dir / "overall.csv")
    labels = overall["run"].tolist()  # the names of the spair runs in the tables: what differs between them
    assert labels == ["argmax", "wsoftargmax K3 T0.1"]
    for folder in ("argmax", "wsoftargmax-K3-T0.1"):  # per-run tables under the run's name
        assert sorted(p.name for p in (spair_dir / folder).iterdir()) == sorted(
            f"{t}.{ext}" for t in ("consistency", "sensitivity", "extremes") for ext in ("tex", "csv", "md")
        )
    for figure in ("pck_curves.png", "keypoint_ids.png", "keypoint_examples.png"):
        assert (spair_dir / figure).stat().st_size > 10_000, figure
    assert (custom_dir / "pck_curves.png").is_file()
    assert sorted(figures) == sorted(
        ["custom-test-bbox/pck_curves.png"]
        + [f"spair-test-bbox/{f}" for f in ("pck_curves.png", "keypoint_ids.png", "keypoint_examples.png")]
    )
    curves, ids, examples = (
        figures[f"spair-test-bbox/{f}.png"] for f in ("pck_curves", "keypoint_ids", "keypoint_examples")
    )
    assert [ax.get_title().split(":")[0] for ax in curves.axes] == ["per image", "per keypoint"]
    assert [len(ax.get_lines()) for ax in curves.axes] == [2, 2]  # one curve per run
    assert [t.get_text() for t in curves.legends[0].get_texts()] == labels
    assert "every run: colourcode, custom weights weights-8.bin, 128x128" in curves.texts[0].get_text()  # the rest
    id_a, id_b = (paper.keypoint_id_pck(folders.read_run(run).keypoints(), 0.1)["pck"] for run in spair)
    assert [t.get_text() for t in ids.legends[0].get_texts()] == labels
    panels = [ax for ax in ids.axes if ax.patches]
    assert [ax.get_title() for ax in panels] == [
        f"{c}: mean {id_a.loc[c].mean():.1f} vs {id_b.loc[c].mean():.1f}" for c in ("cat", "dog")
    ]
    assert [len(ax.patches) for ax in panels] == [2 * len(id_a.loc[c]) for c in ("cat", "dog")]  # A and B per id
    assert [ax.get_title().split(":")[0] for ax in examples.axes[::2]] == ["easy", "easy", "hard", "hard"]
    assert [t.get_text() for t in examples.legends[0].get_texts()][1:3] == [f"A: {labels[0]}", f"B: {labels[1]}"]
    metrics = json.loads((spair[1] / "metrics.json").read_text())
    assert overall.loc[1, "PCK@0.1"] == metrics["pck@0.1"]["per_image"] and list(overall.columns)[1:] == [
        "PCK@0.05",
        "PCK@0.1",
    ]
    assert "## comparison" in printed and "| all | all pairs |" in printed


def test_paths_resolve_from_the_given_bases(evaluation_runs, tmp_path):
    started = evaluation_runs[0].parents[1]
    relative = evaluation_runs[0].relative_to(started)
    assert folders.resolve_path(relative, [tmp_path, started]) == evaluation_runs[0].resolve()
    assert folders.resolve_path(evaluation_runs[0], [tmp_path]) == evaluation_runs[0].resolve()
    with pytest.raises(FileNotFoundError, match=f"no results folder {relative}; tried {tmp_path / relative}, /nowhere"):
        folders.resolve_path(relative, [tmp_path, "/nowhere", ""])


@pytest.mark.parametrize("protocol", ["default", "original"])
def test_a_runs_pairs_reload_with_its_keypoint_conventions(tmp_path, protocol):
    """PF-Pascal's 1-based coordinates: shifted by the default protocol, kept by the original."""
    import evaluate

    root = make_pf_pascal(tmp_path / "pf")
    argv = ["--checkpoint", str(tiny_checkpoint(tmp_path)), "--dataset", "pf-pascal", "--data-root", str(root)]
    argv += ["--protocol", protocol, "--image-size", "56", "--device", "cpu", "--num-workers", "0", "--quiet"]
    evaluate.main([*argv, "--no-cache", "--output-dir", str(tmp_path / "runs")])
    (folder,) = (tmp_path / "runs").iterdir()
    run = folders.read_run(folder)
    table, pairs = run.keypoints(), pairs_of_run(run)
    reloaded = np.concatenate([pairs[p].src_kps for p in table["pair_id"].unique()])
    np.testing.assert_allclose(reloaded, table[["src_x", "src_y"]].to_numpy(), atol=1e-4)
