"""Fine-tune a backbone for semantic correspondence (one engine; per-model presets in presets.py).

    python finetuning/finetune.py --model dinov3 --data-root SPair71k/SPair-71k
    python finetuning/finetune.py --model sam --trainable-blocks 6 --flip --jitter 0.2
    python finetuning/finetune.py --model dinov3 --protocol original --trainable-blocks 3 --logit-scale 15
    python finetuning/finetune.py --resume results/finetune/20260101-120000_finetune_dinov3_vitb16_512x512_spair-trn
    torchrun --nproc_per_node=4 finetuning/finetune.py --model dinov3 --batch-size 8   # 32 pairs a step

Writes results/finetune/<timestamp>_finetune_<model>_<size>_<data>/: best.pt (best validation PCK) and
last.pt (the latest step, with everything --resume needs), both holding the trained weights on top of the
base weights file (--self-contained: every weight); load them with `python evaluate.py --checkpoint
.../best.pt`. Also config.json, train_log.csv, train_curves.png and TensorBoard event files
(tensorboard --logdir results/finetune; --no-tensorboard: none).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetuning.command import main
from semcorr.cli.errors import run_main

if __name__ == "__main__":
    run_main(main)
