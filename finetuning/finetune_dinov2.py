"""Fine-tune DINOv2 with its preset (the original project's entry point); same flags as finetune.py."""

from finetune import main, run_main

if __name__ == "__main__":
    run_main(lambda: main(script_model="dinov2"))
