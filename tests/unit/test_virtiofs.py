"""mountType virtiofs: where virtiofsd is found, its command lines, the queue size default
(lima.drivers.virtiofs, lima.schemas.defaults); pure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lima.drivers import virtiofs
from lima.drivers.virtiofs import (
    C_FLAVOR,
    FD_PLACEHOLDER,
    RUST_FLAVOR,
    DaemonCommand,
    daemon_argv,
    daemon_commands,
    find_virtiofsd,
    with_fd,
)
from lima.errors import PermanentError
from lima.schemas.defaults import fill
from lima.schemas.spec import Mount
from tests.unit.test_defaults import HOST
from tests.unit.test_qemu_argv import make_spec

C = "/usr/lib/qemu/virtiofsd"
MOUNTS = (Mount(location="/h/ro", mount_point="/mnt/ro"),
          Mount(location="/h/a,b", mount_point="/mnt/rw", writable=True))


def test_found_on_path_first() -> None:
    assert find_virtiofsd(lambda _n: "/opt/bin/virtiofsd", lambda _p: True) == \
        "/opt/bin/virtiofsd"


def test_found_in_libexec_before_debian_qemu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virtiofs.os, "access", lambda _p, _m: True)
    both = {"/usr/libexec/virtiofsd", C}
    assert find_virtiofsd(lambda _n: None, both.__contains__) == "/usr/libexec/virtiofsd"
    assert find_virtiofsd(lambda _n: None, {C}.__contains__) == C


def test_found_through_a_vhost_user_description(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU's share/qemu/vhost-user/*.json, which Lima reads: only a `type: fs` entry."""
    (tmp_path / "40-gpu.json").write_text(json.dumps({"type": "gpu", "binary": "/x/gpu"}))
    (tmp_path / "50-fs.json").write_text(json.dumps({"type": "fs", "binary": "/x/vfsd"}))
    (tmp_path / "60-bad.json").write_text("{")
    monkeypatch.setattr(virtiofs, "VHOST_USER_DIRS", (str(tmp_path),))
    assert find_virtiofsd(lambda _n: None, {"/x/gpu", "/x/vfsd"}.__contains__) == "/x/vfsd"
    assert find_virtiofsd(lambda _n: None, lambda _p: False) is None


def test_c_virtiofsd_as_root() -> None:
    argv = daemon_argv(C, C_FLAVOR, "/h/a,b\\c", as_root=True)
    # The socket comes as a descriptor; a comma in the directory is escaped for fuse.
    assert argv == [C, f"--fd={FD_PLACEHOLDER}", "-o", "source=/h/a\\,b\\\\c",
                    "-o", "cache=auto"]


def test_c_virtiofsd_unprivileged_runs_in_a_user_namespace() -> None:
    argv = daemon_argv(C, C_FLAVOR, "/h", as_root=False)
    assert argv[:5] == ["unshare", "--user", "--map-current-user", "--keep-caps", "--"]
    assert argv[5:] == [C, f"--fd={FD_PLACEHOLDER}", "-o", "source=/h", "-o", "cache=auto",
                        "--rlimit-nofile=0"]


def test_rust_virtiofsd_is_run_as_is() -> None:
    for root in (True, False):
        assert daemon_argv("/usr/libexec/virtiofsd", RUST_FLAVOR, "/h", as_root=root) == [
            "/usr/libexec/virtiofsd", f"--fd={FD_PLACEHOLDER}", "--shared-dir=/h"]


def test_one_daemon_per_mount_with_lima_socket_names(tmp_path: Path) -> None:
    spec = make_spec(mount_type="virtiofs", mounts=MOUNTS)
    cmds = daemon_commands(spec, tmp_path, binary=C, flavor=C_FLAVOR, as_root=True)
    assert [(c.index, c.socket, c.location) for c in cmds] == [
        (0, f"{tmp_path}/virtiofsd-0.sock", "/h/ro"),
        (1, f"{tmp_path}/virtiofsd-1.sock", "/h/a,b")]
    assert with_fd(cmds[1].argv, 7)[1] == "--fd=7"
    # What limactl hands the host agent survives the trip through JSON.
    assert [DaemonCommand.from_json(json.loads(json.dumps(c.to_json()))) for c in cmds] == cmds


@pytest.mark.parametrize("mount_type", ["9p", "reverse-sshfs"])
def test_no_daemons_for_other_mount_types(tmp_path: Path, mount_type: str) -> None:
    spec = make_spec(mount_type=mount_type, mounts=MOUNTS)
    assert daemon_commands(spec, tmp_path, binary=None) == []
    assert daemon_commands(make_spec(mount_type="virtiofs"), tmp_path) == []  # no mounts


def test_no_virtiofsd_is_a_permanent_start_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virtiofs, "find_virtiofsd", lambda: None)
    with pytest.raises(PermanentError, match=r'"virtiofs" needs virtiofsd.*qemu-system-common'):
        daemon_commands(make_spec(mount_type="virtiofs", mounts=MOUNTS), tmp_path)


def test_socket_path_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    with pytest.raises(PermanentError, match="too long"):
        daemon_commands(make_spec(mount_type="virtiofs", mounts=MOUNTS), deep, binary=C,
                        flavor=C_FLAVOR, as_root=True)


def test_bad_daemon_json_is_refused() -> None:
    for bad in ([], {"index": 0, "socket": "s", "location": "l", "argv": []},
                {"index": 0, "socket": "s", "location": "l", "argv": [1]}):
        with pytest.raises(ValueError):
            DaemonCommand.from_json(bad)


def test_queue_size_filled_like_limas_qemu_driver(tmp_path: Path) -> None:
    def filled(doc: dict[str, object]) -> list[object]:
        out = fill(doc, name="dev", lima_home=tmp_path, host=HOST)
        return [m.get("virtiofs") for m in out["mounts"]]

    mounts = [{"location": "/a"}, {"location": "/b", "virtiofs": {"queueSize": 256}}]
    assert filled({"mountType": "virtiofs", "mounts": mounts}) == [
        {"queueSize": 1024}, {"queueSize": 256}]
    # Other mount types (and other drivers) leave it unset, as Lima does.
    assert filled({"mountType": "9p", "mounts": mounts})[0] is None
    assert filled({"vmType": "vz", "mountType": "virtiofs", "mounts": mounts})[0] is None


def test_queue_size_reaches_the_device(tmp_path: Path) -> None:
    spec = make_spec(mount_type="virtiofs", mounts=(
        dataclasses.replace(MOUNTS[0], virtiofs={"queueSize": 128}),))
    [device] = [a for a in virtiofs.device_args(spec, tmp_path) if a.startswith("vhost")]
    assert device.startswith("vhost-user-fs-pci,queue-size=128,chardev=char-virtiofs-0,")
