"""Base images that name host files are refused (Lima's CVE-2023-32684), with real qemu-img.

A qcow2 with a backing file or an external data file makes qemu read that host file as
the guest's disk. prepare_disks must refuse such an image whatever its source (a local
file, a compressed local file, a download, a `build:` product), before anything takes its
final name in the instance; and the driver's pre-boot check must refuse an instance whose
disks were damaged or swapped after create, with qemu-img's own words.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import pytest

from lima.drivers import runner
from lima.drivers.images import check_instance_disks, prepare_disks
from lima.errors import PermanentError
from tests.component.imagekit import FileServer, MiB, inst, spec

SECRET = "/etc/passwd"  # a host file every machine has


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return cache


def qemu_img(*args: str | Path) -> None:
    runner.run(["qemu-img", *args])


def with_backing(tmp_path: Path, name: str = "evil.qcow2") -> Path:
    path = tmp_path / name
    qemu_img("create", "-q", "-f", "qcow2", "-b", SECRET, "-F", "raw", path)
    return path


def with_data_file(tmp_path: Path, data_file: Path) -> Path:
    path = tmp_path / "evil-data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data_file},data_file_raw=on",
             path, "1M")
    return path


def good_qcow2(tmp_path: Path, name: str = "good.qcow2") -> Path:
    path = tmp_path / name
    qemu_img("create", "-q", "-f", "qcow2", path, "32M")
    return path


def info(path: Path) -> dict[str, object]:
    out = runner.run(["qemu-img", "info", "-U", "--output=json", path]).stdout
    result: dict[str, object] = json.loads(out)
    return result


def assert_nothing_placed(d: Path) -> None:
    left = sorted(p.name for p in d.iterdir()) if d.exists() else []
    assert left == [], left


def test_local_image_with_a_backing_file_is_refused(tmp_path: Path) -> None:
    evil = with_backing(tmp_path)
    d = inst()
    with pytest.raises(PermanentError) as err:
        prepare_disks(spec(str(evil)), d)
    msg = str(err.value)
    assert str(evil) in msg and SECRET in msg
    assert "backing file" in msg and "CVE-2023-32684" in msg
    assert_nothing_placed(d)


def test_local_image_with_an_external_data_file_is_refused(tmp_path: Path) -> None:
    # The data file is a host file the image's author picks; it need not exist yet.
    target = tmp_path / "host-secret.raw"
    target.write_bytes(b"secret" * 100)
    evil = with_data_file(tmp_path, target)
    d = inst()
    with pytest.raises(PermanentError) as err:
        prepare_disks(spec(f"file://{evil}"), d)
    msg = str(err.value)
    assert str(target) in msg and "external data file" in msg
    assert_nothing_placed(d)


def test_compressed_local_image_is_checked_after_expanding(tmp_path: Path) -> None:
    evil = with_backing(tmp_path)
    packed = tmp_path / "evil.qcow2.gz"
    packed.write_bytes(gzip.compress(evil.read_bytes()))
    d = inst()
    with pytest.raises(PermanentError, match=f"evil.qcow2.gz: refusing .*{SECRET}"):
        prepare_disks(spec(str(packed)), d)
    assert_nothing_placed(d)


def test_downloaded_image_with_a_backing_file_is_refused(tmp_path: Path) -> None:
    data = with_backing(tmp_path).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    d = inst()
    with FileServer() as srv:
        url = srv.add("/evil.qcow2", data)
        for _ in range(2):  # downloaded, then from the cache: refused both times
            with pytest.raises(PermanentError) as err:
                prepare_disks(spec(url, digest=digest), d)
            assert url in str(err.value) and SECRET in str(err.value)
            assert_nothing_placed(d)
        assert srv.gets["/evil.qcow2"] == 1


def test_built_image_with_a_backing_file_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lima.drivers.images.build import BuiltImage

    evil = with_backing(tmp_path)
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"k")
    fake = types.ModuleType("lima.drivers.images.build")
    fake.build_image = lambda name: BuiltImage(  # type: ignore[attr-defined]
        evil, kernel, None, "console=ttyS0")
    monkeypatch.setitem(sys.modules, "lima.drivers.images.build", fake)
    d = inst()
    with pytest.raises(PermanentError, match=f"build:evil: refusing .*{SECRET}"):
        prepare_disks(spec("build:evil"), d)
    assert_nothing_placed(d)


def test_other_formats_are_refused(tmp_path: Path) -> None:
    vmdk = tmp_path / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", vmdk, "1M")
    d = inst()
    with pytest.raises(PermanentError, match="qemu-img sees format 'vmdk'"):
        prepare_disks(spec(str(vmdk)), d)
    assert_nothing_placed(d)


def test_a_refused_candidate_falls_through_to_the_next(tmp_path: Path) -> None:
    evil, good = with_backing(tmp_path), good_qcow2(tmp_path)
    d = inst()
    prepare_disks(spec(str(evil), str(good)), d)
    assert (d / "basedisk").read_bytes() == good.read_bytes()
    assert "backing-filename" not in info(d / "basedisk")


def test_good_images_pass_and_the_instance_boots_checked(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(MiB))  # noise: qemu-img sees raw, which is allowed
    for name, src in (("q", good_qcow2(tmp_path)), ("r", raw)):
        d = inst(name)
        prepare_disks(spec(str(src)), d)
        check_instance_disks(d)  # no error


# ------------------------------------------------------------- the driver's pre-boot check

@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    d = inst()
    prepare_disks(spec(str(good_qcow2(tmp_path))), d)
    check_instance_disks(d)
    return d


def test_garbage_basedisk_fails_with_qemu_imgs_words(prepared: Path) -> None:
    (prepared / "basedisk").write_bytes(os.urandom(MiB))
    with pytest.raises(PermanentError) as err:
        check_instance_disks(prepared)
    msg = str(err.value)
    assert str(prepared / "basedisk") in msg
    assert "Image is not in qcow2 format" in msg  # qemu-img's own words
    assert "delete the instance" in msg


def test_basedisk_swapped_for_one_with_a_backing_file(prepared: Path, tmp_path: Path) -> None:
    os.replace(with_backing(tmp_path), prepared / "basedisk")
    with pytest.raises(PermanentError, match=f"names the host file {SECRET} as its backing"):
        check_instance_disks(prepared)


def test_diffdisk_rebased_onto_a_host_file(prepared: Path) -> None:
    qemu_img("rebase", "-u", "-b", SECRET, "-F", "raw", prepared / "diffdisk")
    with pytest.raises(PermanentError, match=f"diffdisk: refusing to boot: .*{SECRET}"):
        check_instance_disks(prepared)


def test_missing_and_truncated_disks(prepared: Path) -> None:
    (prepared / "diffdisk").write_bytes(b"")
    with pytest.raises(PermanentError, match="diffdisk: qemu-img sees format 'raw'"):
        check_instance_disks(prepared)
    (prepared / "diffdisk").unlink()
    with pytest.raises(PermanentError, match="diffdisk is missing"):
        check_instance_disks(prepared)
