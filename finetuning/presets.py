"""Per-model fine-tuning settings, as data: the original project's best ablations.

Its ablations (SPair-71k val, PCK@0.10, argmax, 1 epoch, batch 1, AdamW lr 1e-4, wd 0.01):
  DINOv2 trainable blocks 1/2/3/4: 57.6 / 60.0 / 56.8 / 49.5
  DINOv3 trainable blocks 1/2/3/4: 59.2 / 67.5 / 68.6 / 65.9; logit scale 1/5/10/15: 30.7 / 53.2 / 63.5 / 67.5
  SAM    trainable blocks 1/2/3/4: 29.2 / 34.1 / 35.8 / 38.0 (still rising; its neck was never trained,
         a bug: here the neck trains with the blocks)
"""

from __future__ import annotations

from dataclasses import dataclass

from models import get_spec


@dataclass(frozen=True)
class Preset:
    """What differs between backbone families when fine-tuning."""

    trainable_blocks: int  # the last N transformer blocks train (plus the final norm, or SAM's neck)
    logit_scale: float  # logits = cosine similarity x scale (1 / temperature)


PRESETS: dict[str, Preset] = {
    "dinov2": Preset(trainable_blocks=2, logit_scale=10.0),
    "dinov3": Preset(trainable_blocks=3, logit_scale=15.0),
    "sam": Preset(trainable_blocks=4, logit_scale=15.0),
}


def preset_for(model: str) -> Preset:
    """The preset of a model name or alias (`dinov2`, `dinov3_vitb16`, `sam_vit_l`, ...), by family."""
    return PRESETS[get_spec(model).family]
