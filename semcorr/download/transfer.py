"""Fetching a file: streamed to `<dest>.part`, resumed with an HTTP range request after an interruption,
given up when it stalls, checked before it moves into place."""

from __future__ import annotations

import hashlib
import os
import re
import time
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from tqdm import tqdm

from semcorr.download import checks
from semcorr.download.checks import CHUNK, DownloadError, Rejected, check_file, human
from semcorr.download.table import Item, Source

STALL_BYTES = 16 << 10  # a transfer that receives less than this in --timeout seconds has stalled
USER_AGENT = "semantic-correspondence-download/1.0"


class IncompleteDownload(OSError):
    """The connection ended before the announced number of bytes arrived."""


class Stalled(OSError):
    """Bytes arrive too slowly to count as progress (less than STALL_BYTES per --timeout seconds)."""


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
            return checks.hash_file(part).hexdigest(), have  # the previous run got every byte already
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
        digest = checks.hash_file(part) if start else hashlib.sha256()
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
                passed = check_file(part, source, digest, announced=announced)
            except Rejected as problem:
                part.unlink()
                errors.append(f"{url}: downloaded file rejected and deleted, {problem}")
                break
            os.replace(part, path)
            return digest, url, passed
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
