"""One entry point from what a user names (a model and its weights file, or a fine-tuned checkpoint) to a backbone."""

from __future__ import annotations

from dataclasses import fields, replace

from models.backbones import Backbone, from_weights
from models.finetuned import from_checkpoint
from models.registry import get_spec
from semcorr.config.settings import DEFAULT_MODEL, BackboneSettings

SETTING_FIELDS = {f.name for f in fields(BackboneSettings)}


def create_backbone(setting: BackboneSettings | str | None = None, /, **kwargs) -> Backbone:
    """The backbone `setting` describes, timm-style: a model name with BackboneSettings fields as keywords
    (`create_backbone("dinov2", weights="w.pth", device="cuda", precision="bf16")`), or a BackboneSettings
    (the scripts' resolved one). Other keywords reach timm.create_model (e.g. depth=2 for a test model).

    A fine-tuned `checkpoint` names its own model, layer and timm settings: it is refused together with
    `weights`, and with a `model` other than its own or a `layer` whose features differ from its own (DINO's
    last block is its default; SAM's default goes through the neck).
    """
    chosen = {k: v for k, v in kwargs.items() if k in SETTING_FIELDS}
    overrides = {k: v for k, v in kwargs.items() if k not in SETTING_FIELDS}
    if not isinstance(setting, BackboneSettings):  # no model with a checkpoint: the checkpoint's own
        setting = BackboneSettings(model=setting or ("" if chosen.get("checkpoint") else DEFAULT_MODEL), **chosen)
    setting = replace(setting, **chosen)
    if setting.checkpoint is None:
        return from_weights(setting, overrides)
    if setting.weights is not None:
        raise ValueError(
            f"--checkpoint {setting.checkpoint} and --weights {setting.weights} both given: a fine-tuned checkpoint "
            "holds its own weights. Drop --weights, or drop --checkpoint to load a weights file of --model."
        )
    bb = from_checkpoint(replace(setting, layer=None))
    if setting.model and get_spec(setting.model).name != bb.name:
        raise ValueError(
            f"--checkpoint {setting.checkpoint} holds a fine-tuned {bb.name}, not {get_spec(setting.model).name}: "
            "drop --model (a checkpoint names its own model), or give a checkpoint of that model."
        )
    if setting.layer is not None and not bb.gives_features_of(setting.layer):
        neck = " through the neck" if bb.spec.family == "sam" else ""
        trained = f"block {bb.layer}" if bb.layer is not None else f"the last block{neck}"
        raise ValueError(
            f"--checkpoint {setting.checkpoint} was fine-tuned on the features of {trained}; --layer {setting.layer} "
            "would take features that training did not shape. Drop --layer."
        )
    return bb
