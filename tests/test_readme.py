"""The README's commands for reproducing the original project's table run the protocol they claim:
each parses, and resolves to `--protocol original` with no override (so report.py can stand the
published number beside its run)."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from settings import EVAL_CONVENTIONS, TRAIN_CONVENTIONS, resolve_protocol

README = Path(__file__).resolve().parents[1] / "README.md"
FLOWS = {  # script -> (module, function) its main hands the parsed settings to
    "training_free_evaluation": ("evaluation", "run_evaluation"),
    "evaluate": ("evaluation", "run_evaluation"),
    "grid_search_hyperparams": ("grid_search", "run_grid_search"),
    "ensemble_evaluate": ("ensemble", "run_ensemble"),
    "finetuning.finetune": ("finetuning.training", "run"),
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


@pytest.mark.parametrize("argv", reproduction_commands(), ids=lambda argv: " ".join(argv[:4]))
def test_each_reproduction_command_runs_the_original_protocol_without_override(argv, monkeypatch):
    script = argv[0].removesuffix(".py").replace("/", ".")
    module, flow = FLOWS[script]
    calls = []
    monkeypatch.setattr(importlib.import_module(module), flow, lambda *args, **kw: calls.append(args))
    importlib.import_module(script).main(argv[1:])
    (args,) = calls
    cfg = args[0]
    _, record = resolve_protocol(cfg, TRAIN_CONVENTIONS if script.startswith("finetuning") else EVAL_CONVENTIONS)
    assert record["name"] == "original" and record["overrides"] == {}
    if script == "ensemble_evaluate":
        assert args[1].common_grid is None  # the protocol's coarsest grid
