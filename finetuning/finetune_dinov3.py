"""Fine-tune DINOv3 with its preset (the original project's entry point); same flags as finetune.py."""

import sys

from finetune import main, run_main

if __name__ == "__main__":
    run_main(lambda: main(["--model", "dinov3", *sys.argv[1:]]))
