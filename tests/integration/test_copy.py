"""`limactl copy` on real guests, the cases of Lima's copy.bats.

Two tiny guests (no rsync in them, so `auto` takes scp): files and directories both ways,
with and without trailing slashes, and guest to guest. The rsync backend, and `auto`
choosing it, are checked on the shared Debian instance (test_debian_shared.py;
build:debian-12 has rsync).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl

pytestmark = pytest.mark.integration


def _tiny(tmp_path: Path, name: str) -> Path:
    f = tmp_path / f"{name}.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", f)
    return f


def _dir_cases(limactl: Limactl, inst: str, tmp_path: Path, backend: str) -> None:
    """copy.bats' directory cases, host to guest then guest to host."""
    src = tmp_path / backend / "foo"
    (src / "bar").mkdir(parents=True)
    (src / "bar" / "x").write_text("x\n")
    g = f"/tmp/c-{backend}"
    sh = lambda *a: limactl("shell", inst, *a)  # noqa: E731
    sh("mkdir", "-p", g)
    b = f"--backend={backend}"

    limactl("copy", b, "-r", str(src), f"{inst}:{g}/foo")
    assert sh("cat", f"{g}/foo/bar/x").stdout == "x\n"
    for case, s, d in (("src_slash", f"{src}/", f"{g}/src_slash"),
                       ("dst_slash", str(src), f"{g}/dst_slash/"),
                       ("both_slash", f"{src}/", f"{g}/both_slash/")):
        sh("mkdir", "-p", f"{g}/{case}")
        limactl("copy", b, "-r", s, f"{inst}:{d}")
        found = limactl("shell", inst, "test", "-d", f"{g}/{case}/foo/bar", check=False)
        assert found.returncode == 0, case

    back = tmp_path / backend / "back"
    back.mkdir()
    limactl("copy", b, "-r", f"{inst}:{g}/foo", str(back / "foo"))
    assert (back / "foo" / "bar" / "x").read_text() == "x\n"
    limactl("copy", b, "-r", f"{inst}:{g}/foo/", str(back / "src_slash"))
    assert (back / "src_slash" / "bar").is_dir()
    limactl("copy", b, "-r", f"{inst}:{g}/foo", f"{back}/dst_slash/")
    assert (back / "dst_slash" / "bar").is_dir()
    limactl("copy", b, "-r", f"{inst}:{g}/foo/", f"{back}/both_slash/")
    assert (back / "both_slash" / "bar").is_dir()


def _file_cases(limactl: Limactl, inst: str, tmp_path: Path, backend: str) -> None:
    hello = tmp_path / f"hello-{backend}.txt"
    hello.write_text("hello\n")
    limactl("copy", f"--backend={backend}", str(hello), f"{inst}:/tmp/hello.txt")
    assert limactl("shell", inst, "cat", "/tmp/hello.txt").stdout == "hello\n"
    limactl("shell", inst, "sh", "-c", "echo guest > /tmp/g.txt")
    out = tmp_path / f"g-{backend}.txt"
    limactl("copy", f"--backend={backend}", f"{inst}:/tmp/g.txt", str(out))
    assert out.read_text() == "guest\n"


def test_copy_scp_on_tiny_both_ways_and_between_guests(limactl: Limactl,
                                                       tmp_path: Path) -> None:
    limactl("apply", str(_tiny(tmp_path, "a")), timeout=600)
    _file_cases(limactl, "a", tmp_path, "scp")
    _dir_cases(limactl, "a", tmp_path, "scp")
    # auto: the tiny guest has no rsync, so scp is used (and works).
    auto = limactl("--debug", "copy", str(tmp_path / "hello-scp.txt"), "a:/tmp/auto.txt")
    assert "falling back to scp" in auto.stderr or "rsync not available" in auto.stderr
    assert limactl("shell", "a", "cat", "/tmp/auto.txt").stdout == "hello\n"
    forced = limactl("copy", "--backend=rsync", str(tmp_path / "hello-scp.txt"), "a:/tmp/",
                     check=False)
    assert forced.returncode == 1
    assert "rsync not available on guest(s)" in forced.stderr

    # Guest to guest: to itself, then to a second instance (through the host, scp -3).
    limactl("copy", "a:/tmp/hello.txt", "a:/tmp/self.txt")
    assert limactl("shell", "a", "cat", "/tmp/self.txt").stdout == "hello\n"
    limactl("apply", str(_tiny(tmp_path, "b")), timeout=600)
    limactl("copy", "a:/tmp/hello.txt", "b:/tmp/")
    assert limactl("shell", "b", "cat", "/tmp/hello.txt").stdout == "hello\n"
    limactl("copy", "-r", "a:/tmp/c-scp/foo", "b:/tmp/foo")
    assert limactl("shell", "b", "cat", "/tmp/foo/bar/x").stdout == "x\n"

    # Errors: a missing guest file (scp's own message, exit 1) and a stopped instance.
    missing = limactl("copy", "a:/nonexistent", str(tmp_path), check=False)
    assert missing.returncode == 1
    assert "No such file" in missing.stderr
    limactl("stop", "b", timeout=300)
    stopped = limactl("copy", str(tmp_path / "hello-scp.txt"), "b:/tmp/", check=False)
    assert stopped.returncode == 1
    assert "instance `b` is stopped, run `limactl start b` to start the instance" in (
        stopped.stderr)
    limactl("stop", "a", timeout=300)
