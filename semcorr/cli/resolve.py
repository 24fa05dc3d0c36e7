"""Where arguments become settings, once: the settings' defaults, then the protocol's conventions, then
the flags given, laid over each other in one step; what that leaves of the protocol is recorded and
warned about once; the result is frozen, complete settings (semcorr/config/settings.py) that the
library receives and never resolves again.

    settings = resolve("evaluation", {"model": "dinov3", "dataset": "pf-pascal", "protocol": "original"})

`given` holds only the flags that were given (the parsers use argparse.SUPPRESS), by flag name; ensemble
members come as MemberSpec values under "members". Everything that depends on a file (a checkpoint's
model, trained image size and resize; --params' window and temperature) or on the machine ("auto"
device and precision) is read here.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from semcorr.cli.flags import MemberSpec, odd_window, shown
from semcorr.cli.flags import temperature as flag_temperature
from semcorr.config.protocols import Protocol, get_protocol
from semcorr.config.settings import (
    AVERAGINGS,
    BENCHMARK_THRESHOLDS,
    DEFAULT_MODEL,
    FAMILIES,
    LAYOUTS,
    Augment,
    BackboneSettings,
    Benchmarks,
    DataSettings,
    EnsembleSettings,
    EvalSettings,
    ExtractSettings,
    GridSettings,
    MatchSettings,
    MemberSettings,
    Optimisation,
    OutputSettings,
    PairSettings,
    ParamsRecord,
    ProtocolRecord,
    TrainSettings,
    WeightSearchSettings,
    dataset_layout,
)

# --- which flag sets which setting ----------------------------------------------------------------------

# flag -> where its value goes in the settings (the same path gives its default)
PATHS = {
    "dataset": "data.dataset", "data_root": "data.root", "split": "data.split", "layout": "data.layout",
    "limit": "data.limit", "pf_shift": "data.pf_shift", "clamp_keypoints": "data.clamp_keypoints",
    "rescale_annotations": "data.rescale_annotations", "pck_norm": "data.pck_norm", "thresholds": "data.thresholds",
    "resample": "extract.resample", "coordinates": "extract.coordinates", "feature_dtype": "extract.feature_dtype",
    "pad_fill": "extract.pad_fill", "strict": "data.strict", "sigma": "match.sigma", "final_norm": "backbone.final_norm",
    "kap": "data.kap",
    "batch_size": "extract.batch_size", "num_workers": "extract.num_workers", "cache_dir": "extract.cache_dir",
    "feature_memory": "extract.feature_memory_gb",
    "matcher": "match.matcher", "window": "match.window", "temperature": "match.temperature",
    "descriptor": "match.descriptor", "window_border": "match.window_border",
    "output_dir": "output.output_dir", "save_vis": "output.save_vis", "seed": "output.seed", "baseline": "output.baseline",
    "progress": "output.progress", "common_grid": "ensemble.common_grid", "combine": "ensemble.combine",
    "model": "backbone.model", "weights": "backbone.weights", "checkpoint": "backbone.checkpoint",
    "layer": "backbone.layer", "build": "backbone.build", "device": "backbone.device", "resize": "member.resize",
}  # fmt: skip
TRAIN_PATHS = {
    **{k: v for k, v in PATHS.items() if not v.startswith(("match.", "ensemble."))},
    "train_split": "data.split", "batch_size": "optimisation.batch_size", "resize": "resize",
    **{f.name: f"optimisation.{f.name}" for f in dataclasses.fields(Optimisation)},
    **{name: name for name in ("trainable_blocks", "logit_scale", "soft_sigma", "val_split", "val_limit", "val_every",
                               "val_alpha", "cache_frozen", "self_contained", "log_every", "stop_after",
                               "tensorboard")},
    "val_data": "val_root", "flip": "augment.flip", "jitter": "augment.jitter",
}  # fmt: skip
GRID_FLAGS = {"windows": "windows", "temperatures": "temperatures", "select_by": "select_by"}
WEIGHT_FLAGS = {"weight_step": "step", "select_by": "select_by"}
PAIR_FLAGS = {"src": "src", "trg": "trg", "points": "points", "grid": "grid", "mutual": "mutual", "heatmap": "heatmaps"}
KINDS = ("evaluation", "grid", "ensemble", "weight_search", "match", "finetune")


def default(root: type, path: str) -> object:
    """The default of the setting at `path` ("extract.batch_size") under dataclass `root`: each default is
    written once, in settings.py (a group without a default of its own takes its class's defaults)."""
    head, _, rest = path.partition(".")
    for f in dataclasses.fields(root):
        if f.name != head:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            return default(typing.get_type_hints(root)[head], rest)
        for part in rest.split(".") if rest else ():
            value = getattr(value, part)
        return value
    raise KeyError(f"{root.__name__} has no setting {path}")


# --- the one resolution ------------------------------------------------------------------------------------


def resolve(kind: str, given: dict) -> object:
    """The settings of a run of `kind` (KINDS) from the flags `given`: defaults, then the protocol (what it starts
    from, then its conventions), then the flags.

    evaluation, ensemble: EvalSettings (Benchmarks of one per dataset, with several datasets); grid: (EvalSettings,
    GridSettings); weight_search: (EvalSettings, WeightSearchSettings); match: (EvalSettings, PairSettings);
    finetune: TrainSettings.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of run {kind!r}: one of {', '.join(KINDS)}")
    runs = benchmark_flags(kind, given)
    if len(runs) > 1:
        return Benchmarks(tuple(resolve(kind, flags) for flags in runs))
    given = runs[0]
    protocol = get_protocol(given.get("protocol") or "default")
    dataset = given.get("dataset") or default(TrainSettings if kind == "finetune" else EvalSettings, "data.dataset")
    given = without_unused(kind, dataset, given, protocol.start(dataset))
    presets = protocol.values(dataset, training=kind == "finetune")
    scored = given.get("val_data") or given.get("data_root") if kind != "match" else None  # the pairs PCK scores
    if dataset == "custom" and scored:  # the file's own boxes, when it has them: no override of the protocol
        presets["pck_norm"] = custom_pck_norm(scored, presets["pck_norm"], warn="pck_norm" not in given)
    layers = Layers(protocol, presets, given, {**protocol.start(dataset), **presets, **given})
    if kind == "finetune":
        return training_settings(layers)
    return evaluation_settings(kind, layers)


def benchmark_flags(kind: str, given: dict) -> list[dict]:
    """The flags of each benchmark of a run: --dataset DATASET[:LAYOUT] ... and --data-root PATH | DATASET=PATH ...
    as one dataset, layout and root each; with several, PCK at BENCHMARK_THRESHOLDS unless --thresholds, and a
    --layout given only to the datasets that have it."""
    entries, roots = given.get("dataset"), given.get("data_root")
    entries = [entries] if entries is None or isinstance(entries, str) else list(entries)
    roots = [roots] if roots is None or isinstance(roots, str) else list(roots)
    named = dict(root.split("=", 1) for root in roots if root and "=" in root.split("/")[0])
    plain = [root for root in roots if root and "=" not in root.split("/")[0]]
    datasets = [entry.partition(":")[0] if entry else entry for entry in entries]
    if len(entries) > 1:
        if kind not in ("evaluation", "ensemble"):
            raise ValueError(f"--dataset takes one dataset for a {kind.replace('_', ' ')}, got {' '.join(entries)}")
        if len(set(entries)) < len(entries):
            raise ValueError(f"--dataset {' '.join(entries)}: a benchmark given twice; give each once")
        if plain:
            raise ValueError(
                f"--data-root {plain[0]}: with several datasets give each folder as DATASET=PATH (e.g. --data-root "
                f"{datasets[0]}={plain[0]})"
            )
    elif len(plain) > 1 or (plain and named):
        raise ValueError(f"--data-root takes one folder for one dataset, got {' '.join(roots)}")
    unknown = sorted(set(named) - set(datasets))
    if unknown:
        among = f"--dataset {' '.join(entries)}" if entries != [None] else "the datasets given (give --dataset)"
        raise ValueError(f"--data-root {unknown[0]}=...: {unknown[0]} is not among {among}")
    runs = []
    for entry, dataset in zip(entries, datasets, strict=True):
        flags = {key: value for key, value in given.items() if key not in ("dataset", "data_root")}
        flags |= {"dataset": dataset} if dataset else {}
        root = named.get(dataset, plain[0] if plain else None)
        flags |= {"data_root": root} if root else {}
        layout = entry.partition(":")[2] if entry else ""
        if layout:
            flags["layout"] = layout
        elif len(entries) > 1 and given.get("layout") not in LAYOUTS.get(dataset, ()):
            flags.pop("layout", None)
        if len(entries) > 1:
            flags.setdefault("thresholds", BENCHMARK_THRESHOLDS)
        runs.append(flags)
    return runs


@dataclass(frozen=True)
class Layers:
    """The flags given, laid over the protocol's values (and those over the defaults), with what it needs from the
    machine: the device, and each backbone family's precision."""

    protocol: Protocol
    presets: dict  # every convention the protocol fixes, by flag name
    given: dict
    values: dict  # the protocol's starting values, its conventions, then the flags given

    @property
    def device(self) -> str:
        return concrete_device(self.values.get("device", "auto"))

    def precision(self, device: str) -> dict[str, str]:
        return concrete_precision(self.values["precision"], device)


def protocol_record(layers: Layers, members: tuple[MemberSettings, ...]) -> ProtocolRecord:
    """The protocol and every setting that left it: a flag given that differs from its convention, a value it
    never ran, and (a protocol that reproduces numbers) an input size or resize other than its own. Warned about once here, under a protocol that
    reproduces another project's numbers (nothing below resolves again)."""
    protocol, presets, given = layers.protocol, layers.presets, layers.given
    used = {name: presets[name] for name in given if name in presets and name not in ("image_size", "resize")}
    used |= {name: value for name, value in protocol.fixed.items() if name in given}
    overrides = {name: given[name] for name in used if given[name] != used[name]}
    if "precision" in given:  # one precision for every family: no override where it is the protocol's own
        overrides.pop("precision", None)
        if any(presets["precision"][family] != given["precision"] for family in families_of(given)):
            overrides["precision"] = given["precision"]
    for member in members if protocol.reproduces else ():  # its numbers were made at its own input
        own_size = protocol_size(member.backbone.model, protocol)
        if member.image_size != own_size:
            overrides["image_size"], used["image_size"] = list(member.image_size), list(own_size)
        if member.resize != protocol.conventions.resize:
            overrides["resize"], used["resize"] = member.resize, protocol.conventions.resize
    for name, value in overrides.items() if protocol.reproduces else ():
        warnings.warn(
            f"{name}={value!r} leaves the {protocol.name} protocol (it used {used[name]!r}): the run is recorded as "
            f"the {protocol.name} protocol with this override, and no published number stands beside it",
            stacklevel=3,
        )
    return ProtocolRecord(protocol.name, overrides)


def protocol_size(model: str, protocol: Protocol) -> tuple[int, int]:
    """The input size a protocol runs `model` at: its own size, else the model's default, on the patch grid."""
    from models import get_spec

    spec = get_spec(model)
    side = protocol.conventions.image_size or spec.default_image_size
    side = max(spec.patch_size, round(side / spec.patch_size) * spec.patch_size)
    return (side, side)


def custom_pck_norm(pairs_file: str, preset: str, warn: bool = True) -> str:
    """The threshold length of a custom pairs file: the target box ("bbox") when every pair gives a target_bbox,
    else the protocol's (said when only some pairs give one). A file that cannot be read is the loader's to
    report: the protocol's then."""
    from semcorr.data.custom_pairs import count_target_boxes
    from semcorr.data.pairs import DatasetError

    try:
        boxed, pairs = count_target_boxes(Path(pairs_file))
    except (DatasetError, OSError):
        return preset
    if pairs and boxed == pairs:
        return "bbox"
    if boxed and warn:
        warnings.warn(
            f"{pairs_file}: {boxed} of {pairs} pairs give a target_bbox, so PCK uses the protocol's threshold "
            f"({preset}); give every pair one to use the boxes, or --pck-norm to choose",
            stacklevel=3,
        )
    return preset


def families_of(given: dict) -> list[str]:
    """The backbone families a run uses (for whether one --precision is the protocol's own)."""
    from models import get_spec

    models = [m.model for m in given.get("members", [])] or [given.get("model") or DEFAULT_MODEL]
    return [get_spec(model).family for model in models if not given.get("checkpoint")] or list(FAMILIES)


def concrete_device(name: str) -> str:
    """ "auto": CUDA when there is one, else the CPU; a device that is not here is refused."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices (cuda:0 ..)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: Apple's MPS is not available here; use --device auto or cpu")
    return name


def concrete_precision(precision: str | dict, device: str) -> dict[str, str]:
    """The autocast precision of each backbone family ("auto": bf16 on CUDA, fp32 elsewhere)."""
    table = precision if isinstance(precision, dict) else dict.fromkeys(FAMILIES, precision)
    return {
        family: ("bf16" if device.startswith("cuda") else "fp32") if p == "auto" else p for family, p in table.items()
    }


def nested(root: type, values: dict, paths: dict[str, str], prefix: str) -> dict:
    """The fields of the group `prefix` ("data", "extract", ...) of `root`: each flag's value, else its default."""
    fields = {}
    for flag, path in paths.items():
        group, _, name = path.rpartition(".")
        if group == prefix:
            fields[name] = values[flag] if flag in values else default(root, path)
    return fields


# --- evaluations -----------------------------------------------------------------------------------------


def evaluation_settings(kind: str, layers: Layers) -> object:
    """EvalSettings (and the kind's own settings) from the layered values."""
    values, device = layers.values, layers.device
    data = None
    if kind != "match" or "pairs" in values:
        data = DataSettings(**nested(EvalSettings, values, PATHS, "data"))
        if kind == "match":
            data = replace(data, dataset="custom", root=values["pairs"], split="pairs", thresholds=())
        data = check_data(data, values)
    extract = ExtractSettings(**nested(EvalSettings, values, PATHS, "extract"))
    if values.get("no_cache"):
        extract = replace(extract, cache_dir=None)
    output = OutputSettings(**nested(EvalSettings, values, PATHS, "output"))
    if values.get("quiet"):
        output = replace(output, progress=False)
    if output.baseline:  # refused before any work, not after it
        from semcorr.runs.folders import check_run, read_run

        check_run(read_run(output.baseline, kinds=("evaluation",)))
    match, params = match_settings(kind, values)
    members = member_settings(kind, layers, device)
    ensemble = EnsembleSettings(**nested(EvalSettings, values, PATHS, "ensemble"))
    flip = flip_settings(values, data)
    record = protocol_record(layers, members)
    settings = EvalSettings(members, data, extract, match, output, ensemble, record, params, **flip)
    if kind == "grid":
        return settings, grid_settings(values, settings)
    if kind == "weight_search":
        if settings.data.kap:
            warnings.warn(
                "--kap is ignored: a weight search scores PCK only (evaluate the weights it finds)", stacklevel=3
            )
        return settings, WeightSearchSettings(
            **{name: values[flag] for flag, name in WEIGHT_FLAGS.items() if flag in values}
        )
    if kind == "match":
        return settings, PairSettings(**{name: values[flag] for flag, name in PAIR_FLAGS.items() if flag in values})
    return settings


def flip_settings(values: dict, data: DataSettings | None) -> dict[str, str | None]:
    """--flip-align and, for "mask", the masks' folder (default: the dataset's features/, where GeoAware-SC's
    preprocess_mask_sam.py writes them)."""
    from semcorr.data.datasets import default_root

    mode = values.get("flip_align", default(EvalSettings, "flip_align"))
    if mode != "mask":
        return {"flip_align": mode, "flip_masks": None}
    root = Path(data.root) if data.root is not None else default_root(data.dataset)
    return {"flip_align": mode, "flip_masks": values.get("flip_masks") or str(root / "features")}


def check_data(data: DataSettings, values: dict) -> DataSettings:
    """Thresholds given once each; the layout one of the dataset's, its default where none is given (one given for
    a dataset without layouts was dropped by without_unused)."""
    twice = sorted({f"{t:g}" for t in data.thresholds if data.thresholds.count(t) > 1})
    if twice:
        raise ValueError(f"--thresholds: {', '.join(twice)} given more than once; give each alpha once")
    layouts = LAYOUTS.get(data.dataset, ())
    if "layout" in values and layouts and data.layout not in layouts:
        raise ValueError(f"--layout {data.layout}: {data.dataset} has the layouts {', '.join(layouts)}")
    layout = data.layout if data.layout in layouts else dataset_layout(data.dataset)
    return replace(data, thresholds=tuple(data.thresholds), layout=layout)


def match_settings(kind: str, values: dict) -> tuple[MatchSettings, ParamsRecord | None]:
    """The matcher, its K and T (from --params: a grid search's best, and the setting it searched with)."""
    import matching_strategies

    fields = nested(EvalSettings, values, PATHS, "match")
    params = None
    if "params" in values:
        if values.get("matcher") == "argmax" or "window" in values or "temperature" in values:
            raise ValueError(
                "--params sets the matcher's window and temperature: drop --matcher argmax, --window and "
                "--temperature, or drop --params"
            )
        alpha = values.get("params_alpha", default(ParamsRecord, "alpha"))
        matcher, window, temperature, searched = read_best_parameters(values["params"], alpha)
        fields |= {"matcher": values.get("matcher", matcher), "window": window, "temperature": temperature}
        params = ParamsRecord(values["params"], alpha, searched)
    elif kind == "grid":
        fields["matcher"] = values.get("matcher", "wsoftargmax")
    if fields["matcher"] not in matching_strategies.MATCHERS:
        raise ValueError(
            f"--matcher {fields['matcher']!r} is not a matcher: choose one of {', '.join(matching_strategies.MATCHERS)}"
        )
    return MatchSettings(**fields), params


def read_best_parameters(path: str, alpha: float) -> tuple[str, int, float, dict]:
    """The matcher, window and temperature a grid search found best at PCK@alpha (its best_parameters.json),
    and the setting it searched with."""
    import json

    what = "a best_parameters.json written by grid_search_hyperparams.py"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        found = {key: (entry["window"], entry["temperature"]) for key, entry in data["best"].items()}
        matcher = str(data.get("matcher", "wsoftargmax"))  # the only windowed matcher of older searches
    except FileNotFoundError:
        raise FileNotFoundError(f"--params: no file {path} (expected {what})") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"--params: {path} is not {what} ({type(err).__name__}: {err})") from None
    if f"{alpha:g}" not in found:
        raise ValueError(
            f"--params: {path} has best parameters for alpha {', '.join(found)}, not {alpha:g}; "
            "choose one of those with --params-alpha"
        )
    searched = {key: data[key] for key in ("model", "image_size", "grid") if key in data}
    window, temperature = found[f"{alpha:g}"]
    window = params_value(window, odd_window, f"{path}, best.{alpha:g}.window")
    return matcher, window, params_value(temperature, flag_temperature, f"{path}, best.{alpha:g}.temperature"), searched


def params_value(value: object, check: Callable[[str], object], where: str) -> object:
    """A --params file's window or temperature held to its flag's rule (an odd whole window, a temperature >= 1e-4):
    a window of 3.7 is refused, not truncated."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise argparse.ArgumentTypeError(f"must be a number, got {value!r}")
        return check(str(int(value)) if isinstance(value, float) and value.is_integer() else str(value))
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"--params: {where}: {err}") from None


def member_settings(kind: str, layers: Layers, device: str) -> tuple[MemberSettings, ...]:
    """Each member: its backbone (a checkpoint's own model), input size and resize, and normalised weight."""
    from models import is_finetuned

    values = layers.values
    specs = values.get("members") or [MemberSpec(values.get("model") or DEFAULT_MODEL, values.get("weights"))]
    if kind == "weight_search":  # the search sets the weights
        specs = [replace(spec, weight=None) for spec in specs]
    single = not values.get("members")
    members = []
    for spec, weight in zip(specs, normalised_weights(specs), strict=True):
        if single:
            checkpoint = values.get("checkpoint")
        else:
            checkpoint = spec.weights if spec.weights and is_finetuned(spec.weights) else None
        backbone = BackboneSettings(
            model=spec.model if not (single and checkpoint and "model" not in values) else "",
            weights=None if checkpoint else spec.weights,
            checkpoint=checkpoint,
            layer=values.get("layer") if single else None,
            build=values["build"],
            device=device,
        )
        members.append(member(backbone, spec.image_size or layers.given.get("image_size"), weight, layers, device))
    return tuple(members)


def member(
    backbone: BackboneSettings, size: tuple[int, ...] | None, weight: float, layers: Layers, device: str
) -> MemberSettings:
    """A member with everything filled: the checkpoint's model, the family's precision and final norm, the input
    size (given, else the protocol's, else the checkpoint's trained one, else the model's default) rounded to the
    patch grid (said when it changes), and the resize (given, else the checkpoint's unless a protocol that
    reproduces numbers fixes it, else the protocol's)."""
    from models import checkpoint_header, get_spec

    trained = {}
    if backbone.checkpoint:
        header = checkpoint_header(backbone.checkpoint, backbone.model or None)
        if backbone.model and get_spec(backbone.model).name != header["backbone"]:
            raise ValueError(
                f"--checkpoint {backbone.checkpoint} holds a fine-tuned {header['backbone']}, not "
                f"{get_spec(backbone.model).name}: drop --model (a checkpoint names its own model), or give a "
                "checkpoint of that model."
            )
        backbone = replace(backbone, model=header["backbone"])
        trained = header["trained"]
    spec = get_spec(backbone.model)
    norm = final_norm(spec.family, layers)
    if backbone.checkpoint and layers.given.get("final_norm", header["final_norm"]) != header["final_norm"]:
        raise ValueError(
            f"--checkpoint {backbone.checkpoint} was fine-tuned on features {'with' if header['final_norm'] else 'without'}"
            " the final norm; drop --final-norm / --no-final-norm (a checkpoint evaluates as it was trained)"
        )
    backbone = replace(
        backbone,
        model=spec.name,
        precision=layers.precision(device)[spec.family],
        final_norm=header["final_norm"] if backbone.checkpoint else norm,
    )
    conventions = layers.protocol.conventions
    own_size = [conventions.image_size] if conventions.image_size else None
    sides = tuple(size or own_size or trained.get("image_size") or (spec.default_image_size,))
    sides = sides * 2 if len(sides) == 1 else sides
    rounded = tuple(max(spec.patch_size, round(s / spec.patch_size) * spec.patch_size) for s in sides)
    if size and rounded != sides:
        warnings.warn(
            f"--image-size {'x'.join(map(str, size))} is not a multiple of {spec.name}'s {spec.patch_size}-pixel patch: "
            f"{rounded[0]}x{rounded[1]} is used",
            stacklevel=3,
        )
    if min(rounded) < 2 * spec.patch_size:
        raise ValueError(
            f"--image-size {'x'.join(map(str, sides))} gives a {rounded[0] // spec.patch_size}x"
            f"{rounded[1] // spec.patch_size} patch grid with {spec.patch_size}-pixel patches: at least 2 patches "
            f"per side are needed (>= {2 * spec.patch_size})"
        )
    trained_resize = None if layers.protocol.reproduces else trained.get("resize")
    resize = layers.given.get("resize") or trained_resize or conventions.resize
    return MemberSettings(backbone, rounded, resize, weight)


def final_norm(family: str, layers: Layers) -> bool:
    """Whether a family's features pass its final LayerNorm: the protocol's choice for DINO; SAM's features come
    from its neck (--layer takes a block's raw output)."""
    if family != "sam":
        return layers.values["final_norm"]
    if layers.given.get("final_norm") is False:
        raise ValueError("--no-final-norm applies to DINO backbones; SAM's features come from its neck (--layer N "
                         "takes block N's raw output)")  # fmt: skip
    return True


def normalised_weights(specs: list[MemberSpec]) -> list[float]:
    """The members' weights divided by their sum (equal weights when none is given); any weight can be huge."""
    given = [s.weight for s in specs]
    if all(w is None for w in given):
        return [1.0 / len(specs)] * len(specs)
    if any(w is None for w in given):
        missing = ", ".join(str(s) for s in specs if s.weight is None)
        raise ValueError(f"give an ensemble weight to every member or to none; {missing} has none (e.g. dinov2:0.3)")
    if not all(math.isfinite(w) and w >= 0 for w in given):
        raise ValueError(f"ensemble weights must be finite numbers >= 0, got {', '.join(map(str, given))}")
    largest = max(given)
    if largest <= 0:
        raise ValueError("the ensemble weights sum to 0: give at least one member a positive weight")
    scaled = [w / largest for w in given]  # 1e308 + 1e308 would overflow
    return [w / sum(scaled) for w in scaled]


def weight_search_settings(values: dict, settings: EvalSettings) -> WeightSearchSettings:
    """The simplex grid's step (one that divides 1); the members' own weights are set aside (said)."""
    from semcorr.engine.ensemble import simplex_weights

    search = WeightSearchSettings(**{name: values[flag] for flag, name in WEIGHT_FLAGS.items() if flag in values})
    simplex_weights(len(settings.members), search.step)
    if any(spec.weight is not None for spec in values["members"]):
        warnings.warn("the members' weights are ignored: --search-weights searches them", stacklevel=3)
    return search


def grid_settings(values: dict, settings: EvalSettings) -> GridSettings:
    """The grid's windows and temperatures (each once), the averaging that picks the best cell; a search on the
    test split is said."""
    import matching_strategies

    grid = GridSettings(**{name: tuple(values[flag]) if isinstance(values[flag], list) else values[flag]
                           for flag, name in GRID_FLAGS.items() if flag in values})  # fmt: skip
    for flag, cells in (("--windows", grid.windows), ("--temperatures", grid.temperatures)):
        twice = sorted({f"{c:g}" for c in cells if cells.count(c) > 1})
        if twice:
            raise ValueError(f"{flag}: {', '.join(twice)} given more than once; give each value once")
    if grid.select_by not in AVERAGINGS:
        raise ValueError(f"--select-by must be one of {', '.join(AVERAGINGS)}, got {grid.select_by!r}")
    uses = matching_strategies.MATCHERS[settings.match.matcher].uses
    if not {"window", "temperature"} <= set(uses):
        raise ValueError(
            f"--matcher {settings.match.matcher} has no window and temperature to search; choose one of "
            + ", ".join(n for n, m in matching_strategies.MATCHERS.items() if {"window", "temperature"} <= set(m.uses))
        )
    if settings.data.split == "test":
        warnings.warn(
            "the grid search tunes K and T on the test split: numbers evaluated on it with these K and T are "
            "optimistic; search on --split val and evaluate on test",
            stacklevel=3,
        )
    return grid


def without_unused(kind: str, dataset: str, given: dict, starts: dict) -> dict:
    """The flags given, less those this run would not use, each said in one warning line: config.json then records
    what the run used (and no protocol override is recorded for them). `starts`: the protocol's starting values."""
    from semcorr.data.datasets import ONE_BASED_DATASETS

    unused = unused_matcher_flags(kind, given, starts)
    if "layout" in given and dataset not in LAYOUTS:
        unused["layout"] = f"{dataset} has no layouts ({', '.join(LAYOUTS)} have)"
    if "pf_shift" in given and dataset not in ONE_BASED_DATASETS:
        unused["pf_shift"] = (
            f"{dataset}'s coordinates are 0-based already (it applies to {', '.join(ONE_BASED_DATASETS)})"
        )
    if "params_alpha" in given and "params" not in given:
        unused["params_alpha"] = "it picks the K and T of a --params file, and none is given"
    if "cache_dir" in given and given.get("no_cache"):
        unused["cache_dir"] = "--no-cache turns the feature cache off"
    if "flip_masks" in given and given.get("flip_align") != "mask":
        unused["flip_masks"] = "it is for --flip-align mask"
    for name, why in unused.items():
        value = given[name]
        flag = f"--{'no-' if value is False else ''}{name.replace('_', '-')}" + (
            "" if isinstance(value, bool) else f" {shown(value)}"
        )
        warnings.warn(f"{flag} ignored: {why}", stacklevel=3)
    return {name: value for name, value in given.items() if name not in unused}


def unused_matcher_flags(kind: str, given: dict, starts: dict) -> dict[str, str]:
    """The matcher parameters given that the run's matcher does not use, and why."""
    import matching_strategies

    windowed = kind == "grid" or "params" in given  # a grid search's, or --params' window soft-argmax
    fallback = "wsoftargmax" if windowed else default(EvalSettings, "match.matcher")
    matcher = given.get("matcher") or starts.get("matcher") or fallback
    if matcher not in matching_strategies.MATCHERS:
        return {}  # refused with the list of matchers (match_settings)
    uses = matching_strategies.MATCHERS[matcher].uses
    return {
        name: f"--matcher {matcher} does not use it"
        for name in ("window", "temperature", "window_border", "sigma")
        if name in given and name not in uses
    }


# --- fine-tuning -----------------------------------------------------------------------------------------


def training_settings(layers: Layers) -> TrainSettings:
    """TrainSettings from the layered values: the model's preset where not given, the protocol's optimisation."""
    from finetuning.presets import preset_for

    values, device = layers.values, layers.device
    if values.get("cache_frozen") and (values.get("flip") or values.get("jitter", 0) > 0):
        raise ValueError(
            "--cache-frozen keeps each image's frozen-block output, which flipping or photometric jitter "
            "would change: drop --flip / --jitter, or drop --cache-frozen."
        )
    backbone = BackboneSettings(
        model=values.get("model") or ("" if values.get("checkpoint") else DEFAULT_MODEL),
        weights=values.get("weights"),
        checkpoint=values.get("checkpoint"),
        build=values["build"],
        device=device,
    )
    first = member(backbone, layers.given.get("image_size"), 1.0, layers, device)
    preset = preset_for(first.backbone.model)
    fields = {
        path: values[flag] if flag in values else default(TrainSettings, path)
        for flag, path in TRAIN_PATHS.items()
        if "." not in path and path != "resize"
    }
    fields |= {"trainable_blocks": values.get("trainable_blocks", preset.trainable_blocks),
               "logit_scale": values.get("logit_scale", preset.logit_scale)}  # fmt: skip
    data = DataSettings(**nested(TrainSettings, values, TRAIN_PATHS, "data"))
    data = replace(check_data(data, values), thresholds=tuple(sorted({*data.thresholds, fields["val_alpha"]})))
    optimisation = nested(TrainSettings, values, TRAIN_PATHS, "optimisation")
    extract = ExtractSettings(**nested(TrainSettings, values, TRAIN_PATHS, "extract"))
    output = OutputSettings(**nested(TrainSettings, values, TRAIN_PATHS, "output"))
    if values.get("quiet"):
        output = replace(output, progress=False)
    return TrainSettings(
        backbone=first.backbone,
        image_size=first.image_size,
        resize=first.resize,
        data=data,
        augment=Augment(**nested(TrainSettings, values, TRAIN_PATHS, "augment")),
        optimisation=Optimisation(**optimisation),
        extract=extract,
        output=output,
        protocol=protocol_record(layers, (first,)),
        **fields,
    )
