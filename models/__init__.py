"""Backbones for semantic correspondence: `from models import load_backbone`."""

from models.backbones import (
    FAMILIES,
    Backbone,
    TokenState,
    load_backbone,
    load_finetuned,
)
from models.checkpoints import CheckpointError, is_finetuned, save_finetuned
from models.registry import ALIASES, BACKBONES, BackboneSpec, get_spec

__all__ = [
    "ALIASES",
    "BACKBONES",
    "FAMILIES",
    "Backbone",
    "BackboneSpec",
    "CheckpointError",
    "TokenState",
    "get_spec",
    "is_finetuned",
    "load_backbone",
    "load_finetuned",
    "save_finetuned",
]
