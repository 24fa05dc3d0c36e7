"""The README's commands for reproducing the original project's table run the protocol they claim:
each parses, and resolves to `--protocol original` with no override (so report.py can stand the
published number beside its run)."""

from __future__ import annotations

import importlib
import re
import shlex
import warnings
from pathlib import Path

import pytest
from model_factory import tiny_checkpoint

from semcorr.config.settings import EnsembleSettings, EvalSettings, TrainSettings

README = Path(__file__).resolve().parents[1] / "README.md"
FLOWS = {  # script -> (module, function) its main hands the resolved settings to
    "training_free_evaluation": [("semcorr.engine.evaluation", "run_evaluation")],
    "evaluate": [("semcorr.engine.evaluation", "run_evaluation")],
    "grid_search_hyperparams": [("semcorr.engine.grid_search", "run_grid_search")],
    "ensemble_evaluate": [
        ("semcorr.engine.evaluation", "run_evaluation"),
        ("semcorr.engine.ensemble", "run_weight_search"),
    ],
    "finetuning.finetune": [("finetuning.training", "run")],
}


def reproduction_commands() -> list[list[str]]:
    """The python command lines of the README's "Reproducing the original project" code block."""
    section = README.read_text().split("## Reproducing the original project", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    lines = [line.split(" #")[0] for line in block.splitlines() if line.startswith("python ")]
    return [shlex.split(re.sub(r"<([^>]+)>", lambda m: m.group(1).replace(" ", "_"), line))[1:] for line in lines]


def test_the_readme_lists_a_command_for_every_kind_of_row():
    scripts = [argv[0] for argv in reproduction_commands()]
    assert {"training_free_evaluation.py", "finetuning/finetune.py", "evaluate.py", "ensemble_evaluate.py"} <= set(
        scripts
    )
    assert any("--limit" in argv and "264" in argv for argv in reproduction_commands())  # the truncated PF-Pascal row


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder holding the fine-tuned checkpoints the commands name (<dinov2 run>/last.pt, ...)."""
    folder = tmp_path_factory.mktemp("readme")
    for family in ("dinov2", "dinov3", "sam"):
        tiny_checkpoint(folder / f"{family}_run", family).rename(folder / f"{family}_run" / "last.pt")
    return folder


@pytest.mark.parametrize("argv", reproduction_commands(), ids=lambda argv: " ".join(argv[:4]))
def test_each_reproduction_command_runs_the_original_protocol_without_override(argv, runs, monkeypatch):
    monkeypatch.chdir(runs)
    script = argv[0].removesuffix(".py").replace("/", ".")
    calls = []
    for module, flow in FLOWS[script]:
        monkeypatch.setattr(importlib.import_module(module), flow, lambda *args, **kw: calls.append(args))
    main = importlib.import_module(script.replace("finetuning.finetune", "finetuning.command")).main
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no override is warned about
        main(argv[1:])
    (args,) = calls
    settings = args[0]
    assert isinstance(settings, EvalSettings | TrainSettings)
    assert settings.protocol.name == "original" and settings.protocol.overrides == {}
    if script == "ensemble_evaluate":
        assert settings.ensemble == EnsembleSettings(common_grid="coarsest")  # SAM's 32 x 32 grid
