"""Fine-tuning: one training engine (training.py), per-model presets as data (presets.py).

python finetuning/finetune.py --model dinov3 --data-root SPair71k/SPair-71k
torchrun --nproc_per_node=4 finetuning/finetune.py --model dinov3
"""


class FinetuneError(ValueError):
    """A setting, dataset or resume folder that training cannot use; the message says how to fix it."""
