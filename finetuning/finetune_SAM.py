"""Fine-tune SAM with its preset (the original project's entry point); the same flags as finetune.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetuning.command import main as finetune
from semcorr.cli.errors import run_main


def main(argv: list[str] | None = None) -> Path:
    return finetune(argv, script_model="sam")


if __name__ == "__main__":
    run_main(main)
