"""video.display: vnc: the value's parser (lima.schemas.vnc), the argv (lima.drivers.display
through lima.drivers.qemu), the rule, and the host agent's password and files against a
fake QMP server."""

from __future__ import annotations

import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lima.drivers import display
from lima.errors import LimaError
from lima.schemas.vnc import VncDisplay, parse_vnc_display, vnc_display_problem
from tests.unit.test_qemu_argv import build, make_spec, one, values
from tests.unit.test_qmp_client import FakeQMP
from tests.unit.test_rules import problems as problems_of


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:0,to=9", VncDisplay("127.0.0.1", 0, 9)),
    ("127.0.0.1:3", VncDisplay("127.0.0.1", 3, None)),
    ("", VncDisplay("127.0.0.1", 0, 9)),  # empty: Lima's default
])
def test_parse_vnc_display(value: str, expected: VncDisplay) -> None:
    assert parse_vnc_display(value) == expected
    assert parse_vnc_display(value).port == 5900 + expected.number


@pytest.mark.parametrize(("value", "fragment"), [
    ("0.0.0.0:0", '"0.0.0.0" is not supported'),
    (":0", 'host "" is not supported'),
    ("localhost:1", "127.0.0.1 only"),
    ("unix:/tmp/vnc.sock", "is not supported"),
    ("none", "is not supported"),
    ("127.0.0.1:0,to=9,websocket=on", "no other QEMU VNC option"),
    ("127.0.0.1:0,password=off", "no other QEMU VNC option"),
    ("127.0.0.1:5,to=2", "less than the display number"),
    ("127.0.0.1:70000", "at most"),
])
def test_vnc_display_problems(value: str, fragment: str) -> None:
    problem = vnc_display_problem(value)
    assert problem is not None and fragment in problem
    with pytest.raises(ValueError, match=r"video\.vnc\.display"):
        parse_vnc_display(value)


def test_vnc_argv_binds_loopback_with_password_and_tablet(tmp_path: Path) -> None:
    argv = build(tmp_path, make_spec(video_display="vnc", video_vnc_display="127.0.0.1:0,to=9"))
    assert one(argv, "-display") == "vnc=127.0.0.1:0,to=9,password=on"
    devices = values(argv, "-device")
    assert {"virtio-vga", "virtio-keyboard-pci", "virtio-tablet-pci"} <= set(devices)
    assert "virtio-mouse-pci" not in devices


def test_vnc_argv_on_aarch64_uses_virtio_gpu(tmp_path: Path) -> None:
    spec = make_spec(video_display="vnc", video_vnc_display="127.0.0.1:2", arch="aarch64")
    argv = build(tmp_path, spec, binary=["/usr/bin/qemu-system-aarch64"])
    assert one(argv, "-display") == "vnc=127.0.0.1:2,password=on"
    assert "virtio-gpu" in values(argv, "-device")


def test_vnc_argv_refuses_a_display_beyond_loopback(tmp_path: Path) -> None:
    from lima.errors import PermanentError

    spec = make_spec(video_display="vnc", video_vnc_display="0.0.0.0:0")
    with pytest.raises(PermanentError, match=r"127\.0\.0\.1 only"):
        build(tmp_path, spec)


def test_display_set_by_qemu_system_env_is_kept(tmp_path: Path) -> None:
    spec = make_spec(video_display="vnc", video_vnc_display="127.0.0.1:0")
    argv = build(tmp_path, spec, binary=["/usr/bin/qemu-system-x86_64", "-display", "none"])
    assert values(argv, "-display") == ["none"]


def test_hostagent_args_only_for_vnc() -> None:
    assert display.hostagent_args(make_spec()) == ()
    spec = make_spec(video_display="vnc", video_vnc_display="127.0.0.1:1,to=3")
    assert display.hostagent_args(spec) == ("--vnc", "127.0.0.1:1,to=3")


def test_password_shape_like_lima() -> None:
    for _ in range(50):
        pw = display.generate_password()
        assert len(pw) == 8 and len(set(pw)) == 8  # no character twice
        assert sum(c in string.digits for c in pw) == 2
        assert all(c in string.ascii_letters + string.digits for c in pw)
    assert len({display.generate_password() for _ in range(20)}) == 20


# ---- validation ------------------------------------------------------------------------


def test_rule_accepts_vnc_with_a_warning() -> None:
    found = problems_of("video:\n  display: vnc\n")
    assert [(p.path, p.warning) for p in found] == [("video.display", True)]
    assert "experimental" in found[0].message


@pytest.mark.parametrize(("doc", "path", "fragment"), [
    ("video:\n  display: vnc\n  vnc:\n    display: 0.0.0.0:0\n", "video.vnc.display",
     "127.0.0.1 only"),
    ("video:\n  display: vnc=0.0.0.0:0\n", "video.display", "not supported by limapy"),
    ("video:\n  display: vnc,password=off\n", "video.display", "not supported by limapy"),
])
def test_rule_refuses_vnc_beyond_loopback(doc: str, path: str, fragment: str) -> None:
    errors = [p for p in problems_of(doc) if not p.warning]
    assert [p.path for p in errors] == [path]
    assert fragment in errors[0].message


# ---- the host agent's side: password over QMP, files -----------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A unix socket path must stay short: pytest's tmp_path can be too long.
    with tempfile.TemporaryDirectory(prefix="vnc-", dir="/tmp") as d:
        yield Path(d)


def _vnc_qmp(service: str, enabled: bool = True) -> Any:
    def handler(msg: dict[str, Any]) -> list[dict[str, Any]]:
        cmd, mid = msg["execute"], msg.get("id")
        if cmd == "qmp_capabilities":
            return [{"return": {}, "id": mid}]
        if cmd == "change-vnc-password":
            if not enabled:
                return [{"error": {"class": "GenericError", "desc": "no VNC"}, "id": mid}]
            return [{"return": {}, "id": mid}]
        if cmd == "query-vnc":
            return [{"return": {"enabled": enabled, "host": "127.0.0.1", "service": service,
                                "family": "ipv4", "auth": "vnc", "clients": []}, "id": mid}]
        return [{"error": {"class": "CommandNotFound", "desc": cmd}, "id": mid}]
    return handler


def test_setup_vnc_sets_password_and_writes_files(short_dir: Path) -> None:
    fake = FakeQMP(short_dir / "qmp.sock", _vnc_qmp("5903"))
    try:
        info = display.setup_vnc(short_dir, "127.0.0.1:0,to=9", wait=5)
    finally:
        fake.close()
    sent = [m for m in fake.received if m["execute"] == "change-vnc-password"]
    assert len(sent) == 1
    password = (short_dir / "vncpassword").read_text()
    assert sent[0]["arguments"] == {"password": password}
    # The display QEMU took (5903: 0..2 were busy), not the one asked for.
    assert (short_dir / "vncdisplay").read_text() == "127.0.0.1:3"
    assert info.url == "vnc://127.0.0.1:5903"
    for name in ("vncpassword", "vncdisplay"):
        assert (short_dir / name).stat().st_mode & 0o777 == 0o600
    lines = display.vnc_summary(short_dir)
    assert lines[0] == "VNC server running at 127.0.0.1:3 <vnc://127.0.0.1:5903>"
    assert lines[2] == f"VNC Password: `{short_dir / 'vncpassword'}`"
    display.remove_vnc_files(short_dir)
    assert not (short_dir / "vncpassword").exists() and not (short_dir / "vncdisplay").exists()
    assert display.vnc_summary(short_dir) == []
    display.remove_vnc_files(short_dir)  # nothing left: no error


def test_setup_vnc_without_vnc_server_fails_and_writes_nothing(short_dir: Path) -> None:
    fake = FakeQMP(short_dir / "qmp.sock", _vnc_qmp("", enabled=False))
    try:
        with pytest.raises(LimaError, match="refused the VNC password"):
            display.setup_vnc(short_dir, "127.0.0.1:0", wait=5)
    finally:
        fake.close()
    assert not (short_dir / "vncpassword").exists()


def test_setup_vnc_gives_up_when_qmp_never_answers(short_dir: Path) -> None:
    with pytest.raises(LimaError, match="cannot set the VNC password"):
        display.setup_vnc(short_dir, "127.0.0.1:0", wait=0.3)
    assert not (short_dir / "vncdisplay").exists()
