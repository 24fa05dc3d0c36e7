"""Fine-tune SAM with its preset (the original project's entry point); same flags as finetune.py."""

import finetune


def main(argv: list[str] | None = None):
    return finetune.main(argv, script_model="sam")


if __name__ == "__main__":
    finetune.run_main(main)
