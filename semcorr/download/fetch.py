"""Making an item complete: each of its files found and checked, or downloaded, checked and unpacked; and
what --dry-run says would happen."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from semcorr.download import checks
from semcorr.download.archives import unpack
from semcorr.download.checks import (
    DownloadError,
    Rejected,
    check_file,
    checked_text,
    estimated_size,
    human,
    is_complete,
    read_manifest,
    status,
    write_manifest,
)
from semcorr.download.table import Item, Source
from semcorr.download.transfer import download, remote_size
from semcorr.storage.files import file_identity


def rerun_hint(item: Item, root: Path | None = None) -> str:
    """The command that fetches `item` again, with the --root it was given."""
    return f"python download.py --{item.kind} {item.key}" + (f" --root {shlex.quote(str(root))}" if root else "")


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
        digest = checks.hash_file(path).hexdigest()
        recorded = record.get("sha256") if record else None
        try:
            passed = check_file(path, source, digest, recorded)
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
        digest, url, passed = download(item, source, path, attempts, timeout, hint)
        action = f"downloaded {source.name}"
    action += f" ({checked_text(passed)})"
    stat = path.stat()
    manifest[source.name] = {
        "sha256": digest,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "identity": file_identity(stat),  # lets a run take the sha256 without reading the file (files.file_sha256)
        "url": url,
        "checked": passed,
    }
    write_manifest(folder, manifest)
    if source.unpacks_to:
        try:
            unpack(path, folder)
        except DownloadError as error:
            path.unlink()
            where = f" from {source.urls[0]}" if source.urls else ""
            raise DownloadError(
                f"{error}\nThe archive {path} was deleted. If the server sent a web page instead (as Google Drive "
                f"may), download {source.name} in a browser{where}, put it at\n  {path}\nand re-run `{hint}` to "
                "check and unpack it."
            ) from None
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
