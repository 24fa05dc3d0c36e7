"""semcorr/cli/: argument types, the member and point syntaxes, what the parsed flags become, how scripts end."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_factory import tiny_checkpoint

import evaluate
from semcorr.cli.errors import run_main
from semcorr.cli.flags import MemberSpec, evaluation_parser, given, image_size, odd_window, parse_member
from semcorr.cli.resolve import resolve

REPO = Path(__file__).resolve().parents[1]


def spec(text):
    return parse_member(text)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("dinov2", MemberSpec("dinov2")),
        ("dinov2:0.25", MemberSpec("dinov2", None, 0.25)),
        ("dinov3:ckpt.pt:0.65", MemberSpec("dinov3", "ckpt.pt", 0.65)),
        ("dinov3:runs/a b/best.pt", MemberSpec("dinov3", "runs/a b/best.pt")),
        ("sam:0.1@1024", MemberSpec("sam", None, 0.1, (1024,))),
        ("dinov2_vitl14:random@448x336", MemberSpec("dinov2_vitl14", "random", None, (448, 336))),
        ("dinov2:C:/w/x.pt:0.5", MemberSpec("dinov2", "C:/w/x.pt", 0.5)),
        ("dinov2:0", MemberSpec("dinov2", None, 0.0)),
    ],
)
def test_member_syntax(text, expected):
    assert spec(text) == expected
    assert spec(str(expected)) == expected  # str() writes the same syntax back


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "expected MODEL"),
        (":0.5", "expected MODEL"),
        ("dinov2::0.5", "expected MODEL"),
        ("dinov2:0.5@big", "image size"),
        ("dinov2:-1", ">= 0"),
        ("dinov2:nan", ">= 0"),
    ],
)
def test_member_syntax_errors(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        spec(text)


def test_image_size_and_window_types():
    assert image_size("518") == (518,) and image_size("448x336") == (448, 336)
    for bad in ("0", "a", "1x2x3", "-5"):
        with pytest.raises(argparse.ArgumentTypeError, match="N or HxW"):
            image_size(bad)
    assert odd_window("5") == 5
    with pytest.raises(argparse.ArgumentTypeError, match="positive odd"):
        odd_window("4")


def test_checkpoint_names_its_own_model_and_excludes_weights(capsys, tmp_path):
    parser = evaluation_parser("test", checkpoint="either")
    ckpt = tiny_checkpoint(tmp_path)
    settings = resolve("evaluation", given(parser.parse_args(["--checkpoint", str(ckpt)])))
    assert settings.member.backbone.model == "dinov2_vitb14" and settings.member.backbone.checkpoint == str(ckpt)
    assert (
        resolve("evaluation", given(parser.parse_args(["--weights", "w.pth"]))).member.backbone.model == "dinov2_vitb14"
    )
    with pytest.raises(ValueError, match="holds a fine-tuned dinov2_vitb14, not sam_vit_b: drop --model"):
        resolve("evaluation", given(parser.parse_args(["--checkpoint", str(ckpt), "--model", "sam"])))
    for argv in (["--checkpoint", "a.pt", "--weights", "b.pth"], []):  # both, or neither
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "not allowed with argument" in capsys.readouterr().err
    zero_shot = evaluation_parser("test")
    with pytest.raises(SystemExit):
        zero_shot.parse_args(["--checkpoint", "best.pt"])  # training_free_evaluation.py takes no checkpoint


def test_run_main_ends_bad_input_with_one_line(monkeypatch, capsys):
    def bad_input():
        raise ValueError("--thing must be > 0, got -1")

    with pytest.raises(SystemExit) as info:
        run_main(bad_input)
    assert info.value.code == "error: --thing must be > 0, got -1"
    script = Path(__file__).resolve().parents[1] / "training_free_evaluation.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--model", "dinov2", "--data-root", "my data"])
    with pytest.raises(SystemExit) as info:
        run_main(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    again = f"python {os.path.relpath(script)} --model dinov2 --data-root 'my data'"  # as a shell takes it
    assert str(info.value.code).startswith("interrupted") and str(info.value.code).endswith(f"continue: {again}")
    monkeypatch.setenv("SEMCORR_TRACEBACK", "1")
    with pytest.raises(ValueError, match="--thing"):
        run_main(bad_input)


@pytest.mark.parametrize(
    "script",
    [
        "training_free_evaluation.py",
        "evaluate.py",
        "grid_search_hyperparams.py",
        "ensemble_evaluate.py",
        "match_pair.py",
        "report.py",
        "download.py",
        "finetuning/finetune.py",
    ],
)
def test_help_needs_neither_torch_nor_pandas(script):
    """--help answers before any heavy module loads (torch and timm take seconds to import)."""
    probe = (
        "import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'timm', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / script)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"


def test_evaluate_needs_a_checkpoint_or_a_weights_file(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--dataset", "pf-willow"])
    assert "one of the arguments --checkpoint --weights is required" in capsys.readouterr().err


def test_the_start_up_of_an_entry_script_is_measured_from_the_process_start():
    """metrics.json's startup_s: the seconds from the process's start to the run's, for an entry script only."""
    probe = (
        "import sys, time; time.sleep(0.3)\n"
        f"sys.modules['__main__'].__file__ = {str(REPO / 'evaluate.py')!r}\n"
        "from semcorr.runs.record import startup_seconds; print(startup_seconds())"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 0.3 <= float(done.stdout) < 30
    from semcorr.runs.record import startup_seconds

    assert startup_seconds() is None  # pytest is no entry script
