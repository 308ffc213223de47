"""The image caches are immutable to instances, and a changed cache entry is not used.

Instances get their own inode for every file (reflink or copy): a write, append or chmod
through an instance's basedisk, kernel or initrd leaves the cache and every other
instance as they were. A build-cache entry records its products' sha256 when it is built
and a download-cache entry its data's; a cache hit re-hashes them, and an entry that no
longer matches is built or downloaded again instead of used. The build here is a fake
recipe (qemu-img and a few bytes), the download server is on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import logging
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from lima.drivers import runner
from lima.drivers.images import build, download, prepare_disks
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
