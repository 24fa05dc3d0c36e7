"""Fine-tune DINOv2 with its preset (the original project's entry point); same flags as finetune.py."""

import finetune


def main(argv: list[str] | None = None):
    return finetune.main(argv, script_model="dinov2")


if __name__ == "__main__":
    finetune.run_main(main)
