"""Readiness's look at the markers (lima.drivers.markers.markers_command) and a resumed
guest's clock command (resumed_clock_command), run under dash (Debian) and busybox sh
(build:tiny) with a stand-in `date` and `sudo`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lima.drivers.markers import markers_command, parse_resumed_check, resumed_clock_command

pytestmark = [pytest.mark.unit, pytest.mark.processes]

HOST_NOW = 1_800_000_000.2

FAKE_DATE = """#!/bin/sh
if [ "$2" = "-s" ]; then
  [ -n "$DATE_FAILS" ] && { echo "date: cannot set date: Operation not permitted" >&2; exit 1; }
  echo "$3" > "$DATE_SET"; exit 0
fi
echo "$GUEST_NOW"
"""
FAKE_SUDO = """#!/bin/sh
[ "$1" = "-n" ] && shift
echo sudo >> "$SUDO_LOG"
exec "$@"
"""


def run_check(tmp: Path, shell: str, guest_now: int, *, user: str = "lima",
              fails: bool = False, markers: bool = True,
              host_now: float = HOST_NOW) -> tuple[dict[str, str], Path]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("date", FAKE_DATE), ("sudo", FAKE_SUDO)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    ready, done = tmp / "ssh-ready", tmp / "boot-done"
    if markers:
        ready.write_text("iid-1\n")
        done.write_text("iid-1\nmore\n")
    command = (resumed_clock_command(host_now, user) + "; "
               + markers_command(ready_path=str(ready), done_path=str(done),
                                 failed_path=str(tmp / "boot-failed")))
    argv = ["dash", "-c", command] if shell == "dash" else ["busybox", "sh", "-c", command]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "GUEST_NOW": str(guest_now),
           "DATE_SET": str(tmp / "set"), "SUDO_LOG": str(tmp / "sudo"),
           **({"DATE_FAILS": "1"} if fails else {})}
    if shell == "busybox":
        env["PATH"] = f"{bin_dir}:{tmp / 'bb'}:/usr/bin:/bin"
    out = subprocess.run(argv, env={**env, "HOME": os.environ.get("HOME", "/")},
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return parse_resumed_check(out), tmp


@pytest.mark.parametrize("shell", ["dash"])
def test_a_clock_left_behind_is_set_to_the_host_time(tmp_path: Path, shell: str) -> None:
    found, tmp = run_check(tmp_path, shell, int(HOST_NOW) - 600)
    assert found["clock"] == str(int(HOST_NOW) - 600)
    assert "clock-set" in found and "clock-failed" not in found
    assert (tmp / "set").read_text().strip() == "2027-01-15 08:00:00"  # HOST_NOW + 0.5, UTC
    assert (tmp / "sudo").read_text() == "sudo\n"
    assert found["ssh-ready"] == "iid-1" and found["boot-done"] == "iid-1"


@pytest.mark.parametrize("shell", ["dash"])
@pytest.mark.parametrize("offset", [-1, 0, 1, 2])
def test_a_clock_in_step_is_left_alone(tmp_path: Path, shell: str, offset: int) -> None:
    found, tmp = run_check(tmp_path, shell, int(HOST_NOW) + offset)
    assert "clock-set" not in found and "clock-failed" not in found
    assert not (tmp / "set").exists() and not (tmp / "sudo").exists()


@pytest.mark.parametrize("offset", [-3, 4])
def test_a_clock_further_off_is_set(tmp_path: Path, offset: int) -> None:
    found, _ = run_check(tmp_path, "dash", int(HOST_NOW) + offset)
    assert "clock-set" in found


def test_root_sets_the_clock_without_sudo(tmp_path: Path) -> None:
    found, tmp = run_check(tmp_path, "dash", int(HOST_NOW) - 60, user="root")
    assert "clock-set" in found and not (tmp / "sudo").exists()


def test_a_refused_clock_says_why(tmp_path: Path) -> None:
    found, _ = run_check(tmp_path, "dash", int(HOST_NOW) - 60, fails=True)
    assert "clock-set" not in found
    assert found["clock-failed"] == "date: cannot set date: Operation not permitted"


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_missing_markers_read_empty(tmp_path: Path, shell: str) -> None:
    if shell == "busybox" and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    found, _ = run_check(tmp_path, shell, int(HOST_NOW), markers=False)
    assert found["ssh-ready"] == "" and found["boot-done"] == "" and found["boot-failed"] == ""


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
def test_the_markers_are_read_without_starting_a_program(tmp_path: Path, shell: str) -> None:
    """Builtins only: with an empty PATH the markers still read (a marker without its
    final newline too), and nothing is written to stderr."""
    if shell == "busybox" and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    (tmp_path / "ready").write_text("iid-7")
    (tmp_path / "failed").write_text("iid-7\nprovision.system/00: exit 1\n")
    command = markers_command(ready_path=str(tmp_path / "ready"),
                              done_path=str(tmp_path / "missing"),
                              failed_path=str(tmp_path / "failed"))
    argv = [shutil.which("busybox") or "busybox", "sh"] if shell == "busybox" else [
        shutil.which(shell) or shell]
    proc = subprocess.run([*argv, "-c", command], env={"PATH": str(tmp_path / "none")},
                          capture_output=True, text=True, check=True, timeout=30)
    assert parse_resumed_check(proc.stdout) == {"ssh-ready": "iid-7", "boot-done": "",
                                                "boot-failed": "iid-7"}
    assert proc.stderr == ""


@pytest.mark.skipif(shutil.which("busybox") is None, reason="no busybox")
def test_busybox_sh_sets_a_clock_behind_and_leaves_one_in_step(tmp_path: Path) -> None:
    # busybox sh runs its own `date` applet (the guest's real clock: the host's here).
    found, tmp = run_check(tmp_path, "busybox", 0, host_now=time.time())
    assert "clock-set" not in found and not (tmp / "set").exists()
    assert found["ssh-ready"] == "iid-1" and found["boot-done"] == "iid-1"
    found, tmp = run_check(tmp_path, "busybox", 0, host_now=time.time() + 600)
    assert "clock-set" in found and (tmp / "set").exists()


def test_parse_keeps_the_rest_of_each_line() -> None:
    assert parse_resumed_check("clock 12\nclock-set\n\nssh-ready iid-9 \n") == {
        "clock": "12", "clock-set": "", "ssh-ready": "iid-9"}


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
def test_a_marker_is_read_without_starting_a_program(tmp_path: Path, shell: str) -> None:
    """read_marker's command: the file as it is (its last line without a newline too), with
    an empty PATH; a missing or unreadable file fails."""
    from lima.drivers.markers import marker_command

    if shell == "busybox" and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    argv = [shutil.which("busybox") or "busybox", "sh"] if shell == "busybox" else [
        shutil.which(shell) or shell]
    (tmp_path / "failed").write_text("iid-3 provision.sh exited 1\n  second\\n line")

    def read(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*argv, "-c", marker_command(str(tmp_path / name))],
                              env={"PATH": str(tmp_path / "none")}, capture_output=True,
                              text=True, timeout=30)

    found = read("failed")
    assert found.returncode == 0 and found.stderr == ""
    assert found.stdout == "iid-3 provision.sh exited 1\n  second\\n line\n"
    assert read("missing").returncode != 0


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
def test_boot_wait_answers_from_the_markers_starting_only_sleep(tmp_path: Path,
                                                               shell: str) -> None:
    """boot_wait_command: `done` for this boot's IID, `failed` and the record, or exit 1
    after its batch; the only program it starts is `sleep`, once per look."""
    from lima.drivers.markers import boot_wait_command, parse_boot_wait

    if shell == "busybox" and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    argv = [shutil.which("busybox") or "busybox", "sh"] if shell == "busybox" else [
        shutil.which(shell) or shell]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sleeps = tmp_path / "sleeps"
    (bin_dir / "sleep").write_text(f'#!/bin/sh\necho "$1" >>"{sleeps}"\n')
    (bin_dir / "sleep").chmod(0o755)
    done, failed = tmp_path / "done", tmp_path / "failed"

    def wait() -> subprocess.CompletedProcess[str]:
        command = boot_wait_command("iid-7", done_path=str(done), failed_path=str(failed),
                                    batch=0.6, interval=0.2)
        return subprocess.run([*argv, "-c", command], env={"PATH": str(bin_dir)},
                              capture_output=True, text=True, timeout=30)

    waiting = wait()
    assert waiting.returncode == 1 and waiting.stdout == ""
    if shell != "busybox":  # busybox sh runs its own sleep applet
        assert sleeps.read_text().split() == ["0.2", "0.2", "0.2"]
    assert parse_boot_wait(waiting.stdout, "iid-7") is None
    done.write_text("iid-6\n")  # an earlier boot's marker is not this boot's outcome
    assert wait().returncode == 1
    failed.write_text("iid-7\nprovision.system/00: exit 2\n")
    out = wait()
    assert out.returncode == 0 and out.stdout == "failed\niid-7\nprovision.system/00: exit 2\n"
    assert parse_boot_wait(out.stdout, "iid-7") == (
        "provisioning failed: provision.system/00: exit 2")
    done.write_text("iid-7\n")
    out = wait()
    assert out.stdout == "done\n" and parse_boot_wait(out.stdout, "iid-7") == ""
