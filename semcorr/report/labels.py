"""Labels of runs shown together (report tables, legends, LaTeX, the notebook): each run is named by the
settings that differ among the runs shown, like an experiment tracker's diff of configs; what they all
share is said once, for a caption. Run folders are named from the same fields.

    shown = run_labels(runs)    # runs: results folders (semcorr/runs/folders.Run) or anything with .config, .name
    shown.names                 # one per run, unique among them: ["squash", "resize pad, descriptor bilinear"]
    shown.common                # "dinov2_vits14, zero-shot, 112x112, argmax, spair test, threshold bbox, ..."

A run's config.json (its "settings" and "resolved" values, semcorr/runs/record.py) is flattened to dotted
keys (an ensemble's members as one key per field holding every member's value). FIELDS say how the
known settings read; any other setting of "settings" that differs is named by its key, so a setting added
later shows up by itself. HIDDEN settings never change a result (paths, workers, progress) or are part of
the protocol (its conventions; a convention changed is an override, named with the protocol).
Plain Python only: report.py and the notebook import it before anything heavy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

ORIGINS = {"official": "zero-shot", "fine-tuned": "fine-tuned", "random": "random weights", "custom": "custom weights"}
# settings never named: they change no result, or the protocol names them (a change is one of its overrides)
HIDDEN = (
    "kind", "resolved.", "settings.output.output_dir", "settings.output.save_vis", "settings.output.progress",
    "settings.output.baseline",
    "settings.extract.batch_size", "settings.extract.num_workers", "settings.extract.cache_dir",
    "settings.extract.resample", "settings.extract.coordinates", "settings.extract.feature_dtype",
    "settings.data.pf_shift", "settings.data.clamp_keypoints", "settings.data.thresholds",
    "settings.match.window_border", "settings.ensemble.common_grid", "settings.members.backbone.device",
    "settings.members.backbone.build", "settings.backbone.device", "settings.backbone.build",
    "settings.self_contained", "settings.log_every", "settings.stop_after", "settings.cache_frozen",
    "settings.tensorboard", "settings.pair.", "settings.data.strict", "settings.extract.pad_fill",
    "settings.members.backbone.final_norm", "settings.backbone.final_norm", "settings.flip_masks",
)  # fmt: skip


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a.b': 1}; a list of dicts (ensemble members) -> one key per field holding a tuple
    of their values; any other list -> a tuple (a config as written, or as read back from JSON)."""
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat |= flatten(item, f"{prefix}{key}.")
        return flat
    key = prefix.removesuffix(".")
    if isinstance(value, list | tuple) and value and all(isinstance(v, dict) for v in value):
        members = [flatten(v) for v in value]
        fields = dict.fromkeys(name for member in members for name in member)
        return {f"{key}.{name}": tuple(member.get(name) for member in members) for name in fields}
    return {key: tuple(value) if isinstance(value, list | tuple) else value}


def flat_config(config: dict) -> dict[str, object]:
    """A config.json as one flat dict: 'kind', 'settings.…' and 'resolved.…' keys."""
    return {"kind": config.get("kind"), **flatten(config.get("settings") or {}, "settings."),
            **flatten(config.get("resolved") or {}, "resolved.")}  # fmt: skip


# --- how the known settings read ---------------------------------------------------------------------------


def value_text(value: object) -> str:
    """1e-4 -> '0.0001', (112, 112) -> '112x112', None -> 'none', True -> 'yes'."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "x".join(map(value_text, value)) if len(value) == 2 and all(type(v) is int for v in value) else (
            " ".join(map(value_text, value)))  # fmt: skip
    return str(value)


def members(flat: dict, field: str, single: str | None = None) -> tuple:
    """Every member's value of `field` ('settings.members.<field>'), or a fine-tuning run's one `single`."""
    if f"settings.members.{field}" in flat:
        return flat[f"settings.members.{field}"]
    if f"resolved.members.{field}" in flat:
        return flat[f"resolved.members.{field}"]
    return (flat.get(single),) if single else ()


def joined(texts: list[str | None]) -> str | None:
    """Members' texts: one when every member reads alike, 'a + b' otherwise; None when no member has one."""
    if all(t is None for t in texts):
        return None
    return texts[0] if len(set(texts)) == 1 else " + ".join(t or "-" for t in texts)


def model_text(flat: dict) -> str | None:
    models = members(flat, "backbone.model", "settings.backbone.model")
    weights = members(flat, "weight")
    if len(models) > 1:
        return " + ".join(f"{w:.2f} {m}" for m, w in zip(models, weights, strict=True))
    return models[0] if models else None


def weights_text(flat: dict) -> str | None:
    """'zero-shot', 'fine-tuned best.pt', 'random weights', 'weights my.pth' per member; a fine-tuning run's start."""
    origins = members(flat, "weights_origin", "resolved.weights_origin")
    checkpoints = members(flat, "backbone.checkpoint", "settings.backbone.checkpoint") or (None,) * len(origins)
    files = members(flat, "backbone.weights", "settings.backbone.weights") or (None,) * len(origins)
    loaded = flat.get("resolved.members.weights") or (flat.get("resolved.weights"),) * len(origins)
    files = [file or load for file, load in zip(files, loaded, strict=False)]
    texts = []
    for origin, checkpoint, file in zip(origins, checkpoints, files, strict=False):
        text = ORIGINS.get(origin, origin)
        path = checkpoint or (file if origin == "custom" else None)
        texts.append(f"{text} {PurePath(path).name}" if path and text else text)
    if flat.get("kind") == "finetune" and texts:
        return "from " + (texts[0] or "?").replace("zero-shot", "official weights")
    return " + ".join(map(str, texts)) if texts else None


def checkpoint_run_text(flat: dict) -> str | None:
    """The fine-tuning run a member's checkpoint comes from, by its folder's time: 'of run 20260101-120000'."""
    files = members(flat, "backbone.checkpoint", "settings.backbone.checkpoint")
    runs = [PurePath(f).parent.name.split("_")[0] for f in files if f]  # its folder's time names it
    return f"of run {' + '.join(dict.fromkeys(runs))}" if runs else None


MATCHER_SYMBOLS = {"window": "K", "sigma": "sigma", "temperature": "T"}  # in the order they are shown


def matcher_text(match: dict, uses: list[str] | tuple[str, ...] | None = None) -> str:
    """'argmax', 'wsoftargmax K5 T0.2' or 'geoaware-gaussian sigma5 T0.02': the matcher and the settings it uses
    (config.json's resolved matcher_uses; runs that predate it: window and temperature)."""
    if match.get("matcher") == "argmax":
        return "argmax"
    uses = uses or ("window", "temperature", "window_border")
    shown = [f"{symbol}{match[name]:g}" for name, symbol in MATCHER_SYMBOLS.items() if name in uses and name in match]
    return " ".join([str(match.get("matcher")), *shown])


def match_text(flat: dict) -> str | None:
    match = {k.rpartition(".")[2]: v for k, v in flat.items() if k.startswith("settings.match.")}
    if not match:
        return None
    if flat.get("kind") == "grid":  # its window and temperature are searched
        return match["matcher"]
    return matcher_text(match, flat.get("resolved.matcher_uses"))


def protocol_text(flat: dict) -> str | None:
    """'protocol original', with the settings that left it: 'protocol original (resize=pad)'."""
    name = flat.get("settings.protocol.name")
    overrides = {k.removeprefix("settings.protocol.overrides."): v for k, v in flat.items()
                 if k.startswith("settings.protocol.overrides.")}  # fmt: skip
    if name is None:
        return None
    changed = ", ".join(f"{k}={value_text(v)}" for k, v in overrides.items())
    return f"protocol {name}" + (f" ({changed})" if changed else "")


def data_text(flat: dict) -> str | None:
    dataset, split = flat.get("settings.data.dataset"), flat.get("settings.data.split")
    return f"{dataset} {split}" if dataset else None


def root_text(flat: dict) -> str | None:
    root = flat.get("resolved.data_root") or flat.get("settings.data.root")
    return (
        f"data {PurePath(root).name}"
        if root
        else "data at its default folder"
        if "settings.data.root" in flat
        else None
    )


def per_member(field: str, single: str, text: Callable[[object], str]) -> Callable[[dict], str | None]:
    """A field read per member (or from a fine-tuning run's own setting)."""

    def read(flat: dict) -> str | None:
        values = members(flat, field, single)
        return joined([text(v) for v in values]) if values else None

    return read


def setting(key: str, text: Callable[[object], str]) -> Callable[[dict], str | None]:
    return lambda flat: text(flat[key]) if key in flat else None


@dataclass(frozen=True)
class Field:
    """A label's part: its name, the keys it covers (prefixes) and how it reads (None: absent)."""

    name: str
    covers: tuple[str, ...]
    text: Callable[[dict], str | None]


FIELDS = (
    Field("model", ("settings.members.backbone.model", "settings.members.weight", "settings.backbone.model"),
          model_text),
    Field("weights", ("settings.members.backbone.weights", "settings.members.backbone.checkpoint",
                      "settings.backbone.weights", "settings.backbone.checkpoint"), weights_text),
    Field("checkpoint run", (), checkpoint_run_text),
    Field("layer", ("settings.members.backbone.layer", "settings.backbone.layer"),
          per_member("backbone.layer", "settings.backbone.layer", lambda v: "last layer" if v is None else f"layer {v}")),
    Field("image size", ("settings.members.image_size", "settings.image_size"),
          per_member("image_size", "settings.image_size", value_text)),
    Field("resize", ("settings.members.resize", "settings.resize"),
          per_member("resize", "settings.resize", lambda v: f"resize {v}")),
    Field("precision", ("settings.members.backbone.precision", "settings.backbone.precision"),
          per_member("backbone.precision", "settings.backbone.precision", lambda v: f"precision {v}")),
    Field("matcher", ("settings.match.matcher", "settings.match.window", "settings.match.temperature",
                      "settings.match.sigma"), match_text),
    Field("params", ("settings.params",),
          lambda f: f"K, T of {PurePath(f['settings.params.path']).parent.name}" if f.get("settings.params.path")
          else None),
    Field("descriptor", ("settings.match.descriptor",), setting("settings.match.descriptor", lambda v: f"descriptor {v}")),
    Field("protocol", ("settings.protocol",), protocol_text),
    Field("data", ("settings.data.dataset", "settings.data.split"), data_text),
    Field("layout", ("settings.data.layout",),
          setting("settings.data.layout", lambda v: f"layout {v}" if v is not None else None)),
    Field("data root", ("settings.data.root",), root_text),
    Field("pairs", ("settings.data.limit",),
          setting("settings.data.limit", lambda v: "all pairs" if v is None else f"first {v} pairs")),
    Field("threshold", ("settings.data.pck_norm",), setting("settings.data.pck_norm", lambda v: f"threshold {v}")),
    Field("windows", ("settings.grid.windows",), setting("settings.grid.windows", lambda v: "K " + " ".join(map(str, v)))),
    Field("temperatures", ("settings.grid.temperatures",),
          setting("settings.grid.temperatures", lambda v: "T " + " ".join(f"{t:g}" for t in v))),
)  # fmt: skip


def describe(config: dict) -> dict[str, str]:
    """What a run's config says, field by field, as label parts: FIELDS, then any other setting by its key."""
    flat = flat_config(config)
    parts = {field.name: field.text(flat) for field in FIELDS}
    covered = tuple(prefix for field in FIELDS for prefix in field.covers) + HIDDEN
    for key, value in flat.items():
        if not key.startswith(covered):
            name = key.rpartition(".")[2].replace("_", " ")
            shown = joined([value_text(v) for v in value]) if key.startswith("settings.members.") else value_text(value)
            parts[key] = f"{name} {shown}"
    return {name: text for name, text in parts.items() if text is not None}


# --- labels of runs shown together -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLabels:
    """One label per run, unique among the runs; the parts they all share (for a caption); the fields that differ."""

    names: list[str]
    common: str
    varying: list[str]


LEAD = ("model", "weights")  # what names a run when nothing differs
QUIET = {"last layer", "all pairs", "layout large", "rescale annotations no", "seed 0", "combine similarity",
         "val root none", "soft sigma 0", "jitter 0", "flip no", "kap no", "flip align off"}  # fmt: skip


def run_labels(runs: list, leave_out: tuple[str, ...] = (), unique: bool = True) -> RunLabels:
    """The label of each run (anything with .config and .name, like a results folder's Run): the fields whose
    text differs among `runs`, but those named in `leave_out`; runs that still read alike get their folder's time,
    then its whole name (`unique`; else they share their label)."""
    described = [{k: v for k, v in describe(run.config).items() if k not in leave_out} for run in runs]
    order = {field.name: i for i, field in enumerate(FIELDS)}
    seen = list(dict.fromkeys(name for parts in described for name in parts))
    fields = sorted(seen, key=lambda name: (order.get(name, len(order)), seen.index(name)))
    varying = [name for name in fields if len({parts.get(name) for parts in described}) > 1]
    shown = varying or [name for name in LEAD if name in fields]
    names = [
        ", ".join(parts[name] for name in shown if name in parts) or run.name
        for parts, run in zip(described, runs, strict=True)
    ]
    repeated = {name for name in names if names.count(name) > 1} if unique else set()
    for extra in (lambda run: run.name.split("_")[0], lambda run: run.name) if repeated else ():
        named = [f"{n} ({extra(run)})" if n in repeated else n for n, run in zip(names, runs, strict=True)]
        if len(set(named)) == len(named):
            break
    names = named if repeated else names
    common = ", ".join(t for name, t in (described or [{}])[0].items() if name not in varying and t not in QUIET)
    return RunLabels(names, common, varying)


# --- run folders ---------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A label part as a folder name part: 'fine-tuned best.pt' -> 'fine-tuned-best'."""
    text = re.sub(r"\.(pt|pth|safetensors|bin)\b", "", text).replace(" + ", "+")
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text).strip("-")


def folder_parts(config: dict) -> list[str]:
    """The parts of a run folder's name (after its time): the kind unless an evaluation, the weights (zero-shot,
    fine-tuned best, random, ...), model, image size, data, matcher, and the settings that are not the
    defaults (resize, descriptor, layer, protocol and its overrides)."""
    parts = describe(config)
    kind = config.get("kind")
    flat = flat_config(config)
    models = members(flat, "backbone.model", "settings.backbone.model")
    model = "ensemble_" + "+".join(models) if len(models) > 1 else parts.get("model", "")
    weights = parts.get("weights", "")
    if len(models) > 1:
        weights = "+".join(dict.fromkeys(w.strip() for w in weights.split("+")))
    named = [kind if kind != "evaluation" else "", weights.removeprefix("from official weights"), model,
             parts.get("image size", "").replace(" + ", "+"), parts.get("data", "")]  # fmt: skip
    if kind in ("evaluation", "weight_search"):
        named.append(parts.get("matcher", ""))
    defaults = {"resize": "resize squash", "descriptor": "descriptor nearest", "layer": "last layer"}
    named += [parts[name] for name, usual in defaults.items() if name in parts and parts[name] != usual]
    if flat.get("settings.protocol.name", "default") != "default":
        named.append(f"protocol {flat['settings.protocol.name']}")
    named += [
        f"{k.rpartition('.')[2]}={value_text(v)}"
        for k, v in flat.items()
        if k.startswith("settings.protocol.overrides.")
    ]
    return [slug(part) for part in named if slug(part)]
