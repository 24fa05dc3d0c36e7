"""Unpacking an archive safely: every member checked to stay inside the target folder before anything is written."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from semcorr.download.checks import DownloadError


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
