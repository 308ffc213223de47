"""`limactl factory-reset`, `limactl restart` (without a VM: its refusals and what it asks
of the reconciler) and `limactl delete`'s edge cases, through `limactl` as a subprocess
(Lima's messages are log lines on stderr) or in-process where the reconciler is stubbed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lima import schemas
from lima.commands import lifecycle
from lima.commands import restart as restart_mod
from lima.controller import managed
from lima.controller.lock import instance_lock
from lima.drivers import store
from lima.drivers.disklayout import disks_present
from lima.drivers.images.repair import repair_disks
from tests.component import cli
from tests.component.test_clone_rename import BOOT_LEFTOVERS, YAML, tree

REPO = Path(__file__).resolve().parents[2]


def limactl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lima.cli", *args], cwd=REPO,
                          env={**os.environ, "LIMA_HOME": str(home)}, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def vm(tmp_path: Path, _isolated_home: Path) -> Path:
    """Instance `vm` created from a local image, then left as a boot leaves it."""
    image = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    f = tmp_path / "vm.yaml"
    f.write_text(YAML.format(image=image))
    assert limactl(_isolated_home, "create", str(f)).returncode == 0
    inst = _isolated_home / "vm"
    for entry in BOOT_LEFTOVERS:
        (inst / entry).write_text("1\n" if entry.endswith(".pid") else "x")
    (inst / "cloud-config.yaml").write_text("#cloud-config\n")
    (inst / "notes.txt").write_text("mine")
    return inst


# --- factory-reset -------------------------------------------------------------------------


def test_factory_reset_removes_the_disks_and_keeps_the_config(vm: Path,
                                                              _isolated_home: Path) -> None:
    config = (vm / "lima.yaml").read_bytes()
    proc = limactl(_isolated_home, "factory-reset", "vm")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in vm.iterdir()) == [
        "cloud-config.yaml", "lima-version", "lima.yaml", "notes.txt"]
    assert (vm / "lima.yaml").read_bytes() == config
    assert f"Removing `{vm / 'diffdisk'}`" in proc.stderr
    assert "Instance `vm` has been factory reset" in proc.stderr
    assert "everything the guest wrote" in proc.stderr  # what is lost, said plainly
    assert "limactl did not create them): notes.txt" in proc.stderr
    # Not Broken: a never booted instance whose next start prepares fresh disks.
    assert store.inspect_processes("vm", vm).status == store.STATUS_STOPPED
    assert not disks_present(vm)
    repair_disks(schemas.load_instance("vm").spec, vm)
    assert disks_present(vm)


def test_factory_reset_of_a_missing_instance_is_not_an_error(_isolated_home: Path) -> None:
    proc = limactl(_isolated_home, "factory-reset", "nope")
    assert proc.returncode == 0
    assert "Instance `nope` not found" in proc.stderr


def test_factory_reset_refuses_a_protected_instance(vm: Path, _isolated_home: Path) -> None:
    (vm / "protected").touch()
    before = tree(vm)
    proc = limactl(_isolated_home, "factory-reset", "vm")
    assert proc.returncode == 1
    assert ("instance is protected to prohibit accidental factory-reset (Hint: use "
            "`limactl unprotect`)") in proc.stderr
    assert tree(vm) == before


def test_factory_reset_refuses_a_managed_instance(vm: Path, _isolated_home: Path) -> None:
    with instance_lock("vm"):
        managed.set_ownership("vm", managed.Ownership("controller:/f", "/f/vm.yaml", ""))
    before = tree(vm)
    proc = limactl(_isolated_home, "factory-reset", "vm")
    assert proc.returncode == 1 and "managed by controller:/f" in proc.stderr
    assert tree(vm) == before


def test_factory_reset_kills_a_running_instance_first(
    vm: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stops: list[bool] = []
    state = [store.STATUS_RUNNING]
    real = store.inspect_processes

    def inspect(name: str, inst_dir: Path) -> store.Inspection:
        ins = real(name, inst_dir)
        ins.status = state[0]
        return ins

    def stop(name: str, *, force: bool, **_: object) -> None:
        stops.append(force)
        state[0] = store.STATUS_STOPPED

    monkeypatch.setattr(store, "inspect_processes", inspect)
    monkeypatch.setattr(lifecycle, "stop_instance", stop)
    code, _, err = cli.run_cli(["factory-reset", "vm"], capsys)
    assert code == 0, err
    assert stops == [True]  # as Lima: StopForcibly
    assert not (vm / "diffdisk").exists()


# --- restart ---------------------------------------------------------------------------------


def test_restart_of_a_missing_instance(_isolated_home: Path) -> None:
    proc = limactl(_isolated_home, "restart", "nope")
    assert proc.returncode == 1 and "instance 'nope' does not exist" in proc.stderr


@pytest.mark.parametrize(("args", "status", "stops", "warned"), [
    (["restart", "vm"], store.STATUS_STOPPED, [], True),
    (["restart", "vm"], store.STATUS_RUNNING, [False], False),
    (["restart", "-f", "vm"], store.STATUS_RUNNING, [True], False),
    (["restart", "--force", "vm"], store.STATUS_STOPPED, [True], False),
])
def test_restart_stops_then_starts_through_the_lifecycle(
    vm: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    args: list[str], status: str, stops: list[bool], warned: bool,
) -> None:
    calls: list[str] = []
    real = store.inspect_processes

    def inspect(name: str, inst_dir: Path) -> store.Inspection:
        ins = real(name, inst_dir)
        ins.status = status
        return ins

    def stop(name: str, *, force: bool, **_: object) -> None:
        calls.append(f"stop force={force}")

    def start(name: str, timeout: float = 0) -> None:
        calls.append(f"start {name} {timeout:g}")

    monkeypatch.setattr(store, "inspect_processes", inspect)
    monkeypatch.setattr(lifecycle, "stop_instance", stop)
    monkeypatch.setattr(restart_mod, "start_existing", start)
    code, _, err = cli.run_cli([*args, "--timeout", "90"], capsys)
    assert code == 0, err
    assert calls == [*(f"stop force={f}" for f in stops), "start vm 90"]
    assert ("The instance is not running, continuing with the restart" in caplog.text) == warned


def test_restart_refuses_a_damaged_lima_yaml_before_stopping(
    vm: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (vm / "lima.yaml").write_text("cpus: [\n")
    stops: list[bool] = []
    monkeypatch.setattr(lifecycle, "stop_instance",
                        lambda name, *, force, **_: stops.append(force))
    code, _, err = cli.run_cli(["restart", "vm"], capsys)
    assert code == 1 and "lima.yaml" in err and "damaged" in err
    assert stops == []


def test_restart_with_edit_flags_writes_them_before_the_restart(
    vm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # an invalid edit is saved as ./lima.REJECTED.yaml, as edit's
    seen: list[str] = []
    monkeypatch.setattr(lifecycle, "stop_instance", lambda name, **_: seen.append("stop"))
    monkeypatch.setattr(restart_mod, "start_existing", lambda name, timeout=0: seen.append(
        f"start cpus={schemas.load_instance(name).spec.cpus}"))
    code, _, err = cli.run_cli(["restart", "--cpus", "3", "vm"], capsys)
    assert code == 0, err
    assert seen == ["start cpus=3"]  # not running: warned, started with the new lima.yaml
    before = (vm / "lima.yaml").read_bytes()
    code, _, err = cli.run_cli(["restart", "--set", ".cpus = -2", "vm"], capsys)
    assert code == 1 and "cpus" in err and (vm / "lima.yaml").read_bytes() == before
    assert (tmp_path / "lima.REJECTED.yaml").is_file()
    code, _, err = cli.run_cli(["restart", "--set", '.images[0].location = "/other.qcow2"',
                                "vm"], capsys)
    assert code == 1 and "images" in err and (vm / "lima.yaml").read_bytes() == before
    assert seen == ["start cpus=3"]  # a refused edit stops and starts nothing


# --- delete's edge cases ---------------------------------------------------------------------


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_deleting_a_missing_instance_is_a_warning(_isolated_home: Path,
                                                  force: list[str]) -> None:
    proc = limactl(_isolated_home, "delete", *force, "does-not-exist")
    assert proc.returncode == 0, proc.stderr
    assert "Ignoring non-existent instance `does-not-exist`" in proc.stderr


def test_a_directory_without_lima_yaml_is_refused_and_the_rest_deleted(
    vm: Path, _isolated_home: Path
) -> None:
    (vm / "notes.txt").unlink()
    probe = _isolated_home / "probe"
    probe.mkdir()
    (probe / "disk").write_bytes(b"a user's disk")
    proc = limactl(_isolated_home, "delete", "--force", "probe", "vm", "gone")
    assert proc.returncode == 1
    assert f"instance `probe` directory `{probe}` exists but has no lima.yaml" in proc.stderr
    assert "nothing was deleted" in proc.stderr
    assert "Ignoring non-existent instance `gone`" in proc.stderr
    assert (probe / "disk").read_bytes() == b"a user's disk"
    assert not (vm / "diffdisk").exists()  # the other names are still deleted, as in Lima
