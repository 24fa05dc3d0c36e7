"""Fetch model weights and benchmark datasets into the folders the code reads by default.

    python download.py --models dinov2 dinov3 sam --datasets spair pf-pascal pf-willow
    python download.py --models dinov2 --datasets pf-willow --dry-run

Every file streams to `<dest>.part` (resumed with an HTTP range request after an interruption; a
transfer that stalls is given up, its bytes kept), then is checked with whatever is known of it
before it moves into place: the size the server announced, the official size and sha256 in the
table below (or the sha256 prefix in Meta's file name), and, for model weights, that it loads as a
complete checkpoint of its backbone (every key and shape). What was checked is said, never more:
a file nothing is known about is reported as unverified. Archives are unpacked after every member
has been checked to stay inside the target folder. The checks passed are recorded in
`.download-manifest.json` in each destination folder, so re-runs skip finished work without
re-reading files (a file is checked again only when its size or mtime changed).

Sources relied on for the dataset URLs:
- SPair-71k: the dataset page, https://cvlab.postech.ac.kr/research/SPair-71k/
- PF-Pascal / PF-Willow images: https://www.di.ens.fr/willow/research/proposalflow/
- pair lists: the ones NCNet ships (github.com/ignacio-rocco/ncnet, datasets/pf-pascal/image_pairs;
  train_pairs.csv is used by NCNet/DHPF/GeoAware-SC as trn_pairs.csv) and the CNNGeometric /
  WeakAlign ones on www.di.ens.fr (test_pairs_pf.csv is PF-Willow's test list).
Model URLs come from models/registry.py. The SAM sizes and sha256 below are the ones that several
public projects record for Meta's files (Meta publishes none; its SAM file names end in the md5
prefix, not a sha256 one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from tqdm import tqdm

from cli import path as expand_path
from cli import positive_float, run_main
from fileio import write_json
from models.registry import ALIASES, BACKBONES, BackboneSpec, get_spec
from pairs import DEFAULT_ROOTS
from settings import REPO_ROOT

MANIFEST = ".download-manifest.json"
CHUNK = 1 << 20
STALL_BYTES = 16 << 10  # a transfer that receives less than this in --timeout seconds has stalled
USER_AGENT = "semantic-correspondence-download/1.0"


@dataclass(frozen=True)
class Source:
    """One file of an item: where to get it and what is known of it.

    `name` is the file name in the item's folder; `urls` are tried in order. `size` (bytes) and
    `sha256` are the official file's, where published. `backbone` names the registered backbone
    whose complete checkpoint the file must be. An archive lists in `unpacks_to` the paths
    (relative to the folder) it must create; it is unpacked into the folder.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    backbone: str | None = None
    unpacks_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """A model checkpoint or a dataset: files that go into one folder.

    `kind` is the command-line option that selects it ("models" or "datasets"). Licence-gated
    files have no urls; `request_url` says where to ask for them.
    """

    key: str
    kind: str
    folder: Path
    sources: tuple[Source, ...]
    request_url: str | None = None


# ---------------------------------------------------------------------------------------------
# The table. Model entries are built from models/registry.py; dataset entries are listed here.
# ---------------------------------------------------------------------------------------------

PROPOSAL_FLOW = "https://www.di.ens.fr/willow/research/proposalflow/dataset/"
CNNGEOMETRIC = "https://www.di.ens.fr/willow/research/cnngeometric/other_resources/"
NCNET_COMMIT = "8f6839c6738d6c51a06c78810ecbbfe21dcd87ac"  # pinned: the hashes below are of this version
NCNET_PAIRS = f"https://raw.githubusercontent.com/ignacio-rocco/ncnet/{NCNET_COMMIT}/datasets/pf-pascal/image_pairs/"
SPAIR = "cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz"

# Official weights files whose size and full sha256 are known, by file name (see the module docstring).
# The others: no size is published, and only DINOv3's file names carry a sha256 prefix.
KNOWN_WEIGHTS: dict[str, tuple[int, str]] = {
    "sam_vit_b_01ec64.pth": (375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "sam_vit_l_0b3195.pth": (1_249_524_607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "sam_vit_h_4b8939.pth": (2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}

DATASET_ITEMS: dict[str, Item] = {
    "spair": Item(
        "spair",
        "datasets",
        DEFAULT_ROOTS["spair"].parent,  # the tarball unpacks to SPair-71k/
        (
            Source(
                "SPair-71k.tar.gz",
                (f"https://{SPAIR}", f"http://{SPAIR}"),
                unpacks_to=("SPair-71k/JPEGImages", "SPair-71k/PairAnnotation", "SPair-71k/Layout"),
            ),
        ),
    ),
    "pf-pascal": Item(
        "pf-pascal",
        "datasets",
        DEFAULT_ROOTS["pf-pascal"],
        (
            Source(
                "PF-dataset-PASCAL.zip",
                (PROPOSAL_FLOW + "PF-dataset-PASCAL.zip",),
                unpacks_to=("PF-dataset-PASCAL/JPEGImages", "PF-dataset-PASCAL/Annotations"),
            ),
            Source(
                "trn_pairs.csv",
                (NCNET_PAIRS + "train_pairs.csv",),
                sha256="e7604e992744706b0ec0ed9fad240b5e0e45f38c13eaf567af0338ec8a50f40f",
                size=277_757,
            ),
            Source(
                "val_pairs.csv",
                (NCNET_PAIRS + "val_pairs.csv", CNNGEOMETRIC + "val_pairs_pf_pascal.csv"),
                sha256="a9dd7f303abc7ee31c51fe73f39923a6880d4dc9aa4d7af38d5f15a7345407f5",
                size=29_131,
            ),
            Source(
                "test_pairs.csv",
                (NCNET_PAIRS + "test_pairs.csv", CNNGEOMETRIC + "test_pairs_pf_pascal.csv"),
            ),
        ),
    ),
    "pf-willow": Item(
        "pf-willow",
        "datasets",
        DEFAULT_ROOTS["pf-willow"],
        (
            Source("PF-dataset.zip", (PROPOSAL_FLOW + "PF-dataset.zip",), unpacks_to=("PF-dataset",)),
            Source("test_pairs.csv", (CNNGEOMETRIC + "test_pairs_pf.csv",)),
        ),
    ),
}


def model_item(spec: BackboneSpec) -> Item:
    """The download entry of one backbone, from its registry spec and KNOWN_WEIGHTS."""
    size, sha256 = KNOWN_WEIGHTS.get(spec.official_file, (None, None))
    source = Source(
        spec.official_file,
        (spec.url,) if spec.url else (),
        sha256=sha256,
        sha256_prefix=None if sha256 else spec.sha256_prefix,  # a full hash supersedes the file name's prefix
        size=size,
        backbone=spec.name,
    )
    return Item(spec.name, "models", spec.default_weights.parent, (source,), spec.request_url)


def build_table(root: Path = REPO_ROOT) -> dict[str, Item]:
    """Every downloadable item by key, with the repository layout re-created under `root`."""
    items = [*(model_item(spec) for spec in BACKBONES.values()), *DATASET_ITEMS.values()]
    return {item.key: replace(item, folder=Path(root) / item.folder.relative_to(REPO_ROOT)) for item in items}


# ---------------------------------------------------------------------------------------------
# Errors, the manifest of checked files, messages
# ---------------------------------------------------------------------------------------------


class DownloadError(Exception):
    """A file could not be fetched, checked or unpacked; the message says what to do."""


class IncompleteDownload(OSError):
    """The connection ended before the announced number of bytes arrived."""


class Stalled(OSError):
    """Bytes arrive too slowly to count as progress (less than STALL_BYTES per --timeout seconds)."""


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


def rerun_hint(item: Item, root: Path | None = None) -> str:
    """The command that fetches `item` again, with the --root it was given."""
    return f"python download.py --{item.kind} {item.key}" + (f" --root {shlex.quote(str(root))}" if root else "")


def human(size: int) -> str:
    """A byte count for people: `26 bytes`, `2.0 MiB`, `1.2 GiB`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def checked_text(checks: list[str]) -> str:
    """What a record's checks amount to: `checked: size, sha256`, or `unverified`."""
    return f"checked: {', '.join(checks)}" if checks else "unverified: nothing published to check it against"


# ---------------------------------------------------------------------------------------------
# Checking a complete file
# ---------------------------------------------------------------------------------------------


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

    from models.backbones import FAMILIES

    family = FAMILIES[spec.family]
    with torch.device("meta"):  # no memory, no initialisation: a ViT-g takes a second
        model = timm.create_model(spec.timm_name, pretrained=False, **family.timm_defaults(spec))
        return family(spec, model, None, None, {}).state_dict()


def estimated_size(name: str) -> int:
    """The bytes of the tensors of backbone `name`'s weights (fp32), which a checkpoint file is within
    a fraction of a percent of: a dry run's size where none is published or announced."""
    from models.registry import get_spec

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


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------


def describe(error: Exception) -> str:
    """A network error in a few words: `HTTP error 404 Not Found`, `[Errno 111] Connection refused`."""
    if isinstance(error, HTTPError):
        return f"HTTP error {error.code} {error.reason}"
    return str(getattr(error, "reason", None) or error)


def content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header such as `bytes 100-199/200`."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def stream(url: str, part: Path, timeout: float) -> tuple[str, int | None]:
    """Fetch `url` into `part`, continuing after the bytes already there; (sha256, announced size).

    Gives up (Stalled) when less than STALL_BYTES arrive in `timeout` seconds; a silent server
    already fails each socket read after `timeout` seconds.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        if error.code != 416 or not have:
            raise
        if content_range(error.headers.get("Content-Range"))[1] == have:
            return hash_file(part).hexdigest(), have  # the previous run got every byte already
        part.unlink()  # the partial file is longer than the remote one: start over
        return stream(url, part, timeout)
    with response:
        start, total = 0, None
        if response.status == 206:
            start, total = content_range(response.headers.get("Content-Range"))
            if start != have:
                part.unlink()
                raise OSError(f"server answered a request for bytes {have}- with bytes {start}-")
        elif response.headers.get("Content-Length"):
            total = int(response.headers["Content-Length"])
        digest = hash_file(part) if start else hashlib.sha256()
        with (
            part.open("ab" if start else "wb") as file,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=part.name[: -len(".part")],
            ) as bar,
        ):
            window_start, window_bytes = time.monotonic(), 0
            while chunk := response.read1(CHUNK):  # what has arrived, without waiting for a full chunk
                file.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                if time.monotonic() - window_start >= timeout:
                    if window_bytes < STALL_BYTES:
                        raise Stalled(
                            f"stalled: {window_bytes} bytes in the last {timeout:g} s, "
                            f"under {STALL_BYTES >> 10} KiB per --timeout"
                        )
                    window_start, window_bytes = time.monotonic(), 0
    size = part.stat().st_size
    if total is not None and size != total:
        raise IncompleteDownload(f"connection closed after {size} of {total} bytes")
    return digest.hexdigest(), total


def download(
    item: Item, source: Source, path: Path, attempts: int, timeout: float, hint: str
) -> tuple[str, str, list[str]]:
    """Fetch `source` to `path` through `path.part`, checked; (sha256, url used, checks passed).

    A dropped connection is resumed up to `attempts` times while it makes progress; a stalled one
    is not retried. Then the next url is tried. A file failing a check is deleted, never moved
    into place.
    """
    part = path.with_name(path.name + ".part")
    errors = []
    for url in source.urls:
        for _ in range(attempts):
            before = part.stat().st_size if part.exists() else 0
            try:
                digest, announced = stream(url, part, timeout)
            except (OSError, HTTPException) as error:
                errors.append(f"{url}: {describe(error)}")
                progressed = part.exists() and part.stat().st_size > before
                if progressed and not isinstance(error, (HTTPError, Stalled)):
                    continue
                break
            try:
                checks = check_file(part, source, digest, announced=announced)
            except Rejected as problem:
                part.unlink()
                errors.append(f"{url}: downloaded file rejected and deleted, {problem}")
                break
            os.replace(part, path)
            return digest, url, checks
        if url != source.urls[-1]:
            part.unlink(missing_ok=True)  # never resume one server's bytes from another
    kept = f"\nThe partial file {part} is kept; re-running resumes it." if part.exists() else ""
    raise DownloadError(
        f"could not download {source.name} for {item.key}:\n  "
        + "\n  ".join(errors)
        + f"{kept}\nManual alternative: download it from "
        + ("that URL" if len(source.urls) == 1 else "one of those URLs")
        + f" on a machine with access, put it at\n  {path}\nand re-run `{hint}` "
        "to check it" + (" and unpack it." if source.unpacks_to else ".")
    )


def remote_size(url: str, timeout: float) -> tuple[int | None, str]:
    """The size a HEAD request announces, for --dry-run: (bytes or None, how to print it)."""
    try:
        request = Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        with urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except (OSError, HTTPException) as error:
        return None, f"size unknown: {describe(error)}"
    if not length:
        return None, "size unknown"
    return int(length), f"{human(int(length))} as the server announces"


# ---------------------------------------------------------------------------------------------
# Safe unpacking
# ---------------------------------------------------------------------------------------------


def inside(root: Path, relative: str) -> bool:
    """Whether `root / relative`, normalised without following links, stays within `root`."""
    return Path(os.path.normpath(root / relative)).is_relative_to(root)


def unsafe_tar_member(member: tarfile.TarInfo, root: Path) -> str | None:
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "is a device or other special file"
    if not inside(root, member.name):
        return "would be written outside the target folder"
    if member.issym() and not inside(root, os.path.join(os.path.dirname(member.name), member.linkname)):
        return f"is a symlink to {member.linkname!r}, outside the target folder"
    if member.islnk() and not inside(root, member.linkname):
        return f"is a hard link to {member.linkname!r}, outside the target folder"
    return None


def skipped(name: str) -> bool:
    """macOS litter found in the PF zips, left out when unpacking."""
    return name.startswith("__MACOSX/") or Path(name).name == ".DS_Store"


def unpack(archive: Path, folder: Path) -> None:
    """Unpack a .zip or .tar(.gz) into `folder`, refusing it whole if any member is unsafe.

    Every member is checked before anything is written; tar members are then extracted with
    the standard library's "data" filter too, which also catches links chained through links.
    """
    root = folder.resolve()

    def refuse(name: str, why: str) -> DownloadError:
        return DownloadError(f"refusing to unpack {archive}: member {name!r} {why}.")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            members = [info for info in bundle.infolist() if not skipped(info.filename)]
            for info in members:
                if not inside(root, info.filename):
                    raise refuse(info.filename, "would be written outside the target folder")
            for info in tqdm(members, desc=f"unpack {archive.name}", unit=" files"):
                bundle.extract(info, root)
        return
    try:
        with tarfile.open(archive) as bundle:
            members = [member for member in bundle.getmembers() if not skipped(member.name)]
            for member in members:
                if why := unsafe_tar_member(member, root):
                    raise refuse(member.name, why)
            for member in tqdm(members, desc=f"unpack {archive.name}", unit=" files"):
                bundle.extract(member, root, filter="data")
    except tarfile.FilterError as error:
        raise refuse(getattr(error, "tarinfo", archive).name, str(error)) from error
    except tarfile.TarError as error:
        raise DownloadError(f"cannot read {archive} as a zip or tar archive: {error}") from error


# ---------------------------------------------------------------------------------------------
# Making an item complete
# ---------------------------------------------------------------------------------------------


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


def gated_message(item: Item, source: Source, path: Path, hint: str) -> str:
    check = f" (its sha256 must start with {source.sha256_prefix})" if source.sha256_prefix else ""
    return (
        f"{item.key} is licence-gated and cannot be downloaded automatically.\n"
        f"  1. Request access at {item.request_url}\n"
        f"  2. Download {source.name} from the link you are sent\n"
        f"  3. Put it at {path}\n"
        f"  4. Re-run `{hint}` to check it{check}"
    )


def ensure_source(
    item: Item,
    source: Source,
    manifest: dict[str, dict],
    *,
    keep_archives: bool,
    attempts: int,
    timeout: float,
    hint: str,
) -> str | None:
    """Make one source complete and record it in `manifest`; what was done, None if nothing."""
    folder, record = item.folder, manifest.get(source.name)
    if is_complete(source, folder, record):
        return None
    path = folder / source.name
    if path.is_file():
        digest = hash_file(path).hexdigest()
        recorded = record.get("sha256") if record else None
        try:
            checks = check_file(path, source, digest, recorded)
        except Rejected as problem:
            raise DownloadError(
                f"{path} is not the expected file: {str(problem).rstrip('.')}.\n"
                f"Delete it and re-run `{hint}` to fetch it again."
            ) from None
        url, action = (record or {}).get("url", "placed by hand"), f"found {source.name}"
    elif not source.urls:
        raise DownloadError(gated_message(item, source, path, hint))
    else:
        folder.mkdir(parents=True, exist_ok=True)
        digest, url, checks = download(item, source, path, attempts, timeout, hint)
        action = f"downloaded {source.name}"
    action += f" ({checked_text(checks)})"
    stat = path.stat()
    manifest[source.name] = {
        "sha256": digest,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "url": url,
        "checked": checks,
    }
    write_manifest(folder, manifest)
    if source.unpacks_to:
        try:
            unpack(path, folder)
        except DownloadError as error:
            path.unlink()
            raise DownloadError(f"{error}\nThe archive {path} was deleted.") from None
        missing = [p for p in source.unpacks_to if not (folder / p).exists()]
        if missing:
            raise DownloadError(
                f"{path} unpacked without {', '.join(missing)}: the archive's layout is not the "
                f"expected one. Check its content and the table in download.py."
            )
        manifest[source.name]["unpacked"] = True
        write_manifest(folder, manifest)
        if not keep_archives:
            path.unlink()
        action += " and unpacked it"
    return action


def ensure(
    item: Item, *, keep_archives: bool = False, attempts: int = 3, timeout: float = 60.0, root: Path | None = None
) -> str:
    """Download, check and unpack whatever of `item` is missing; a one-line account of it.

    `root` is the --root given, repeated in the re-run commands that messages suggest. Every
    file is tried even after one fails; then one DownloadError reports all failures.
    """
    manifest = read_manifest(item.folder)
    hint = rerun_hint(item, root)
    done, errors = [], []
    for source in item.sources:
        try:
            action = ensure_source(
                item, source, manifest, keep_archives=keep_archives, attempts=attempts, timeout=timeout, hint=hint
            )
        except DownloadError as error:
            errors.append(str(error))
            continue
        if action:
            done.append(action)
    if errors:
        raise DownloadError("\n\n".join(errors))
    if done:
        return "; ".join(done)
    return "already present: " + ", ".join(status(source, manifest.get(source.name)) for source in item.sources)


@dataclass
class Step:
    """One file in --dry-run: what would happen to it; the files to `fetch` and their `size` make the total."""

    name: str
    text: str
    fetch: bool = False
    size: int | None = None


def plan(item: Item, timeout: float, root: Path | None = None) -> list[Step]:
    """What `ensure` would do for `item`, one step per file (for --dry-run).

    Sizes come from the table; the size of a file the table has none for is asked with a HEAD request.
    """
    manifest = read_manifest(item.folder)
    steps = []
    for source in item.sources:
        path = item.folder / source.name
        record = manifest.get(source.name)
        if is_complete(source, item.folder, record):
            steps.append(Step(source.name, f"present: {status(source, record)}"))
        elif path.is_file():
            size = human(path.stat().st_size)
            steps.append(Step(source.name, f"{source.name}: present at {path} ({size}), would check it"))
        elif not source.urls:
            steps.append(Step(source.name, gated_message(item, source, path, rerun_hint(item, root))))
        else:
            url = source.urls[0]
            size, size_text = (source.size, human(source.size)) if source.size else remote_size(url, timeout)
            if size is None and source.backbone:
                size = estimated_size(source.backbone)
                size_text = f"about {human(size)}, the size of its tensors"
            unpack_note = f", then unpack into {item.folder}" if source.unpacks_to else ""
            text = f"{source.name}: would fetch {url} ({size_text}) -> {path}{unpack_note}"
            steps.append(Step(source.name, text, fetch=True, size=size))
    return steps


def total_line(steps: list[Step]) -> str:
    """The total of a dry run: the known sizes summed, the files of unknown size named and left out."""
    fetched = [step for step in steps if step.fetch]
    if not fetched:
        return "Nothing to fetch."
    known = [step.size for step in fetched if step.size is not None]
    unknown = [step.name for step in fetched if step.size is None]
    line = f"Total to fetch: {human(sum(known))} in {len(known)} file{'s' * (len(known) != 1)}"
    if unknown:
        line += f"; not counted, size unknown: {', '.join(unknown)}"
    return line


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def folder_arg(text: str) -> Path:
    """A folder flag's value: `~` and environment variables expanded, made absolute."""
    return Path(expand_path(text)).absolute()


def root_problem(root: Path) -> str | None:
    """Why files cannot be written under `root` (a file, or a folder this user may not write), or None."""
    existing = root
    while not os.path.exists(existing):  # False too when a folder on the way may not be read
        existing = existing.parent
    if not existing.is_dir():
        what = f"--root {root} is a file" if existing == root else f"--root {root}: {existing} is a file"
        return f"{what}, not a folder; give a folder (it is created if missing)"
    if not os.access(existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        where = "" if existing == root else f" ({existing} does not let this user create anything in it)"
        return f"--root {root} is not writable{where}; choose a folder you can write to, or change its permissions"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download model weights and benchmark datasets into place, checked.",
        epilog=f"Models: {', '.join(BACKBONES)} (aliases: {', '.join(ALIASES)}).",
    )
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME", help="backbones to fetch")
    parser.add_argument("--datasets", nargs="+", default=[], choices=list(DATASET_ITEMS), help="datasets to fetch")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be fetched, sizes, a total and destinations"
    )
    parser.add_argument(
        "--root",
        type=folder_arg,
        help="put everything under this folder, in the repository layout (default: the repository); "
        "~ and $VARIABLES are expanded",
    )
    parser.add_argument("--keep-archives", action="store_true", help="keep dataset archives after unpacking them")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="give up on a server that answers nothing for this long, or whose transfer stalls: less than "
        f"{STALL_BYTES >> 10} KiB received in this long (the partial file is kept for resuming) (default 60)",
    )
    args = parser.parse_args(argv)
    if not args.models and not args.datasets:
        parser.error("nothing to do: name some --models and/or --datasets")
    try:
        args.models = [get_spec(name).name for name in args.models]
    except ValueError as error:
        parser.error(str(error))
    if problem := root_problem(args.root or REPO_ROOT):
        parser.error(problem)
    return args


def main(argv: list[str] | None = None, table: dict[str, Item] | None = None) -> int:
    """Run the command line; `table` replaces `build_table(--root)` (for tests). Exit status."""
    args = parse_args(argv)
    table = table if table is not None else build_table(args.root or REPO_ROOT)
    keys = list(dict.fromkeys([*args.models, *args.datasets]))
    if args.dry_run:
        steps = []
        for key in keys:
            item_steps = plan(table[key], args.timeout, args.root)
            print(f"{key}:\n  " + "\n  ".join(step.text for step in item_steps))
            steps += item_steps
        print(total_line(steps))
        return 0
    results: list[tuple[str, bool, str]] = []
    for key in keys:
        try:
            outcome = ensure(table[key], keep_archives=args.keep_archives, timeout=args.timeout, root=args.root)
            results.append((key, True, outcome))
        except DownloadError as error:
            print(f"\nERROR: {error}\n", file=sys.stderr)
            results.append((key, False, str(error).splitlines()[0].rstrip(":")))
        except KeyboardInterrupt:
            print("\nInterrupted; re-run the same command to resume.", file=sys.stderr)
            return 130
    width = max(len(key) for key in keys)
    print("\nSummary:")
    for key, ok, outcome in results:
        print(f"  {'ok' if ok else 'FAILED':6}  {key:{width}}  {outcome}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
