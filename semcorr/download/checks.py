"""Checking a file: its size, its sha256, and for model weights that it loads as a complete checkpoint of
its backbone; the record of checked files kept in each destination folder (the manifest)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from tqdm import tqdm

from models.registry import BackboneSpec, get_spec
from semcorr.config.settings import BackboneSettings
from semcorr.download.table import Source
from semcorr.storage.files import DOWNLOAD_RECORD, write_json

MANIFEST = DOWNLOAD_RECORD
CHUNK = 1 << 20


class DownloadError(Exception):
    """A file could not be fetched, checked or unpacked; the message says what to do."""


class Rejected(Exception):
    """A complete file is not the expected one; the message says why."""


def read_manifest(folder: Path) -> dict[str, dict]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: everything in the folder is simply checked again


def write_manifest(folder: Path, manifest: dict[str, dict]) -> None:
    """Atomically replace the folder's manifest."""
    write_json(folder / MANIFEST, manifest)


def human(size: int) -> str:
    """A byte count for people: `26 bytes`, `2.0 MiB`, `1.2 GiB`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def checked_text(checks: list[str]) -> str:
    """What a record's checks amount to: `checked: size, sha256`, or `unverified`."""
    return f"checked: {', '.join(checks)}" if checks else "unverified: nothing published to check it against"


def hash_file(path: Path) -> hashlib._Hash:
    """sha256 of a file's bytes so far (a progress bar for big files)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        path.open("rb") as file,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"hash {path.name}",
            disable=size < 64 * CHUNK,
        ) as bar,
    ):
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest


def hash_problem(digest: str, source: Source, recorded: str | None = None) -> str | None:
    """Why `digest` is not acceptable for `source`, or None when it is."""
    if source.sha256 and digest != source.sha256:
        return f"sha256 is {digest}, expected {source.sha256}"
    if source.sha256_prefix and not digest.startswith(source.sha256_prefix):
        return f"sha256 is {digest}, expected it to start with {source.sha256_prefix}"
    if recorded and digest != recorded:
        return f"sha256 is {digest}, but {recorded} was recorded when it was first fetched"
    return None


def layout_check(name: str) -> str:
    """How the manifest and the messages name the check that a file loads as backbone `name`."""
    return f"loads with every key and shape of {name}"


def expected_state(spec: BackboneSpec) -> dict:
    """The Backbone-layout state that the weights of `spec` must fill: keys and shapes only (meta tensors)."""
    import timm
    import torch

    from models.backbones import FAMILY_CLASSES

    family = FAMILY_CLASSES[spec.family]
    with torch.device("meta"):  # no memory, no initialisation: a ViT-g takes a second
        model = timm.create_model(spec.timm_name, pretrained=False, **family.timm_defaults(spec))
        return family(spec, model, BackboneSettings(model=spec.name), {}).state_dict()


def estimated_size(name: str) -> int:
    """The bytes of the tensors of backbone `name`'s weights (fp32), which a checkpoint file is within
    a fraction of a percent of: a dry run's size where none is published or announced."""
    return sum(t.numel() * 4 for t in expected_state(get_spec(name)).values())


def layout_problem(path: Path, name: str) -> str | None:
    """Why `path` is not a complete weights file of backbone `name` (every key and shape), or None.

    The file is read as the loader reads it (models/checkpoints.py), memory-mapped so that only its
    index and a few small tensors are read: a fine-tuned checkpoint is refused as the loader refuses
    it, and the weights are compared with the backbone as the loader builds it.
    """
    from models import checkpoints

    spec = get_spec(name)
    try:
        raw = checkpoints.load_file(path, spec, mmap=True)
    except checkpoints.CheckpointError as error:  # whatever torch raised, the file does not load
        cause = error.__cause__ or error
        first_sentence = re.split(r"[.\n]", str(cause), maxsplit=1)[0]
        reason = f"{type(cause).__name__}: {first_sentence}"
        return (
            f"it does not load as a PyTorch checkpoint ({reason}); a truncated or interrupted download looks like this"
        )
    try:
        ckpt = checkpoints.as_checkpoint(path, raw, spec)
        checkpoints.check_identity(ckpt, spec)
        checkpoints.check_keys(ckpt, spec, expected_state(spec))
    except checkpoints.CheckpointError as error:  # its advice on where to get the file is this script's own
        return str(error).removesuffix(checkpoints.where_to_get(spec)).strip()
    return None


def check_file(
    path: Path, source: Source, digest: str, recorded: str | None = None, announced: int | None = None
) -> list[str]:
    """Check a complete file (of sha256 `digest`) with all that is known of it; the checks it passed.

    Raises Rejected. `recorded` is the sha256 recorded when it was first fetched, `announced` the
    size the server announced (already compared by the transfer).
    """
    checks = []
    size = path.stat().st_size
    if source.size is not None:
        if size != source.size:
            raise Rejected(f"it has {size:,} bytes, the official file {source.size:,}")
        checks.append("size")
    elif announced is not None:
        checks.append("size announced by the server")
    if problem := hash_problem(digest, source, recorded):
        raise Rejected(problem)
    if source.sha256:
        checks.append("sha256")
    elif source.sha256_prefix:
        checks.append("sha256 prefix in the file name")
    elif recorded:
        checks.append("same sha256 as when first fetched")
    if source.backbone:
        if problem := layout_problem(path, source.backbone):
            raise Rejected(problem)
        checks.append(layout_check(source.backbone))
    return checks


def is_complete(source: Source, folder: Path, record: dict | None) -> bool:
    """Complete and checked with all that is known of it, judged without reading file contents."""
    if source.unpacks_to:
        unpacked = all((folder / path).exists() for path in source.unpacks_to)
        # No record at all means the data was put there by hand: accepted as it is.
        return unpacked and (record is None or bool(record.get("unpacked")))
    path = folder / source.name
    if record is None or "checked" not in record or not path.is_file():
        return False  # (a record without "checked" is from before files were checked for their layout)
    stat = path.stat()
    same_file = (record.get("size"), record.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)
    layout_done = not source.backbone or layout_check(source.backbone) in record["checked"]
    size_ok = source.size is None or stat.st_size == source.size
    return same_file and layout_done and size_ok and hash_problem(record.get("sha256", ""), source) is None


def status(source: Source, record: dict | None) -> str:
    """How a complete source stands: `trn_pairs.csv (checked: size, sha256)`."""
    if record is None:
        return f"{source.name} (content found in place, unverified)"
    return f"{source.name} ({checked_text(record.get('checked', []))})"
