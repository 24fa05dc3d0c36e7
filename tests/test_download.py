"""download.py against a real HTTP server on 127.0.0.1 serving archives made at test time."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import socket
import sys
import tarfile
import threading
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from model_factory import official_shapes, random_official_state_dict

from ap10k import CROWD_LIST
from download import main
from models.finetuned import FORMAT
from models.registry import ALIASES, BACKBONES, get_spec
from semcorr.cli.errors import run_main
from semcorr.config.settings import REPO_ROOT
from semcorr.data.datasets import DEFAULT_ROOTS
from semcorr.download import checks, transfer
from semcorr.download.checks import MANIFEST, DownloadError
from semcorr.download.fetch import ensure
from semcorr.download.table import Item, Source, build_table
from semcorr.storage import files

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


@dataclass
class FileServer:
    """What the test server serves, and what it was asked."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cuts: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before hanging up, once
    ignore_range: bool = False
    trickle: dict[str, tuple[int, float]] = field(default_factory=dict)  # path -> (bytes, seconds) per write
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range


def make_handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.serve(send_body=True)

        def do_HEAD(self) -> None:
            self.serve(send_body=False)

        def serve(self, send_body: bool) -> None:
            requested = self.headers.get("Range")
            state.log.append((self.command, self.path, requested))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if requested and not state.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if send_body and self.path in state.trickle:
                self.send_slowly(data[start:], *state.trickle[self.path])
            elif send_body:
                cut = state.cuts.pop(self.path, None)
                self.wfile.write(data[start:] if cut is None else data[start:cut])

        def send_slowly(self, data: bytes, step: int, pause: float) -> None:
            try:
                for i in range(0, len(data), step):
                    self.wfile.write(data[i : i + step])
                    self.wfile.flush()
                    time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server():
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dead_url() -> str:
    """A URL on a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A .tar.gz of (name, content) files and raw TarInfo members (links, devices)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                name, content = entry
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def make_zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def dataset_item(server: FileServer, folder: Path, archive: bytes, csv_hash: str | None = None) -> Item:
    """A PF-Willow-like item: an archive unpacking to Data/ plus a pair list."""
    server.files["/data.tar.gz"] = archive
    server.files["/pairs.csv"] = b"imageA,imageB\na.png,b.png\n"
    return Item(
        "pf-willow",
        "datasets",
        folder,
        (
            Source("data.tar.gz", (server.url + "/data.tar.gz",), unpacks_to=("Data/images",)),
            Source("test_pairs.csv", (server.url + "/pairs.csv",), sha256=csv_hash),
        ),
    )


def file_item(url: str, folder: Path, **hashes: str) -> Item:
    return Item("sam_vit_b", "models", folder, (Source("weights.pth", (url,), **hashes),))


GOOD_ARCHIVE = [("Data/images/a.png", b"A" * 100), ("Data/images/b.png", b"B" * 50)]


# --- full download, re-runs -------------------------------------------------------------------


def test_full_download_unpacks_verifies_and_records(server, tmp_path):
    folder = tmp_path / "pf_willow"
    item = dataset_item(server, folder, make_tar(GOOD_ARCHIVE), sha256(b"imageA,imageB\na.png,b.png\n"))

    outcome = ensure(item)

    assert outcome == (
        "downloaded data.tar.gz (checked: size announced by the server) and unpacked it; "
        "downloaded test_pairs.csv (checked: size announced by the server, sha256)"
    )
    assert (folder / "Data/images/a.png").read_bytes() == b"A" * 100
    assert (folder / "Data/images/b.png").read_bytes() == b"B" * 50
    assert (folder / "test_pairs.csv").read_bytes() == b"imageA,imageB\na.png,b.png\n"
    assert not (folder / "data.tar.gz").exists()  # archive removed once unpacked
    assert not list(folder.glob("*.part"))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["data.tar.gz"]["sha256"] == sha256(server.files["/data.tar.gz"])
    assert manifest["data.tar.gz"]["unpacked"] is True
    assert manifest["test_pairs.csv"]["url"] == server.url + "/pairs.csv"


def test_rerun_skips_without_network_or_hashing(server, tmp_path, monkeypatch):
    item = dataset_item(server, tmp_path / "pf_willow", make_tar(GOOD_ARCHIVE))
    ensure(item)
    requests_before = len(server.log)

    def forbidden(*args, **kwargs):
        raise AssertionError("a complete item must not be fetched or hashed again")

    monkeypatch.setattr(transfer, "urlopen", forbidden)
    monkeypatch.setattr(checks, "hash_file", forbidden)
    assert ensure(item) == (
        "already present: data.tar.gz (checked: size announced by the server), "
        "test_pairs.csv (checked: size announced by the server)"
    )
    assert len(server.log) == requests_before


def test_changed_file_is_hashed_again_against_the_recorded_hash(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    folder = tmp_path / "weights"
    item = file_item(server.url + "/w.pth", folder)  # no known hash: the first one is recorded
    ensure(item)
    path = folder / "weights.pth"

    os.utime(path, ns=(1, 1))  # touched, same bytes: re-hashed and still accepted
    assert ensure(item) == "found weights.pth (checked: same sha256 as when first fetched)"
    assert json.loads((folder / MANIFEST).read_text())["weights.pth"]["mtime_ns"] == 1

    path.write_bytes(b"something else")
    with pytest.raises(DownloadError, match="recorded when it was first fetched"):
        ensure(item)


def test_a_run_takes_a_downloaded_files_sha256_from_the_record_until_the_file_changes(server, tmp_path, monkeypatch):
    """A weights file of gigabytes is not read by every run to learn its sha256: the download's record gives it
    while the file's inode, size, modification and change times are the recorded ones."""
    server.files["/w.pth"] = PAYLOAD
    folder = tmp_path / "weights"
    ensure(file_item(server.url + "/w.pth", folder))
    path = folder / "weights.pth"
    monkeypatch.setattr(files, "_DIGESTS", {})  # a new process
    read = []
    real = files.read_digest
    monkeypatch.setattr(files, "read_digest", lambda *a: read.append(a) or real(*a))
    assert files.file_sha256(path) == sha256(PAYLOAD) and read == []
    stat = path.stat()
    time.sleep(0.05)  # past the file system's clock tick: the change time moves
    path.write_bytes(b"other bytes of the same length"[: len(PAYLOAD)].ljust(len(PAYLOAD), b"-"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p or rsync -t leave it
    assert files.file_sha256(path) != sha256(PAYLOAD) and len(read) == 1


# --- resuming ----------------------------------------------------------------------------------


def test_interrupted_download_is_resumed_by_the_next_run(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    server.cuts["/w.pth"] = 3000
    folder = tmp_path / "weights"
    item = file_item(server.url + "/w.pth", folder, sha256=sha256(PAYLOAD))

    with pytest.raises(DownloadError, match="3000 of 10240 bytes") as failure:
        ensure(item, attempts=1)
    assert "re-running resumes it" in str(failure.value)
    assert not (folder / "weights.pth").exists()
    assert (folder / "weights.pth.part").stat().st_size == 3000

    assert ensure(item, attempts=1) == "downloaded weights.pth (checked: size announced by the server, sha256)"
    assert server.log[-1] == ("GET", "/w.pth", "bytes=3000-")
    assert (folder / "weights.pth").read_bytes() == PAYLOAD
    assert not (folder / "weights.pth.part").exists()


def test_dropped_connection_is_resumed_within_one_run(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    server.cuts["/w.pth"] = 5000
    item = file_item(server.url + "/w.pth", tmp_path, sha256=sha256(PAYLOAD))

    ensure(item, attempts=3)

    assert [entry[2] for entry in server.log] == [None, "bytes=5000-"]
    assert (tmp_path / "weights.pth").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "weights.pth.part").write_bytes(b"stale bytes from elsewhere")

    ensure(file_item(server.url + "/w.pth", tmp_path))

    assert (tmp_path / "weights.pth").read_bytes() == PAYLOAD


def test_part_already_complete_is_finished_without_refetching(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    (tmp_path / "weights.pth.part").write_bytes(PAYLOAD)

    ensure(file_item(server.url + "/w.pth", tmp_path, sha256=sha256(PAYLOAD)))

    assert server.log == [("GET", "/w.pth", f"bytes={len(PAYLOAD)}-")]  # answered 416
    assert (tmp_path / "weights.pth").read_bytes() == PAYLOAD


# --- corrupted files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hashes",
    [{"sha256": sha256(b"the real file")}, {"sha256_prefix": sha256(b"the real file")[:6]}],
    ids=["full-hash", "prefix-in-file-name"],
)
def test_hash_mismatch_is_rejected_and_not_moved_into_place(server, tmp_path, hashes):
    server.files["/w.pth"] = PAYLOAD
    item = file_item(server.url + "/w.pth", tmp_path, **hashes)

    with pytest.raises(DownloadError, match="rejected and deleted, sha256 is") as failure:
        ensure(item)

    assert sha256(PAYLOAD) in str(failure.value)
    assert not (tmp_path / "weights.pth").exists()
    assert not (tmp_path / "weights.pth.part").exists()
    assert not (tmp_path / MANIFEST).exists()


def test_next_mirror_is_used_when_the_first_serves_a_corrupt_file(server, tmp_path):
    server.files["/bad.pth"] = b"corrupt"
    server.files["/good.pth"] = PAYLOAD
    source = Source("weights.pth", (server.url + "/bad.pth", server.url + "/good.pth"), sha256=sha256(PAYLOAD))

    ensure(Item("sam_vit_b", "models", tmp_path, (source,)))

    assert (tmp_path / "weights.pth").read_bytes() == PAYLOAD


def test_partial_file_is_not_resumed_from_another_mirror(server, tmp_path):
    server.files["/a.pth"] = PAYLOAD
    server.files["/b.pth"] = PAYLOAD
    server.cuts["/a.pth"] = 3000
    source = Source("weights.pth", (server.url + "/a.pth", server.url + "/b.pth"))

    ensure(Item("sam_vit_b", "models", tmp_path, (source,)), attempts=1)

    assert server.log == [("GET", "/a.pth", None), ("GET", "/b.pth", None)]
    assert (tmp_path / "weights.pth").read_bytes() == PAYLOAD


# --- unsafe archives -----------------------------------------------------------------------------

SAFE_FIRST = ("Data/images/ok.png", b"ok")  # placed before the bad member: must not be written


def char_device() -> tarfile.TarInfo:
    info = tarfile.TarInfo("Data/images/dev")
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    "archive",
    [
        lambda outside: make_tar([SAFE_FIRST, ("../evil.txt", b"x")]),
        lambda outside: make_tar([SAFE_FIRST, (str(outside / "evil.txt"), b"x")]),
        lambda outside: make_tar([SAFE_FIRST, tar_link("Data/images/link", "../../../evil.txt")]),
        lambda outside: make_tar([SAFE_FIRST, tar_link("Data/link", str(outside / "evil.txt"))]),
        lambda outside: make_tar([SAFE_FIRST, tar_link("Data/hard", "../evil.txt", tarfile.LNKTYPE)]),
        lambda outside: make_tar([SAFE_FIRST, char_device()]),
        lambda outside: make_zip([SAFE_FIRST, ("Data/../../evil.txt", b"x")]),
    ],
    ids=["dotdot", "absolute", "symlink-dotdot", "symlink-absolute", "hardlink", "device", "zip-dotdot"],
)
def test_archive_escaping_its_folder_is_refused_whole(server, tmp_path, archive):
    folder = tmp_path / "sub" / "pf_willow"
    item = dataset_item(server, folder, archive(tmp_path))

    with pytest.raises(DownloadError, match="refusing to unpack"):
        ensure(item)

    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "sub" / "evil.txt").exists()
    assert not (folder / "Data").exists()  # nothing unpacked at all
    assert not (folder / "data.tar.gz").exists()  # the refused archive is deleted
    assert "unpacked" not in json.loads((folder / MANIFEST).read_text())["data.tar.gz"]
    assert (folder / "test_pairs.csv").exists()  # the item's other files still arrive


def test_escape_through_a_chain_of_links_is_refused(server, tmp_path):
    # Each link alone looks harmless; together Data/b points above the folder.
    links = [tar_link("Data/a", ".."), tar_link("Data/b", "a/.."), ("Data/b/evil.txt", b"x")]
    folder = tmp_path / "sub" / "pf_willow"

    with pytest.raises(DownloadError, match="refusing to unpack"):
        ensure(dataset_item(server, folder, make_tar(links)))

    assert not (tmp_path / "sub" / "evil.txt").exists()
    assert not (folder / "data.tar.gz").exists()


def test_links_within_the_archive_are_unpacked(server, tmp_path):
    archive = make_tar([*GOOD_ARCHIVE, tar_link("Data/images/alias.png", "a.png")])
    ensure(dataset_item(server, tmp_path, archive))
    assert (tmp_path / "Data/images/alias.png").read_bytes() == b"A" * 100


def test_zip_archives_unpack_without_macos_litter(server, tmp_path):
    archive = make_zip([*GOOD_ARCHIVE, ("__MACOSX/Data/._a.png", b"x"), ("Data/.DS_Store", b"x")])
    ensure(dataset_item(server, tmp_path, archive))
    assert (tmp_path / "Data/images/b.png").read_bytes() == b"B" * 50
    assert not (tmp_path / "__MACOSX").exists()
    assert not (tmp_path / "Data/.DS_Store").exists()


def test_a_web_page_instead_of_the_archive_is_deleted_and_the_manual_route_named(server, tmp_path):
    item = dataset_item(server, tmp_path, b"<html>Google Drive can't scan this file for viruses</html>")

    with pytest.raises(DownloadError) as failure:
        ensure(item)
    message = str(failure.value)
    assert "cannot read" in message and not (tmp_path / "data.tar.gz").exists()
    assert (
        f"download data.tar.gz in a browser from {server.url}/data.tar.gz, put it at\n  {tmp_path / 'data.tar.gz'}"
        in message
    )
    assert "re-run `python download.py --datasets pf-willow` to check and unpack it" in message


# --- offline, manual placement, licence-gated weights --------------------------------------------


def test_server_down_names_url_error_and_manual_alternative(tmp_path, dead_url, capsys):
    item = file_item(dead_url, tmp_path / "weights")

    with pytest.raises(DownloadError) as failure:
        ensure(item)
    message = str(failure.value)
    assert dead_url in message
    assert "Connection refused" in message
    assert "Manual alternative" in message
    assert str(tmp_path / "weights" / "weights.pth") in message
    assert "python download.py --models sam_vit_b" in message

    assert main(["--models", "sam"], table={"sam_vit_b": item}) == 1
    output = capsys.readouterr()
    assert "Connection refused" in output.err
    assert re.search(r"FAILED\s+sam_vit_b\s+could not download weights.pth", output.out)


def test_archive_placed_by_hand_is_verified_and_unpacked(tmp_path, dead_url):
    folder = tmp_path / "pf_willow"
    folder.mkdir()
    archive = make_tar(GOOD_ARCHIVE)
    (folder / "data.tar.gz").write_bytes(archive)
    source = Source("data.tar.gz", (dead_url,), sha256=sha256(archive), unpacks_to=("Data/images",))

    outcome = ensure(Item("pf-willow", "datasets", folder, (source,)))
    assert outcome == "found data.tar.gz (checked: sha256) and unpacked it"
    assert (folder / "Data/images/a.png").read_bytes() == b"A" * 100


def test_licence_gated_weights_explain_the_request_then_verify_once_placed(tmp_path):
    weights = b"dinov3 checkpoint bytes"
    source = Source("dinov3.pth", (), sha256_prefix=sha256(weights)[:8])
    item = Item("dinov3_vitb16", "models", tmp_path, (source,), request_url="https://example.org/request")

    with pytest.raises(DownloadError) as failure:
        ensure(item)
    assert "https://example.org/request" in str(failure.value)
    assert f"Put it at {tmp_path / 'dinov3.pth'}" in str(failure.value)

    (tmp_path / "dinov3.pth").write_bytes(b"a different file")
    with pytest.raises(DownloadError, match="not the expected file"):
        ensure(item)

    (tmp_path / "dinov3.pth").write_bytes(weights)
    assert ensure(item) == "found dinov3.pth (checked: sha256 prefix in the file name)"
    assert ensure(item) == "already present: dinov3.pth (checked: sha256 prefix in the file name)"


# --- command line and the real table -------------------------------------------------------------


def test_cli_success_then_quick_noop(server, tmp_path, capsys):
    table = {"pf-willow": dataset_item(server, tmp_path, make_tar(GOOD_ARCHIVE))}
    assert main(["--datasets", "pf-willow"], table=table) == 0
    assert main(["--datasets", "pf-willow"], table=table) == 0
    assert re.search(r"ok\s+pf-willow\s+already present: data.tar.gz \(checked: ", capsys.readouterr().out)


def test_dry_run_prints_urls_sizes_destinations_and_writes_nothing(server, tmp_path, capsys):
    folder = tmp_path / "pf_willow"
    table = {"pf-willow": dataset_item(server, folder, make_tar(GOOD_ARCHIVE))}
    server.files["/data.tar.gz"] = PAYLOAD * 200  # 2 MiB

    assert main(["--datasets", "pf-willow", "--dry-run"], table=table) == 0

    out = capsys.readouterr().out
    assert f"{server.url}/data.tar.gz (2.0 MiB as the server announces) -> {folder / 'data.tar.gz'}" in out
    assert f"then unpack into {folder}" in out
    assert f"{server.url}/pairs.csv (26 bytes as the server announces) -> {folder / 'test_pairs.csv'}" in out
    assert "Total to fetch: 2.0 MiB in 2 files\n" in out
    assert {method for method, _, _ in server.log} == {"HEAD"}
    assert not folder.exists()


def test_cli_accepts_aliases_and_rejects_unknown_names(tmp_path, capsys):
    gated = Source("w.pth", ())
    table = {key: Item(key, "models", tmp_path, (gated,), "https://x") for key in ("dinov2_vitb14", "sam_vit_b")}
    assert main(["--models", "dinov2", "sam", "--dry-run"], table=table) == 0
    out = capsys.readouterr().out
    assert "dinov2_vitb14:" in out and "sam_vit_b:" in out
    with pytest.raises(SystemExit):
        main(["--models", "resnet50"], table=table)
    assert "Unknown backbone 'resnet50'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"], table=table)
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the epilog
    assert f"(aliases: {', '.join(ALIASES)})" in help_text and all(name in help_text for name in BACKBONES)


def test_table_follows_registry_and_loader_layout_under_any_root(tmp_path):
    table = build_table(tmp_path)

    assert set(BACKBONES) | {"spair", "pf-pascal", "pf-willow", "ap10k"} == set(table)
    for name, spec in BACKBONES.items():
        (source,) = table[name].sources
        assert table[name].folder / source.name == tmp_path / spec.default_weights.relative_to(REPO_ROOT)
        assert source.urls == ((spec.url,) if spec.url else ())
    dinov3 = table[get_spec("dinov3").name]
    assert dinov3.request_url and dinov3.sources[0].sha256_prefix == "73cec8be"
    # SAM's file names end in an md5 prefix: the full sha256 is checked instead of taking it for a sha256 one
    (sam,) = table[get_spec("sam").name].sources
    assert (sam.sha256_prefix, sam.size, sam.sha256[:8]) == (None, 375_042_383, "ec2df627")
    assert all(table[name].sources[0].backbone == name for name in BACKBONES)

    spair = table["spair"]
    assert spair.folder / "SPair-71k" == tmp_path / DEFAULT_ROOTS["spair"].relative_to(REPO_ROOT)
    pascal, willow = table["pf-pascal"], table["pf-willow"]
    assert pascal.folder == tmp_path / DEFAULT_ROOTS["pf-pascal"].relative_to(REPO_ROOT)
    assert {s.name for s in pascal.sources} == {
        "PF-dataset-PASCAL.zip",
        "trn_pairs.csv",
        "val_pairs.csv",
        "test_pairs.csv",
    }
    assert willow.folder == tmp_path / DEFAULT_ROOTS["pf-willow"].relative_to(REPO_ROOT)
    assert {s.name for s in willow.sources} == {"PF-dataset.zip", "test_pairs.csv"}
    ap10k = table["ap10k"]
    archive, crowd = ap10k.sources
    assert {ap10k.folder / p for p in archive.unpacks_to} == {
        tmp_path / DEFAULT_ROOTS["ap10k"].relative_to(REPO_ROOT) / p for p in ("annotations", "data")
    }
    assert ap10k.folder / crowd.name == tmp_path / DEFAULT_ROOTS["ap10k"].parent.relative_to(REPO_ROOT) / CROWD_LIST
    assert crowd.sha256 and crowd.size and "GeoAware-SC" in crowd.urls[0]


# --- what is checked, and said -------------------------------------------------------------------

DINOV2 = get_spec("dinov2_vitb14")
LOADS = "loads with every key and shape of dinov2_vitb14"


def full_layout_file(path: Path, name: str, depth: int | None = None) -> Path:
    """An official-format file of `name` with every key at its official shape (from the test manifests).

    All tensors are views of one zero storage, which torch.save writes once: a ViT-B in 9 MB.
    """
    shapes = official_shapes(name, depth=depth)
    storage = torch.zeros(max(math.prod(shape) for shape in shapes.values()))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: storage[: math.prod(shape)].view(shape) for key, shape in shapes.items()}, path)
    return path


def finetuned_file(path: Path, whose: str) -> Path:
    """A fine-tuned checkpoint holding every weight of dinov2_vitb14 at its shape, saved under the official
    name: this project's (self-contained, Backbone layout) or the original project's (Meta's layout)."""
    if whose == "the original":
        state = torch.load(full_layout_file(path, DINOV2.name), weights_only=True)
        torch.save({"model_state_dict": state, "epoch": 3}, path)
        return path
    shapes = {key: meta.shape for key, meta in checks.expected_state(DINOV2).items()}
    storage = torch.zeros(max(math.prod(shape) for shape in shapes.values()))
    state = {key: storage[: math.prod(shape)].view(shape) for key, shape in shapes.items()}
    payload = {"format": FORMAT, "backbone": DINOV2.name, "timm_overrides": {}, "layer": None, "base": None}
    torch.save(payload | {"state_dict": state, "extra": {"step": 10}}, path)
    return path


def truncated_file(path: Path) -> Path:
    """A DINOv2 file (official keys, tiny shapes) cut in half, as an interrupted copy leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_official_state_dict(DINOV2.name, tiny=True), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def dinov2_item(folder: Path, url: str) -> Item:
    return Item(DINOV2.name, "models", folder, (Source(DINOV2.official_file, (url,), backbone=DINOV2.name),))


def forbidden(*args, **kwargs):
    raise AssertionError("a file already checked must not be read again")


def test_weights_placed_by_hand_are_checked_for_every_key_once(tmp_path, dead_url, monkeypatch):
    item = dinov2_item(tmp_path, dead_url)
    full_layout_file(tmp_path / DINOV2.official_file, DINOV2.name)

    assert ensure(item) == f"found {DINOV2.official_file} (checked: {LOADS})"

    monkeypatch.setattr(checks, "layout_problem", forbidden)
    monkeypatch.setattr(checks, "hash_file", forbidden)
    assert ensure(item) == f"already present: {DINOV2.official_file} (checked: {LOADS})"


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (truncated_file, "does not load as a PyTorch checkpoint (RuntimeError: PytorchStreamReader failed"),
        (lambda path: full_layout_file(path, DINOV2.name, depth=11), "does not fit dinov2_vitb14: 14 missing keys"),
        (lambda path: full_layout_file(path, "dinov2_vitb14_reg4"), "like dinov2_vitb14_reg4, not dinov2_vitb14"),
        (lambda path: finetuned_file(path, "this project"), "is a fine-tuned checkpoint of this project"),
        (lambda path: finetuned_file(path, "the original"), "is a fine-tuned checkpoint of the original project"),
    ],
    ids=["truncated", "blocks-missing", "another-model", "finetuned", "original-finetuned"],
)
def test_weights_that_do_not_load_are_refused_even_if_recorded_before(tmp_path, dead_url, write, problem):
    # issue 13: such a file was reported as verified, and the manifest kept saying so
    path = write(tmp_path / DINOV2.official_file)
    stat = path.stat()
    old_record = {"sha256": sha256(path.read_bytes()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    (tmp_path / MANIFEST).write_text(json.dumps({DINOV2.official_file: {**old_record, "url": "placed by hand"}}))

    with pytest.raises(DownloadError) as failure:
        ensure(dinov2_item(tmp_path, dead_url))

    message = str(failure.value)
    assert f"{path} is not the expected file: " in message and problem in message
    assert f"Delete it and re-run `python download.py --models {DINOV2.name}`" in message
    assert "verified" not in message
    assert path.exists()  # the user's file is left for the user to delete
    assert "checked" not in json.loads((tmp_path / MANIFEST).read_text())[DINOV2.official_file]


def test_downloaded_weights_that_do_not_load_are_deleted(server, tmp_path):
    server.files["/w.pth"] = truncated_file(tmp_path / "served.pth").read_bytes()
    folder = tmp_path / "weights"

    with pytest.raises(DownloadError, match="rejected and deleted, it does not load as a PyTorch checkpoint"):
        ensure(dinov2_item(folder, server.url + "/w.pth"))

    assert not list(folder.iterdir())


def test_known_size_is_checked_before_the_hash(tmp_path, dead_url):
    (tmp_path / "pairs.csv").write_bytes(b"a,b\n")
    item = Item("pf-pascal", "datasets", tmp_path, (Source("pairs.csv", (dead_url,), sha256="0" * 64, size=5),))

    with pytest.raises(DownloadError, match="has 4 bytes, the official file 5"):
        ensure(item)


def test_nothing_known_is_said_as_unverified(tmp_path, dead_url):
    (tmp_path / "pairs.csv").write_bytes(b"a,b\n")
    item = Item("pf-willow", "datasets", tmp_path, (Source("pairs.csv", (dead_url,)),))

    assert ensure(item) == "found pairs.csv (unverified: nothing published to check it against)"


# --- stalled transfers ---------------------------------------------------------------------------


def test_trickling_server_is_given_up_and_the_part_kept_for_resuming(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    server.trickle["/w.pth"] = (1, 0.05)  # 20 bytes/s: headers, then almost nothing
    item = file_item(server.url + "/w.pth", tmp_path, sha256=sha256(PAYLOAD))

    started = time.monotonic()
    with pytest.raises(DownloadError) as failure:
        ensure(item, timeout=0.5)

    assert time.monotonic() - started < 3
    assert re.search(r"stalled: \d+ bytes in the last 0.5 s, under 16 KiB per --timeout", str(failure.value))
    assert "re-running resumes it" in str(failure.value)
    kept = (tmp_path / "weights.pth.part").read_bytes()
    assert 0 < len(kept) < len(PAYLOAD) and PAYLOAD.startswith(kept)

    del server.trickle["/w.pth"]
    assert ensure(item).startswith("downloaded weights.pth")
    assert server.log[-1][2] == f"bytes={len(kept)}-"
    assert (tmp_path / "weights.pth").read_bytes() == PAYLOAD


def test_slow_but_steady_server_is_not_stalled(server, tmp_path):
    data = bytes(range(256)) * 256  # 64 KiB at 80 KiB/s: more than 16 KiB in every 0.3 s
    server.files["/w.pth"] = data
    server.trickle["/w.pth"] = (8 << 10, 0.1)

    ensure(file_item(server.url + "/w.pth", tmp_path), timeout=0.3)

    assert (tmp_path / "weights.pth").read_bytes() == data


# --- dry run offline -----------------------------------------------------------------------------


def offline(*args, **kwargs):
    raise URLError("no network")


def test_dry_run_offline_shows_the_known_sizes_and_a_total(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(transfer, "urlopen", offline)

    assert main(["--models", "sam", "sam_vit_l", "sam_vit_h", "dinov2", "--dry-run", "--root", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    sam_folder = tmp_path / "models" / "sam" / "weights"
    assert f"sam_vit_b_01ec64.pth (357.7 MiB) -> {sam_folder / 'sam_vit_b_01ec64.pth'}" in out
    assert "sam_vit_l_0b3195.pth (1.2 GiB)" in out and "sam_vit_h_4b8939.pth (2.4 GiB)" in out
    # no size published for DINOv2: the bytes of its tensors, which the file is within a fraction of a percent of
    assert "dinov2_vitb14_pretrain.pth (about 330.3 MiB, the size of its tensors)" in out
    assert out.endswith("Total to fetch: 4.2 GiB in 4 files\n")
    assert not tmp_path.joinpath("models").exists()


def test_dry_run_counts_only_what_would_be_fetched(server, tmp_path, dead_url, capsys):
    folder = tmp_path / "pf_pascal"
    folder.mkdir()
    (folder / "val.csv").write_bytes(b"x" * 10)
    sources = (
        Source("images.zip", (dead_url,), size=3 << 20, unpacks_to=("images",)),
        Source("trn.csv", (dead_url,), size=2 << 10),
        Source("val.csv", (dead_url,), size=10),
        Source("test.csv", (dead_url,)),
    )
    table = {"pf-pascal": Item("pf-pascal", "datasets", folder, sources)}

    assert main(["--datasets", "pf-pascal", "--dry-run"], table=table) == 0

    out = capsys.readouterr().out
    assert f"images.zip: would fetch {dead_url} (3.0 MiB) -> {folder / 'images.zip'}, then unpack into" in out
    assert f"val.csv: present at {folder / 'val.csv'} (10 bytes), would check it" in out
    assert "test.csv: would fetch" in out and "(size unknown: [Errno 111] Connection refused)" in out
    assert "Total to fetch: 3.0 MiB in 2 files; not counted, size unknown: test.csv" in out


def test_help_says_what_counts_as_progress(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "less than 16 KiB received in this long" in " ".join(capsys.readouterr().out.split())


# --- faults, through the path a user's command takes ---------------------------------------------

# case, argv, exit status, what the message says, files (under the test folder) that must exist
# afterwards, unchanged if they existed before. "{tmp}" is the test folder; HOME is {tmp}/home.
CASES = [
    ("truncated-dinov2", ["--models", "dinov2"], 1, "does not load as a PyTorch checkpoint", ["weights/dinov2.pth"]),
    ("trickling-server", ["--models", "sam", "--timeout", "0.5"], 1, "stalled: ", ["sam/sam.pth.part"]),
    ("timeout-0", ["--models", "sam", "--timeout", "0"], 2, "argument --timeout: must be > 0, got 0", []),
    ("timeout-negative", ["--models", "sam", "--timeout", "-1"], 2, "argument --timeout: must be > 0, got -1", []),
    ("timeout-nan", ["--models", "sam", "--timeout", "nan"], 2, "--timeout: must be a finite number, got 'nan'", []),
    ("timeout-inf", ["--models", "sam", "--timeout", "inf"], 2, "--timeout: must be a finite number, got 'inf'", []),
    ("root-read-only", ["--models", "sam", "--root", "{tmp}/read-only"], 2, "is not writable", ["read-only/x"]),
    ("root-is-a-file", ["--models", "sam", "--root", "{tmp}/a-file/sub"], 2, "{tmp}/a-file is a file", ["a-file"]),
    (
        "root-tilde",
        ["--datasets", "pf-willow", "--root=~/dl"],
        1,
        "`python download.py --datasets pf-willow --root {tmp}/home/dl`",
        [],
    ),
    ("root-variable", ["--datasets", "pf-willow", "--root", "$DOWNLOADS/dl"], 1, "--root {tmp}/vars/dl`", []),
]


@pytest.fixture
def fault_table(server, tmp_path, dead_url, monkeypatch):
    """The items CASES fetch: a truncated DINOv2 file in place, a trickling server, a dead one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOWNLOADS", str(tmp_path / "vars"))
    (tmp_path / "read-only").mkdir()
    (tmp_path / "read-only" / "x").write_text("kept")
    (tmp_path / "read-only").chmod(0o555)
    (tmp_path / "a-file").write_text("not a folder")
    truncated_file(tmp_path / "weights" / "dinov2.pth")
    server.files["/sam.pth"] = PAYLOAD
    server.trickle["/sam.pth"] = (1, 0.05)
    yield {
        DINOV2.name: Item(
            DINOV2.name, "models", tmp_path / "weights", (Source("dinov2.pth", (dead_url,), backbone=DINOV2.name),)
        ),
        "sam_vit_b": Item("sam_vit_b", "models", tmp_path / "sam", (Source("sam.pth", (server.url + "/sam.pth",)),)),
        "pf-willow": Item("pf-willow", "datasets", tmp_path / "pf_willow", (Source("pairs.csv", (dead_url,)),)),
    }
    (tmp_path / "read-only").chmod(0o755)


@contextmanager
def as_nobody_if_root(needed: bool):
    """Root may write into any folder: run as `nobody` where a folder must be read-only to the user."""
    if not needed or os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize(("case", "argv", "status", "message", "intact"), CASES, ids=[case[0] for case in CASES])
def test_fault_ends_in_a_clear_message_and_leaves_files_alone(
    fault_table, tmp_path, capsys, case, argv, status, message, intact
):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    before = {name: (tmp_path / name).read_bytes() for name in intact if (tmp_path / name).exists()}

    with pytest.raises(SystemExit) as end, as_nobody_if_root("read-only" in case):
        run_main(lambda: sys.exit(main(argv, table=fault_table)))

    code = end.value.code
    output = capsys.readouterr()
    said = output.out + output.err + (code if isinstance(code, str) else "")
    assert (1 if isinstance(code, str) else code or 0) == status
    assert message.format(tmp=tmp_path) in said
    assert "Traceback" not in said
    for name in intact:
        assert (tmp_path / name).exists(), name
        assert (tmp_path / name).read_bytes() == before.get(name, (tmp_path / name).read_bytes()), name
