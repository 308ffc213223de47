"""The download cache and disk preparation against a real HTTP server on 127.0.0.1.

The server runs in a thread of the test process, serves files generated in tmp and
counts requests, so "did not download again" is a fact, not a timing. qemu-img is real.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from lima import paths
from lima.drivers import runner
from lima.drivers.images import disks, download, prepare_disks, progress
from lima.drivers.images.download import Timeouts
from lima.errors import PermanentError, TemporaryError
from lima.schemas.spec import FileRef, Image, InstanceSpec, KernelRef, SSHConfig, User

MiB = 1 << 20
GiB = 1 << 30
LM1 = formatdate(1_700_000_000, usegmt=True)
LM2 = formatdate(1_700_086_400, usegmt=True)


# ---------------------------------------------------------------- the server

@dataclass
class Served:
    data: bytes
    last_modified: str = LM1
    mode: str = "ok"  # ok | 404 | short | stall | slow | redirect:<path>


@dataclass
class Server:
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if (m, p) == (method, path))

    def add(self, path: str, data: bytes, **kw: str) -> str:
        self.files[path] = Served(data, **kw)
        return self.url(path)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            server.requests.append((self.command, self.path))
            f = server.files.get(self.path)
            if f is None or f.mode == "404":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if f.mode.startswith("redirect:"):
                self.send_response(302)
                self.send_header("Location", f.mode.split(":", 1)[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(f.data)))
            self.send_header("Last-Modified", f.last_modified)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            if f.mode == "short":
                self.wfile.write(f.data[: len(f.data) // 2])
                self.close_connection = True
            elif f.mode == "stall":
                self.wfile.write(f.data[:1024])
                self.wfile.flush()
                server.release.wait(10)
                self.close_connection = True
            elif f.mode == "slow":
                step = max(len(f.data) // 10, 1)
                for i in range(0, len(f.data), step):
                    self.wfile.write(f.data[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self.wfile.write(f.data)

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    srv.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return cache


# ---------------------------------------------------------------- helpers

def sha(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def qcow2(tmp_path: Path, size: str = "64M", name: str = "base.qcow2") -> bytes:
    path = tmp_path / name
    runner.run(["qemu-img", "create", "-f", "qcow2", path, size])
    return path.read_bytes()


def raw_image() -> bytes:
    """1 MiB of noise then 3 MiB of zeros: compresses well, qemu-img sees raw."""
    return hashlib.sha256(b"seed").digest() * (MiB // 32) + bytes(3 * MiB)


def spec(*images: Image, disk: int = GiB, arch: str = "x86_64") -> InstanceSpec:
    return InstanceSpec(
        name="t", vm_type="qemu", os="Linux", arch=arch, images=tuple(images), cpus=1,
        memory=512 * MiB, disk=disk, mounts=(), mount_type="reverse-sshfs", ssh=SSHConfig(),
        user=User("u", 1000, "", "/home/u.linux", "/bin/bash"))


def image(location: str, digest: str | None = None, **kw: object) -> Image:
    return Image(location=location, arch=str(kw.pop("arch", "x86_64")), digest=digest,
                 **kw)  # type: ignore[arg-type]


def info(path: Path) -> dict[str, object]:
    out = runner.run(["qemu-img", "info", "--output=json", "-U", path]).stdout
    result: dict[str, object] = json.loads(out)
    return result


def inst(tmp_path: Path, name: str = "vm") -> Path:
    return paths.lima_home() / name


# ---------------------------------------------------------------- cache layout, reuse

def test_first_download_cache_layout_and_disks(server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    url = server.add("/img.qcow2", data)
    d = inst(tmp_path)
    prepare_disks(spec(image(url, sha(data))), d)

    entry = paths.download_dir() / hashlib.sha256(url.encode()).hexdigest()
    assert entry == tmp_path / "xdg-cache/lima/download/by-url-sha256" / entry.name
    assert (entry / "url").read_bytes() == url.encode()  # no trailing newline
    assert (entry / "data").read_bytes() == data
    assert (entry / "sha256.digest").read_text() == sha(data)
    assert (entry / "sha512.digest").read_text() == sha(data, "sha512")
    assert (entry / "time").read_text() == LM1
    assert (entry / "type").read_text() == "application/octet-stream"
    assert not (entry / "data.tmp").exists()
    # basedisk is the instance's own inode, never a hard link into the cache; diffdisk
    # sits on it
    base, cached = os.stat(d / "basedisk"), os.stat(entry / "data")
    assert (base.st_dev, base.st_ino) != (cached.st_dev, cached.st_ino)
    assert base.st_nlink == 1 and cached.st_nlink == 1
    assert (d / "basedisk").read_bytes() == data
    diff = info(d / "diffdisk")
    assert diff["format"] == "qcow2"
    assert diff["backing-filename"] == "basedisk"
    assert Path(diff["full-backing-filename"]).resolve() == (d / "basedisk").resolve()
    assert diff["backing-filename-format"] == "qcow2"
    assert diff["virtual-size"] == GiB
    assert not list(d.glob(".*.tmp"))
    assert server.count("GET", "/img.qcow2") == 1


def test_second_prepare_uses_the_cache(server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    url = server.add("/img.qcow2", data)
    prepare_disks(spec(image(url, sha(data))), inst(tmp_path, "a"))
    prepare_disks(spec(image(url, sha(data))), inst(tmp_path, "b"))
    assert server.count("GET", "/img.qcow2") == 1
    assert server.count("HEAD", "/img.qcow2") == 0  # a digest needs no revalidation
    assert (inst(tmp_path, "b") / "basedisk").read_bytes() == data
    # and a prepared instance is left as it is
    prepare_disks(spec(image(url, sha(data))), inst(tmp_path, "b"))
    assert len(server.requests) == 1


def test_digest_given_later_rehashes_an_entry_without_that_algorithm(
        server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    url = server.add("/img.qcow2", data)
    download.download(url)
    (download.entry_dir(url) / "sha512.digest").unlink()  # as an entry Lima wrote
    got = download.download(url, digest=sha(data, "sha512"))
    assert got.status == "used-cache"
    assert (download.entry_dir(url) / "sha512.digest").read_text() == sha(data, "sha512")
    assert server.count("GET", "/img.qcow2") == 1


# ---------------------------------------------------------------- failures

def test_digest_mismatch_leaves_no_data(server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    url = server.add("/img.qcow2", data)
    wrong = sha(b"something else")
    d = inst(tmp_path)
    with pytest.raises(PermanentError) as err:
        prepare_disks(spec(image(url, wrong)), d)
    assert wrong in str(err.value) and sha(data) in str(err.value)
    entry = download.entry_dir(url)
    assert not (entry / "data").exists() and not (entry / "data.tmp").exists()
    assert not (entry / "sha256.digest").exists()
    assert not (d / "basedisk").exists() and not (d / "diffdisk").exists()


def test_404_is_permanent(server: Server) -> None:
    url = server.url("/missing.qcow2")
    with pytest.raises(PermanentError, match="HTTP 404"):
        download.download(url)
    assert not (download.entry_dir(url) / "data").exists()


def test_transfer_cut_short(server: Server) -> None:
    url = server.add("/short.img", os.urandom(256 * 1024), mode="short")
    with pytest.raises(TemporaryError, match="cut short: got 131072 of 262144 bytes"):
        download.download(url, timeouts=Timeouts(connect=5, read=5))
    entry = download.entry_dir(url)
    assert not (entry / "data").exists() and not (entry / "data.tmp").exists()


def test_stalled_server_times_out(server: Server) -> None:
    url = server.add("/stall.img", os.urandom(MiB), mode="stall")
    with pytest.raises(TemporaryError, match="stalled"):
        download.download(url, timeouts=Timeouts(connect=5, read=0.5))
    entry = download.entry_dir(url)
    assert not (entry / "data").exists() and not (entry / "data.tmp").exists()


def test_timeouts_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMA_DOWNLOAD_READ_TIMEOUT", "0.25")
    monkeypatch.setenv("LIMA_DOWNLOAD_CONNECT_TIMEOUT", "bogus")
    assert Timeouts.from_env() == Timeouts(connect=30.0, read=0.25)


def test_connection_refused_is_temporary(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TemporaryError):
        download.download(f"http://127.0.0.1:{port}/x.img")


def test_interrupt_leaves_no_partial_data(server: Server,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.add("/big.img", os.urandom(4 * MiB))

    def interrupt(self: object, n: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(progress.LogProgress, "advance", interrupt)
    with pytest.raises(KeyboardInterrupt):
        download.download(url)
    entry = download.entry_dir(url)
    assert not (entry / "data").exists() and not (entry / "data.tmp").exists()


def test_concurrent_downloads_transfer_once(server: Server,
                                            caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(2 * MiB)
    url = server.add("/slow.img", data, mode="slow")
    results: list[download.Fetched] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(download.download(url, digest=sha(data)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    with caplog.at_level("INFO"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors
    assert "waiting for another process fetching" in caplog.text  # they did overlap
    assert server.count("GET", "/slow.img") == 1
    assert sorted(r.status for r in results) == ["downloaded", "used-cache"]
    assert results[0].path.read_bytes() == data


# ---------------------------------------------------------------- revalidation

def test_revalidation_by_last_modified(server: Server) -> None:
    url = server.add("/nodigest.img", b"v1" * 1000)
    assert download.download(url).status == "downloaded"
    # same Last-Modified: a HEAD, no GET
    assert download.download(url).status == "used-cache"
    assert server.count("HEAD", "/nodigest.img") == 1
    assert server.count("GET", "/nodigest.img") == 1
    # changed on the server: downloaded again
    server.add("/nodigest.img", b"v2" * 1000, last_modified=LM2)
    got = download.download(url)
    assert got.status == "downloaded"
    assert got.path.read_bytes() == b"v2" * 1000
    assert (download.entry_dir(url) / "time").read_text() == LM2
    assert server.count("GET", "/nodigest.img") == 2


def test_redirect_keeps_head_a_head(server: Server) -> None:
    server.add("/real.img", b"x" * 100)
    url = server.add("/latest.img", b"", mode="redirect:/real.img")
    download.download(url)
    assert download.download(url).status == "used-cache"
    assert server.count("HEAD", "/real.img") == 1
    assert server.count("GET", "/real.img") == 1


# ---------------------------------------------------------------- compression

def _zstd(data: bytes, tmp_path: Path) -> bytes:
    src = tmp_path / "z.raw"
    src.write_bytes(data)
    runner.run(["zstd", "-q", "-f", src, "-o", tmp_path / "z.raw.zst"])
    return (tmp_path / "z.raw.zst").read_bytes()


@pytest.mark.parametrize("ext", [".gz", ".bz2", ".xz", ".zst"])
def test_compressed_image_is_expanded(server: Server, tmp_path: Path, ext: str) -> None:
    raw = raw_image()
    packed = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
              ".zst": lambda b: _zstd(b, tmp_path)}[ext](raw)
    url = server.add(f"/disk.raw{ext}", packed)
    d = inst(tmp_path)
    prepare_disks(spec(image(url, sha(packed))), d)
    assert (d / "basedisk").read_bytes() == raw
    assert (download.entry_dir(url) / "data").read_bytes() == packed  # cache keeps it packed
    assert os.stat(d / "basedisk").st_blocks * 512 < len(raw)  # zeros became holes
    assert info(d / "diffdisk")["backing-filename-format"] == "raw"


def test_compression_detected_by_magic(server: Server, tmp_path: Path) -> None:
    raw = raw_image()
    url = server.add("/disk-latest", gzip.compress(raw))
    d = inst(tmp_path)
    prepare_disks(spec(image(url)), d)
    assert (d / "basedisk").read_bytes() == raw


def test_corrupt_compressed_image(server: Server, tmp_path: Path) -> None:
    url = server.add("/broken.img.xz", b"\xfd7zXZ\x00garbage" * 10)
    d = inst(tmp_path)
    with pytest.raises(PermanentError, match="cannot decompress"):
        prepare_disks(spec(image(url)), d)
    assert not (d / "basedisk").exists()


# ---------------------------------------------------------------- candidates

def test_candidate_fallback_and_arch(server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    good = server.add("/good.qcow2", data)
    other_arch = server.add("/arm.qcow2", data)
    d = inst(tmp_path)
    prepare_disks(spec(image(other_arch, arch="aarch64"), image(server.url("/gone")),
                       image(good, sha(data))), d)
    assert (d / "basedisk").read_bytes() == data
    assert server.count("GET", "/arm.qcow2") == 0
    assert server.count("GET", "/gone") == 1


def test_all_candidates_fail_in_one_error(server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    bad_digest = server.add("/a.qcow2", data)
    missing = server.url("/b.qcow2")
    local = tmp_path / "nope.qcow2"
    with pytest.raises(PermanentError) as err:
        prepare_disks(spec(image(bad_digest, sha(b"x")), image(missing), image(str(local))),
                      inst(tmp_path))
    msg = str(err.value)
    assert "3 candidates" in msg
    assert f"{bad_digest}: " in msg and "digest mismatch" in msg
    assert f"{missing}: " in msg and "HTTP 404" in msg
    assert f"{local}: no such file" in msg


def test_temporary_candidate_failure_makes_a_temporary_error(server: Server,
                                                             tmp_path: Path) -> None:
    short = server.add("/short.qcow2", os.urandom(64 * 1024), mode="short")
    with pytest.raises(TemporaryError, match="cut short"):
        prepare_disks(spec(image(short), image(server.url("/b"))), inst(tmp_path))


def test_no_image_for_the_arch(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="no image for arch x86_64"):
        prepare_disks(spec(image("/x.img", arch="aarch64")), inst(tmp_path))


# ---------------------------------------------------------------- local files

@pytest.mark.parametrize("form", ["path", "file-url"])
def test_local_image_is_copied_not_cached(tmp_path: Path, form: str) -> None:
    data = qcow2(tmp_path, name="local.qcow2")
    src = tmp_path / "local.qcow2"
    location = str(src) if form == "path" else f"file://{src}"
    d = inst(tmp_path)
    prepare_disks(spec(image(location, sha(data))), d)
    assert (d / "basedisk").read_bytes() == data
    assert os.stat(d / "basedisk").st_ino != os.stat(src).st_ino
    assert download.cache_entries() == {}
    with pytest.raises(PermanentError, match="digest mismatch"):
        prepare_disks(spec(image(location, sha(b"x"))), inst(tmp_path, "other"))


def test_local_compressed_image(tmp_path: Path) -> None:
    raw = raw_image()
    src = tmp_path / "img.raw.xz"
    src.write_bytes(lzma.compress(raw))
    d = inst(tmp_path)
    prepare_disks(spec(image(str(src), sha(src.read_bytes()))), d)
    assert (d / "basedisk").read_bytes() == raw


# ---------------------------------------------------------------- kernel, initrd, build:

def test_kernel_initrd_cmdline_land_in_the_instance(server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    kernel = b"MZ fake kernel" * 100
    initrd = gzip.compress(b"070701 fake cpio" * 100)  # stays compressed: the kernel unpacks it
    img = image(server.add("/img.qcow2", data), sha(data),
                kernel=KernelRef(server.add("/vmlinuz", kernel), "x86_64", sha(kernel),
                                 cmdline="root=LABEL=root console=ttyS0"),
                initrd=FileRef(server.add("/initrd.gz", initrd), "x86_64", sha(initrd)))
    d = inst(tmp_path)
    prepare_disks(spec(img), d)
    assert (d / "kernel").read_bytes() == kernel
    assert (d / "initrd").read_bytes() == initrd
    assert (d / "kernel.cmdline").read_text() == "root=LABEL=root console=ttyS0"


def test_bad_kernel_fails_the_candidate(server: Server, tmp_path: Path) -> None:
    data = qcow2(tmp_path)
    img = image(server.add("/img.qcow2", data),
                kernel=KernelRef(server.url("/no-kernel"), "x86_64"))
    d = inst(tmp_path)
    with pytest.raises(PermanentError, match="no-kernel: HTTP 404"):
        prepare_disks(spec(img), d)
    assert not [p for p in d.iterdir()]


def test_build_scheme_uses_the_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = tmp_path / "built"
    built.mkdir()
    qcow2(built, "32M", "image.qcow2")
    (built / "kernel").write_bytes(b"kernel")
    (built / "initrd").write_bytes(b"initrd")
    calls: list[str] = []
    from lima.drivers.images.build import BuiltImage

    def build_image(name: str) -> BuiltImage:
        calls.append(name)
        return BuiltImage(built / "image.qcow2", built / "kernel", built / "initrd",
                          "root=LABEL=lima-root console=ttyS0")

    fake = types.ModuleType("lima.drivers.images.build")
    fake.build_image = build_image  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lima.drivers.images.build", fake)
    d = inst(tmp_path)
    prepare_disks(spec(image("build:tiny"), disk=16 * MiB), d)
    assert calls == ["tiny"]
    assert (d / "kernel").read_bytes() == b"kernel"
    assert (d / "initrd").read_bytes() == b"initrd"
    assert (d / "kernel.cmdline").read_text() == "root=LABEL=lima-root console=ttyS0"
    # spec.disk smaller than the base: the overlay keeps the base's size
    assert info(d / "diffdisk")["virtual-size"] == 32 * MiB


def test_iso_gets_a_blank_diffdisk(tmp_path: Path) -> None:
    iso = bytearray(64 * 1024)
    iso[0x8001:0x8006] = b"CD001"
    src = tmp_path / "boot.iso"
    src.write_bytes(bytes(iso))
    d = inst(tmp_path)
    prepare_disks(spec(image(str(src)), disk=8 * MiB), d)
    diff = info(d / "diffdisk")
    assert "backing-filename" not in diff and diff["virtual-size"] == 8 * MiB


def test_copy_when_reflink_is_refused(server: Server, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = qcow2(tmp_path)
    url = server.add("/img.qcow2", data)

    def no_reflink(fd: int, request: int, arg: int) -> None:
        assert request == disks.FICLONE
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(disks.fcntl, "ioctl", no_reflink)
    d = inst(tmp_path)
    prepare_disks(spec(image(url)), d)
    assert (d / "basedisk").read_bytes() == data
    assert os.stat(d / "basedisk").st_ino != os.stat(download.entry_dir(url) / "data").st_ino


# ---------------------------------------------------------------- prune

def _limactl(*args: str) -> None:
    from lima.cli import limactl

    result = CliRunner().invoke(limactl, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_prune_empties_the_cache(server: Server) -> None:
    for name in ("a", "b"):
        download.download(server.add(f"/{name}.img", name.encode() * 10))
    assert len(download.cache_entries()) == 2
    _limactl("prune")
    assert download.cache_entries() == {}


def test_prune_keep_referred(server: Server, tmp_path: Path) -> None:
    kept = server.add("/kept.img", b"k" * 10)
    kernel = server.add("/kept-kernel", b"K" * 10)
    gone = server.add("/gone.img", b"g" * 10)
    for url in (kept, kernel, gone):
        download.download(url)
    d = inst(tmp_path)
    d.mkdir(parents=True)
    (d / "lima.yaml").write_text(
        f"images:\n- location: {kept}\n  arch: x86_64\n  kernel:\n    location: {kernel}\n")
    _limactl("prune", "--keep-referred")
    assert set(download.cache_entries()) == {download.cache_key(kept),
                                             download.cache_key(kernel)}


def test_prune_skips_an_entry_being_downloaded(server: Server) -> None:
    url = server.add("/busy.img", b"b" * 10)
    download.download(url)
    with download._locked(download.entry_dir(url), url):
        removed, busy = download.prune()
    assert busy == [download.cache_key(url)] and removed == []


def test_plain_progress_lines(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    url = server.add("/p.img", b"p" * 5000)
    with caplog.at_level("INFO"):
        download.download(url, description="the image p")
    text = caplog.text
    assert "Downloading the image p (4.9 KiB)" in text and "done" in text



def test_prune_keeps_what_templates_refer_to(server: Server) -> None:
    kept = server.add("/tmpl.img", b"t" * 10)
    archive = server.add("/nerdctl.tgz", b"n" * 10)
    gone = server.add("/other.img", b"o" * 10)
    for url in (kept, archive, gone):
        download.download(url)
    paths.templates_dir().mkdir(parents=True)
    (paths.templates_dir() / "mine.yaml").write_text(
        f"images:\n- location: {kept}\n  arch: x86_64\n"
        f"containerd:\n  archives:\n  - location: {archive}\n    arch: x86_64\n")
    _limactl("prune", "--keep-referred")
    assert set(download.cache_entries()) == {download.cache_key(kept),
                                             download.cache_key(archive)}


def test_prune_keep_referred_refuses_while_an_instance_is_set_up(server: Server) -> None:
    from lima.commands.prune import referred_keys
    from lima.errors import BusyError

    url = server.add("/x.img", b"x")
    download.download(url)
    (paths.lima_home() / "half").mkdir(parents=True)  # no lima.yaml yet
    with pytest.raises(BusyError, match="half"):
        referred_keys()
    assert download.cache_key(url) in download.cache_entries()
