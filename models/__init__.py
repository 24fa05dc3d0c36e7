"""Backbones for semantic correspondence: `from models import create_backbone`.

The names below load on first use, so that `import models.registry` (the table of backbones, which
the scripts read for their --help) needs neither torch nor timm.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "models.backbones": ("FAMILY_CLASSES", "Backbone", "TokenState"),
    "models.checkpoints": ("CheckpointError",),
    "models.factory": ("create_backbone",),
    "models.finetuned": ("base_record", "checkpoint_header", "is_finetuned", "save_finetuned", "weights_origin"),
    "models.registry": ("ALIASES", "BACKBONES", "BackboneSpec", "get_spec"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
