"""The image caches are immutable to instances, and a changed cache entry is not used.

Instances get their own inode for every file (reflink or copy): a write, append or chmod
through an instance's basedisk, kernel or initrd leaves the cache and every other
instance as they were. A build-cache entry records its products' sha256 when it is built
and a download-cache entry its data's; a cache hit re-hashes them (a build entry: unless
no file was written since they last matched), and an entry that no longer matches is built
or downloaded again instead of used. The build here is a fake
recipe (qemu-img and a few bytes), the download server is on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from lima.drivers import runner
from lima.drivers.images import baserecord, build, disks, download, prepare_disks
from lima.drivers.images.build import BuildContext
from tests.component.imagekit import FileServer, inst, spec

PRODUCTS = ("image.qcow2", "kernel", "initrd")
IN_INSTANCE = {"image.qcow2": "basedisk", "kernel": "kernel", "initrd": "initrd"}


class FakeRecipe:
    """A recipe that builds in milliseconds and counts its builds."""

    name = "fake"
    tools = (("qemu-img", "qemu-utils"),)
    needs_root = False

    def __init__(self) -> None:
        self.builds = 0

    def inputs(self) -> Mapping[str, object]:
        return {"recipe": "fake-1"}

    def build(self, ctx: BuildContext) -> None:
        self.builds += 1
        ctx.run(["qemu-img", "create", "-q", "-f", "qcow2", ctx.workdir / build.IMAGE, "32M"])
        (ctx.workdir / build.KERNEL).write_bytes(b"kernel " * 1000)
        (ctx.workdir / build.INITRD).write_bytes(b"initrd " * 1000)
        (ctx.workdir / build.CMDLINE).write_text("console=ttyS0")


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRecipe:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    fake = FakeRecipe()
    monkeypatch.setattr(build, "_recipes", lambda: {"fake": fake})
    return fake


def entry_of(product: build.BuiltImage) -> Path:
    return product.image.parent


def facts(path: Path) -> tuple[str, int]:
    """What must not change: the bytes (as a digest) and the mode."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(path.stat().st_mode)


def test_writes_and_chmods_in_one_instance_reach_neither_cache_nor_others(
        recipe: FakeRecipe) -> None:
    a, b = inst("a"), inst("b")
    prepare_disks(spec("build:fake"), a)
    prepare_disks(spec("build:fake"), b)
    assert recipe.builds == 1
    entry = entry_of(build.build_image("fake", progress=False))
    cache_before = {name: facts(entry / name) for name in PRODUCTS}
    b_before = {name: facts(b / name) for name in IN_INSTANCE.values()}

    for name in IN_INSTANCE.values():
        path = a / name
        path.chmod(0o666)
        with path.open("ab") as f:
            f.write(b"written through instance a")
        with path.open("r+b") as f:  # and in place, over the first bytes
            f.write(b"\0" * 16)

    assert {name: facts(entry / name) for name in PRODUCTS} == cache_before
    assert {name: facts(b / name) for name in IN_INSTANCE.values()} == b_before
    # And what the cache still holds is what a third instance gets.
    c = inst("c")
    prepare_disks(spec("build:fake"), c)
    assert {IN_INSTANCE[n]: facts(c / IN_INSTANCE[n])[0] for n in PRODUCTS} == \
        {IN_INSTANCE[n]: d for n, (d, _) in cache_before.items()}
    assert recipe.builds == 1
    assert [n for n in IN_INSTANCE.values() if (a / n).stat().st_nlink != 1] == []


def test_a_built_entry_is_read_only_and_records_its_digests(recipe: FakeRecipe) -> None:
    entry = entry_of(build.build_image("fake", progress=False))
    sums: dict[str, str] = {}
    for line in (entry / build.SHA256SUMS).read_text().splitlines():
        digest, name = line.split("  ")  # the format `sha256sum -c` reads
        sums[name] = digest
    for name in (*PRODUCTS, build.CMDLINE):
        assert stat.S_IMODE((entry / name).stat().st_mode) == 0o444, name
        assert sums[name] == hashlib.sha256((entry / name).read_bytes()).hexdigest()
    assert build.entry_problems(entry) == []


@pytest.mark.parametrize("name", PRODUCTS)
def test_a_changed_build_entry_is_built_again(
        recipe: FakeRecipe, name: str, caplog: pytest.LogCaptureFixture) -> None:
    entry = entry_of(build.build_image("fake", progress=False))
    clean = facts(entry / name)[0]
    (entry / name).chmod(0o644)
    with (entry / name).open("ab") as f:
        f.write(b"tampered")
    assert build.cached_image("fake") is None  # not handed out any more

    with caplog.at_level(logging.WARNING):
        prepare_disks(spec("build:fake"), inst("d"))
    assert recipe.builds == 2
    assert f"{name} has sha256" in caplog.text and "building it again" in caplog.text
    assert facts(inst("d") / IN_INSTANCE[name])[0] == clean
    assert facts(entry / name) == (clean, 0o444)


def test_an_entry_unchanged_since_its_check_is_not_hashed_again(
        recipe: FakeRecipe, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that passed records each file's stat; while they are all the same, the next
    create takes the entry (and the image's digest for basedisk.json) without hashing.
    Any write, even of the same size, changes a file's ctime and the entry is hashed."""
    entry = entry_of(build.build_image("fake", progress=False))
    kernel = entry / build.KERNEL
    kernel.chmod(0o644)  # before the stamp: the write below is what changes it
    assert build.cached_image("fake") is not None
    assert not (entry / build.VERIFIED).exists()  # written a moment ago: racy, no stamp
    monkeypatch.setattr(build, "RACY_NS", 0)
    assert build.cached_image("fake") is not None
    assert (entry / build.VERIFIED).exists()

    hashed: list[Path] = []
    real_sha, real_digest = build._sha256, baserecord.digest_file
    monkeypatch.setattr(build, "_sha256", lambda p: hashed.append(p) or real_sha(p))
    monkeypatch.setattr(baserecord, "digest_file",
                        lambda p: hashed.append(p) or real_digest(p))
    d = inst("d")
    prepare_disks(spec("build:fake"), d)
    assert hashed == []
    record = json.loads((d / "basedisk.json").read_text())
    assert record["sha256"] == hashlib.sha256((d / "basedisk").read_bytes()).hexdigest()
    assert record["size"] == (d / "basedisk").stat().st_size

    time.sleep(0.05)  # past the timestamps' granularity
    with kernel.open("r+b") as f:
        f.write(b"K")  # same size, same mode
    assert build.cached_image("fake") is None
    assert kernel in hashed


def test_an_image_changed_while_it_is_copied_is_hashed_in_the_instance(
        recipe: FakeRecipe, monkeypatch: pytest.MonkeyPatch) -> None:
    """basedisk.json takes the checked digest only when the image was not written between
    the check and the copy; otherwise it hashes the copy, and records what it holds."""
    entry = entry_of(build.build_image("fake", progress=False))
    monkeypatch.setattr(build, "RACY_NS", 0)
    assert build.cached_image("fake") is not None
    real_clone = disks.clone_file

    def clone_then_touch(src: Path, dst: Path) -> None:
        real_clone(src, dst)
        if src.name == build.IMAGE:  # a write to the cache's image right after the copy
            time.sleep(0.05)
            os.utime(src)

    monkeypatch.setattr(disks, "clone_file", clone_then_touch)
    hashed: list[Path] = []
    real_digest = baserecord.digest_file
    monkeypatch.setattr(baserecord, "digest_file",
                        lambda p: hashed.append(p) or real_digest(p))
    d = inst("d")
    prepare_disks(spec("build:fake"), d)
    assert hashed == [d / "basedisk"]
    assert json.loads((d / "basedisk.json").read_text())["sha256"] == \
        hashlib.sha256((d / "basedisk").read_bytes()).hexdigest()
    assert entry.is_dir()


def test_an_entry_from_before_sha256sums_is_sealed_not_rebuilt(recipe: FakeRecipe) -> None:
    entry = entry_of(build.build_image("fake", progress=False))
    (entry / build.SHA256SUMS).unlink()
    for name in PRODUCTS:
        (entry / name).chmod(0o644)
    assert build.build_image("fake", progress=False).image == entry / build.IMAGE
    assert recipe.builds == 1
    assert build.entry_problems(entry) == []
    assert stat.S_IMODE((entry / "kernel").stat().st_mode) == 0o444


@pytest.mark.parametrize("with_digest", [True, False])
def test_a_changed_download_entry_is_downloaded_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_digest: bool) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    image = tmp_path / "img.qcow2"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"])
    data = image.read_bytes()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}" if with_digest else None
    with FileServer() as srv:
        url = srv.add("/img.qcow2", data)
        a = inst("a")
        prepare_disks(spec(url, digest=digest), a)
        cached = download.entry_dir(url) / download.DATA
        cached.chmod(0o644)
        with cached.open("r+b") as f:
            f.write(b"tampered")

        b = inst("b")
        prepare_disks(spec(url, digest=digest), b)
        assert srv.gets["/img.qcow2"] == 2
        assert (b / "basedisk").read_bytes() == data
        assert cached.read_bytes() == data
        assert (a / "basedisk").stat().st_ino != cached.stat().st_ino

        # An entry that still matches is used without a download.
        prepare_disks(spec(url, digest=digest), inst("c"))
        assert srv.gets["/img.qcow2"] == 2
