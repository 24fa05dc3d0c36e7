"""Fetch model weights and benchmark datasets into the folders the code reads by default.

    python download.py --models dinov2 dinov3 sam --datasets spair pf-pascal pf-willow
    python download.py --models dinov2 --datasets pf-willow --dry-run

Every file streams to `<dest>.part` (resumed with an HTTP range request after an interruption),
is checked against the size the server announced and the sha256 in the table below (or the hash
prefix in Meta's file name), and only then moves into place. Archives are unpacked after every
member has been checked to stay inside the target folder. What was verified is recorded in
`.download-manifest.json` in each destination folder, so re-runs skip finished work without
re-hashing (a file is hashed again only when its size or mtime changed).

Sources relied on for the dataset URLs:
- SPair-71k: the dataset page, https://cvlab.postech.ac.kr/research/SPair-71k/
- PF-Pascal / PF-Willow images: https://www.di.ens.fr/willow/research/proposalflow/
- pair lists: the ones NCNet ships (github.com/ignacio-rocco/ncnet, datasets/pf-pascal/image_pairs;
  train_pairs.csv is used by NCNet/DHPF/GeoAware-SC as trn_pairs.csv) and the CNNGeometric /
  WeakAlign ones on www.di.ens.fr (test_pairs_pf.csv is PF-Willow's test list).
Model URLs come from models/registry.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tarfile
import zipfile
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from tqdm import tqdm

from fileio import write_json
from models.registry import BACKBONES, BackboneSpec, get_spec
from pairs import DEFAULT_ROOTS
from settings import REPO_ROOT

MANIFEST = ".download-manifest.json"
CHUNK = 1 << 20
USER_AGENT = "semantic-correspondence-download/1.0"


@dataclass(frozen=True)
class Source:
    """One file of an item: where to get it and what it must hash to.

    `name` is the file name in the item's folder; `urls` are tried in order. An archive lists in
    `unpacks_to` the paths (relative to the folder) it must create; it is unpacked into the folder.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    sha256_prefix: str | None = None
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
            ),
            Source(
                "val_pairs.csv",
                (NCNET_PAIRS + "val_pairs.csv", CNNGEOMETRIC + "val_pairs_pf_pascal.csv"),
                sha256="a9dd7f303abc7ee31c51fe73f39923a6880d4dc9aa4d7af38d5f15a7345407f5",
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
    """The download entry of one backbone, from its registry spec."""
    source = Source(
        spec.official_file,
        (spec.url,) if spec.url else (),
        sha256_prefix=spec.sha256_prefix,
    )
    return Item(spec.name, "models", spec.default_weights.parent, (source,), spec.request_url)


def build_table(root: Path = REPO_ROOT) -> dict[str, Item]:
    """Every downloadable item by key, with the repository layout re-created under `root`."""
    items = [*(model_item(spec) for spec in BACKBONES.values()), *DATASET_ITEMS.values()]
    return {item.key: replace(item, folder=Path(root) / item.folder.relative_to(REPO_ROOT)) for item in items}


# ---------------------------------------------------------------------------------------------
# Errors and the manifest of verified files
# ---------------------------------------------------------------------------------------------


class DownloadError(Exception):
    """A file could not be fetched, verified or unpacked; the message says what to do."""


class IncompleteDownload(OSError):
    """The connection ended before the announced number of bytes arrived."""


def read_manifest(folder: Path) -> dict[str, dict]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: everything in the folder is simply verified again


def write_manifest(folder: Path, manifest: dict[str, dict]) -> None:
    """Atomically replace the folder's manifest."""
    write_json(folder / MANIFEST, manifest)


def rerun_hint(item: Item) -> str:
    return f"python download.py --{item.kind} {item.key}"


# ---------------------------------------------------------------------------------------------
# Hashing
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
            desc=f"verify {path.name}",
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
        return f"sha256 is {digest}, but {recorded} was recorded when it was first verified"
    return None


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


def stream(url: str, part: Path, timeout: float) -> str:
    """Fetch `url` into `part`, continuing after the bytes already there; the file's sha256."""
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
            return hash_file(part).hexdigest()  # the previous run got every byte already
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
            while chunk := response.read(CHUNK):
                file.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise IncompleteDownload(f"connection closed after {size} of {total} bytes")
    return digest.hexdigest()


def download(item: Item, source: Source, path: Path, attempts: int, timeout: float) -> tuple[str, str]:
    """Fetch `source` to `path` through `path.part`, verified; (sha256, url used).

    A dropped connection is resumed up to `attempts` times while it makes progress; then the
    next url is tried. A file failing its hash check is deleted, never moved into place.
    """
    part = path.with_name(path.name + ".part")
    errors = []
    for url in source.urls:
        for _ in range(attempts):
            before = part.stat().st_size if part.exists() else 0
            try:
                digest = stream(url, part, timeout)
            except (OSError, HTTPException) as error:
                errors.append(f"{url}: {describe(error)}")
                progressed = part.exists() and part.stat().st_size > before
                if progressed and not isinstance(error, HTTPError):
                    continue
                break
            problem = hash_problem(digest, source)
            if problem is None:
                os.replace(part, path)
                return digest, url
            part.unlink()
            errors.append(f"{url}: downloaded file rejected and deleted, {problem}")
            break
        if url != source.urls[-1]:
            part.unlink(missing_ok=True)  # never resume one server's bytes from another
    kept = f"\nThe partial file {part} is kept; re-running resumes it." if part.exists() else ""
    raise DownloadError(
        f"could not download {source.name} for {item.key}:\n  "
        + "\n  ".join(errors)
        + f"{kept}\nManual alternative: download it from "
        + ("that URL" if len(source.urls) == 1 else "one of those URLs")
        + f" on a machine with access, put it at\n  {path}\nand re-run `{rerun_hint(item)}` "
        "to verify it" + (" and unpack it." if source.unpacks_to else ".")
    )


def remote_size(url: str, timeout: float) -> str:
    """The size a HEAD request announces, for --dry-run."""
    try:
        request = Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        with urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except (OSError, HTTPException) as error:
        return f"size unknown: {describe(error)}"
    if not length:
        return "size unknown"
    size = int(length)
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"


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
    """Complete and verified, judged without reading file contents."""
    if source.unpacks_to:
        unpacked = all((folder / path).exists() for path in source.unpacks_to)
        # No record at all means the data was put there by hand: accepted as it is.
        return unpacked and (record is None or bool(record.get("unpacked")))
    path = folder / source.name
    if record is None or not path.is_file():
        return False
    stat = path.stat()
    same_file = (record.get("size"), record.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)
    return same_file and hash_problem(record.get("sha256", ""), source) is None


def gated_message(item: Item, source: Source, path: Path) -> str:
    check = f" (its sha256 must start with {source.sha256_prefix})" if source.sha256_prefix else ""
    return (
        f"{item.key} is licence-gated and cannot be downloaded automatically.\n"
        f"  1. Request access at {item.request_url}\n"
        f"  2. Download {source.name} from the link you are sent\n"
        f"  3. Put it at {path}\n"
        f"  4. Re-run `{rerun_hint(item)}` to verify it{check}"
    )


def ensure_source(
    item: Item,
    source: Source,
    manifest: dict[str, dict],
    *,
    keep_archives: bool,
    attempts: int,
    timeout: float,
) -> str | None:
    """Make one source complete and record it in `manifest`; what was done, None if nothing."""
    folder, record = item.folder, manifest.get(source.name)
    if is_complete(source, folder, record):
        return None
    path = folder / source.name
    if path.is_file():
        digest = hash_file(path).hexdigest()
        recorded = record.get("sha256") if record else None
        if problem := hash_problem(digest, source, recorded):
            raise DownloadError(
                f"{path} is not the expected file: {problem}.\n"
                f"Delete it and re-run `{rerun_hint(item)}` to fetch it again."
            )
        url, action = (record or {}).get("url", "placed by hand"), f"verified {source.name}"
    elif not source.urls:
        raise DownloadError(gated_message(item, source, path))
    else:
        folder.mkdir(parents=True, exist_ok=True)
        digest, url = download(item, source, path, attempts, timeout)
        action = f"downloaded {source.name}"
    stat = path.stat()
    manifest[source.name] = {
        "sha256": digest,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "url": url,
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


def ensure(item: Item, *, keep_archives: bool = False, attempts: int = 3, timeout: float = 60.0) -> str:
    """Download, verify and unpack whatever of `item` is missing; a one-line account of it.

    Every file is tried even after one fails; then one DownloadError reports all failures.
    """
    manifest = read_manifest(item.folder)
    done, errors = [], []
    for source in item.sources:
        try:
            action = ensure_source(
                item, source, manifest, keep_archives=keep_archives, attempts=attempts, timeout=timeout
            )
        except DownloadError as error:
            errors.append(str(error))
            continue
        if action:
            done.append(action)
    if errors:
        raise DownloadError("\n\n".join(errors))
    return "; ".join(done) or "already present and verified"


def plan(item: Item, timeout: float) -> list[str]:
    """What `ensure` would do for `item`, one line per file (for --dry-run)."""
    manifest = read_manifest(item.folder)
    lines = []
    for source in item.sources:
        path = item.folder / source.name
        record = manifest.get(source.name)
        if is_complete(source, item.folder, record):
            placed = source.unpacks_to and record is None
            lines.append(f"{source.name}: " + ("content found in place" if placed else "present and verified"))
        elif path.is_file():
            lines.append(f"{source.name}: present at {path}, would verify it")
        elif not source.urls:
            lines.append(gated_message(item, source, path))
        else:
            unpack_note = f", then unpack into {item.folder}" if source.unpacks_to else ""
            url = source.urls[0]
            lines.append(f"{source.name}: would fetch {url} ({remote_size(url, timeout)}) -> {path}{unpack_note}")
    return lines


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download model weights and benchmark datasets into place, verified.",
        epilog=f"Models: {', '.join(BACKBONES)} (aliases: dinov2, dinov2_reg, dinov3, sam).",
    )
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME", help="backbones to fetch")
    parser.add_argument("--datasets", nargs="+", default=[], choices=list(DATASET_ITEMS), help="datasets to fetch")
    parser.add_argument("--dry-run", action="store_true", help="print what would be fetched, sizes and destinations")
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT,
        help="put everything under this folder, in the repository layout (default: the repository)",
    )
    parser.add_argument("--keep-archives", action="store_true", help="keep dataset archives after unpacking them")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a server (default 60)")
    args = parser.parse_args(argv)
    if not args.models and not args.datasets:
        parser.error("nothing to do: name some --models and/or --datasets")
    try:
        args.models = [get_spec(name).name for name in args.models]
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None, table: dict[str, Item] | None = None) -> int:
    """Run the command line; `table` replaces `build_table(--root)` (for tests). Exit status."""
    args = parse_args(argv)
    table = table if table is not None else build_table(args.root)
    keys = list(dict.fromkeys([*args.models, *args.datasets]))
    if args.dry_run:
        for key in keys:
            print(f"{key}:\n  " + "\n  ".join(plan(table[key], args.timeout)))
        return 0
    results: list[tuple[str, bool, str]] = []
    for key in keys:
        try:
            outcome = ensure(table[key], keep_archives=args.keep_archives, timeout=args.timeout)
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
    sys.exit(main())
