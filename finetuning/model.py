"""The model being trained: a frozen trunk and a trainable head, the frozen-trunk cache, the optimiser
and its learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from finetuning import FinetuneError
from helper_functions import ImageDataset, collate_images, raise_unusable
from models import Backbone, TokenState
from semcorr.data.geometry import Preprocess
from semcorr.data.images import ImageRef


class SplitBackbone(nn.Module):
    """The backbone as a frozen trunk (no gradients) and a trainable head; `forward` is the head.

    Only the head's parameters require gradients, so DistributedDataParallel only averages those.
    """

    def __init__(self, backbone: Backbone, trainable_blocks: int, train_neck: bool = True):
        super().__init__()
        used = backbone.last_block + 1
        if not 0 <= trainable_blocks <= used:
            raise FinetuneError(
                f"--trainable-blocks {trainable_blocks} does not fit the {used} blocks that feed "
                f"{backbone.name}'s features (layer {backbone.layer}); choose 0..{used}."
            )
        self.backbone = backbone
        self.split, self.stop = used - trainable_blocks, used
        backbone.requires_grad_(False)
        for module in backbone.trainable_modules(trainable_blocks, neck=train_neck):
            module.requires_grad_(True)

    def trunk(self, images: Tensor) -> TokenState:
        with torch.no_grad():
            return self.backbone.run_blocks(self.backbone.embed(images), 0, self.split)

    def forward(self, state: TokenState) -> Tensor:
        return self.backbone.to_feature_map(self.backbone.run_blocks(state, self.split, self.stop))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class FrozenCache:
    """Each image's frozen-trunk output, computed once, so that an epoch pays only for the head.

    Valid only without augmentation (a flipped or jittered image has other trunk outputs). Kept in
    host memory in the trunk's output dtype; DINOv2-B at 518 px takes about 4 MB per image.
    """

    def __init__(
        self,
        split: SplitBackbone,
        images: list[ImageRef],
        prep: Preprocess,
        *,
        batch_size: int,
        num_workers: int,
        progress: bool,
    ):
        device = split.backbone.device
        loader = DataLoader(
            ImageDataset(images, prep), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_images
        )
        self.tokens: dict[str, Tensor] = {}
        for index, batch in tqdm(loader, desc="frozen features", unit="batch", disable=not progress):
            state = split.trunk(raise_unusable(batch).to(device))
            for i, tokens in zip(index.tolist(), state.tokens.cpu(), strict=True):
                self.tokens[images[i].key] = tokens
        self.grid, self.rope = state.grid, state.rope  # the same for every image of one size

    def states(self, keys: list[str], device: torch.device) -> TokenState:
        tokens = torch.stack([self.tokens[k] for k in keys]).to(device, non_blocking=True)
        return TokenState(tokens, self.grid, self.rope)


def make_optimizer(split: SplitBackbone, lr: float, weight_decay: float, decay: str = "matrices") -> torch.optim.AdamW:
    """AdamW on the trainable parameters; weight decay on matrices only (not on norms and biases),
    or on every trainable tensor (`decay="all"`, the original project)."""
    params = split.trainable_parameters()
    if decay == "all":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if decay != "matrices":
        raise ValueError(f"decay must be 'matrices' or 'all', got {decay!r}")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def learning_rate_factor(schedule: str, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The schedule's factor on the peak learning rate at each step: "warmup-cosine" or "constant"."""
    if schedule == "constant":
        return lambda step: 1.0
    if schedule != "warmup-cosine":
        raise ValueError(f"schedule must be 'warmup-cosine' or 'constant', got {schedule!r}")
    return warmup_cosine(total_steps, warmup_steps)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup to 1 over `warmup_steps`, then cosine to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
