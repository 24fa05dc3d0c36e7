"""The layout a newcomer reads from `ls`: entry scripts and the design's three modules at the root, every
other library module in semcorr/, and imports that only run down the layers (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "training_free_evaluation.py", "evaluate.py", "ensemble_evaluate.py", "grid_search_hyperparams.py",
    "match_pair.py", "report.py", "download.py",
}  # fmt: skip
DESIGN = {"helper_functions.py", "matching_strategies.py", "pck.py"}
# layer of each top-level package or module; a module may import its own layer and those below it
LAYERS = {
    "semcorr.config": 0, "semcorr.data": 0, "semcorr.storage": 0,
    "helper_functions": 1, "matching_strategies": 1, "pck": 1, "models": 1,
    "SPair71k": 1, "pf_pascal": 1, "pf_willow": 1, "ap10k": 1, "spair_u": 1,
    "semcorr.cli": 2, "semcorr.engine": 2, "semcorr.runs": 2, "semcorr.report": 2, "semcorr.viz": 2,
    "semcorr.download": 2, "finetuning": 2,
}  # fmt: skip
FINETUNE_SCRIPTS = {"finetune", "finetune_SAM", "finetune_dinov2", "finetune_dinov3"}


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name (None: not this project's)."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    return 3 if module.removesuffix(".py") + ".py" in SCRIPTS else None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, top-level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def library_files() -> list[Path]:
    folders = ["semcorr", "models", "finetuning", "SPair71k", "pf_pascal", "pf_willow", "ap10k", "spair_u"]
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py")) + [REPO / d for d in sorted(DESIGN)]


def test_the_root_holds_only_the_entry_scripts_and_the_designs_modules():
    assert {p.name for p in REPO.glob("*.py")} == SCRIPTS | DESIGN


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_run_down_the_layers(path):
    own = layer_of(module_name(path))
    upward = [
        f"line {line}: {module} (layer {layer_of(module)})"
        for line, module in imports(path)
        if layer_of(module) is not None and layer_of(module) > own and not module.startswith(module_name(path))
    ]
    scripts = [f"line {line}: {module}" for line, module in imports(path) if module.split(".")[-1] in FINETUNE_SCRIPTS]
    assert not upward, f"{path.name} (layer {own}) imports from above: {upward}"
    assert not scripts, f"{path.name} imports a script: {scripts}"


@pytest.mark.parametrize("script", sorted(SCRIPTS), ids=str)
def test_no_script_imports_another(script):
    others = {s.removesuffix(".py") for s in SCRIPTS} - {script.removesuffix(".py")}
    assert not [m for _, m in imports(REPO / script) if m.split(".")[0] in others]
