"""The host agent daemon against dummy "qemu" processes, without a VM.

In-process: HostAgent with a fake Guest (readiness injected). As a real daemon:
`start_hostagent` runs `limactl hostagent` whose "qemu" is tests/component/fake_sshd.py,
a paramiko ssh server that serves the IID markers, so ssh readiness is the real code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lima import paths
from lima.drivers import procs, runner
from lima.drivers.hostagent import (
    HostAgent,
    hostagent_info,
    pick_ssh_port,
    read_events,
    start_hostagent,
    stop_hostagent,
)
from lima.errors import BusyError, LimaError, TemporaryError

FAKE_SSHD = Path(__file__).with_name("fake_sshd.py")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(1000)"]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


def statuses(inst_dir: Path) -> list[dict[str, Any]]:
    return [e["status"] for e in read_events(inst_dir)]


def kinds(inst_dir: Path) -> list[str]:
    """Each event as one word: booting, ssh_ready, provisioned, running, degraded, error,
    exiting."""
    out = []
    for s in statuses(inst_dir):
        if s["exiting"]:
            out.append("exiting")
        elif s.get("phase"):
            out.append(s["phase"])
        elif s["running"]:
            out.append("degraded" if s["degraded"] else "running")
        elif s["errors"]:
            out.append("error")
        else:
            out.append("booting")
    return out


@pytest.fixture
def inst_dir(_isolated_home: Path) -> Path:
    d = paths.instance_dir("ha")
    d.mkdir(parents=True)
    return d


# --- in process ------------------------------------------------------------------------------

class FakeGuest:
    def __init__(self, result: list[str] | LimaError | None = None) -> None:
        self.result = result
        self.closed = False

    def ready(self, stop: threading.Event, progress: Callable[[str], None]) -> list[str]:
        if self.result is None:  # never ready: wait for the stop
            stop.wait()
            return []
        progress("ssh_ready")
        if isinstance(self.result, LimaError):
            raise self.result
        progress("provisioned")
        return self.result

    def close(self) -> None:
        self.closed = True


def no_qmp(inst_dir: Path, timeout: float) -> bool:
    raise LimaError("no QMP socket")


class Running:
    """A HostAgent run in a thread; `rc` once it returned."""

    def __init__(self, agent: HostAgent) -> None:
        self.agent = agent
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.agent.run(install_signals=False)

    def stop(self) -> int | None:
        self.agent.request_stop()
        self.thread.join(30)
        return self.rc


@pytest.fixture
def run_agent(inst_dir: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(argv: list[str], guest: FakeGuest, **kw: Any) -> Running:
        kw.setdefault("powerdown", no_qmp)
        r = Running(HostAgent(inst_dir, ssh_port=2222, qemu_argv=argv, guest=guest, **kw))
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
        qemu = r.agent._qemu
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()


def test_events_api_and_cleanup(inst_dir: Path, run_agent: Callable[..., Running]) -> None:
    guest = FakeGuest([])
    r = run_agent(SLEEPER, guest)
    wait_for(lambda: "running" in kinds(inst_dir))
    assert (inst_dir / paths.HA_PID).read_text() == f"{os.getpid()}\n"
    info = hostagent_info(inst_dir)
    assert info is not None
    assert info["sshLocalPort"] == 2222
    # The agent's own view of the boot, which outranks ha.stdout.log.
    assert (info["phase"], info["running"], info["responsive"]) == ("running", True, True)
    qemu = r.agent._qemu
    assert qemu is not None and info["qemuPID"] == qemu.pid
    assert qemu is not None and qemu.poll() is None
    assert r.stop() == 0
    assert kinds(inst_dir) == ["booting", "ssh_ready", "provisioned", "running", "exiting"]
    assert all(s["sshLocalPort"] == 2222 for s in statuses(inst_dir))
    assert qemu.poll() is not None
    assert guest.closed
    assert not (inst_dir / paths.HA_PID).exists()
    assert not (inst_dir / paths.HA_SOCK).exists()
    assert hostagent_info(inst_dir) is None


class GatedGuest(FakeGuest):
    """Logs in (progress "ssh_ready") only once `login` is set, and is provisioned (ready)
    once `provision` is set too (at once when there is none)."""

    def __init__(self, login: threading.Event,
                 provision: threading.Event | None = None) -> None:
        super().__init__([])
        self.login, self.provision = login, provision

    def ready(self, stop: threading.Event, progress: Callable[[str], None]) -> list[str]:
        self.login.wait(30)
        progress("ssh_ready")
        if self.provision is not None:
            self.provision.wait(30)
        progress("provisioned")
        return []


class RecordingForwards:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.running = threading.Event()

    def start(self) -> None:
        self.started.set()

    def guest_running(self) -> None:
        assert self.started.is_set()
        self.running.set()

    def stop(self) -> None:
        pass

    def reload(self) -> None:
        pass


@pytest.mark.parametrize("resume", [False, True])
def test_the_forwarder_never_logs_in_alongside_readiness(
    inst_dir: Path, run_agent: Callable[..., Running], monkeypatch: pytest.MonkeyPatch,
    resume: bool,
) -> None:
    """The forwarder starts once readiness has logged in on a cold boot, and once the
    guest is Running after a resume (its CPU's costliest seconds); its own ssh login
    ahead waits for Running either way."""
    from lima.drivers import suspend

    monkeypatch.setattr(suspend, "load_state", lambda inst: None)
    login, provision = threading.Event(), threading.Event()
    fwd = RecordingForwards()
    r = run_agent(SLEEPER, GatedGuest(login, provision), resume=resume,
                  forwards=lambda emit: fwd)
    wait_for(lambda: r.agent._qemu is not None)
    assert not fwd.started.wait(0.5)
    login.set()
    wait_for(lambda: "ssh_ready" in kinds(inst_dir))
    assert fwd.started.wait(0.5 if resume else 10) is not resume
    assert not fwd.running.is_set()  # its login ahead waits for Running
    provision.set()
    assert fwd.started.wait(10)
    wait_for(lambda: "running" in kinds(inst_dir))
    assert fwd.running.wait(10)
    assert r.stop() == 0


def test_a_long_poll_answers_at_the_next_event(
    inst_dir: Path, run_agent: Callable[..., Running]
) -> None:
    """`GET /v1/info?after=V&wait=S` is held until the view passes version V: the boot's
    next phase, not the wait's end; without a change it answers the same view after S."""
    login = threading.Event()
    r = run_agent(SLEEPER, GatedGuest(login))
    wait_for(lambda: r.agent._qemu is not None)
    first = hostagent_info(inst_dir)
    assert first is not None and first["phase"] == "booting"
    version = first["version"]
    assert isinstance(version, int)
    same = hostagent_info(inst_dir, after=version, wait=0.3)
    assert same is not None and (same["version"], same["phase"]) == (version, "booting")

    answers: list[dict[str, Any] | None] = []
    poll = threading.Thread(
        target=lambda: answers.append(hostagent_info(inst_dir, after=version, wait=30)))
    poll.start()
    time.sleep(0.3)
    assert poll.is_alive()  # held: nothing changed yet
    login.set()
    poll.join(20)
    assert not poll.is_alive()
    got = answers[0]
    assert got is not None and got["version"] > version
    assert got["phase"] in ("ssh_ready", "provisioned", "running")
    assert r.stop() == 0


def test_the_wait_loop_long_polls_and_still_sees_the_agent_exit(
    inst_dir: Path, run_agent: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's wait asks the agent far less often than its 50 ms fallback tick while
    the guest boots, and an agent that exits mid-poll ends the wait as a failure."""
    from lima.drivers import instance
    from lima.drivers.hostagent import api

    calls: list[float] = []
    real = api.hostagent_info

    def counted(*a: Any, **kw: Any) -> dict[str, Any] | None:
        calls.append(kw.get("wait", 0.0))
        return real(*a, **kw)

    monkeypatch.setattr(instance.hostagent, "hostagent_info", counted)
    monkeypatch.setattr(instance, "_hostagent_alive", lambda inst: r.rc is None)
    login = threading.Event()
    r = run_agent(SLEEPER, GatedGuest(login))
    wait_for(lambda: r.agent._qemu is not None)
    threading.Timer(1.5, login.set).start()
    driver = instance.QemuDriver()
    out = driver._wait(inst_dir, 30, lambda p: p.running, "the host agent")
    assert out.ok
    assert len(calls) <= 6, calls  # 1.5 s at 50 ms would be 30 answers
    assert any(w > 0 for w in calls)

    stopper = threading.Timer(0.5, r.agent.request_stop)
    stopper.start()
    out = driver._wait(inst_dir, 30, lambda p: False, "nothing")
    assert not out.ok and out.error is not None
    assert out.error.startswith("the host agent exited"), out.error


def test_event_time_is_rfc3339(inst_dir: Path, run_agent: Callable[..., Running]) -> None:
    run_agent(SLEEPER, FakeGuest([]))
    wait_for(lambda: read_events(inst_dir))
    stamp = read_events(inst_dir)[0]["time"]
    assert stamp[10] == "T" and (stamp.endswith("Z") or stamp[-6] in "+-")


def test_degraded_when_provisioning_failed(
    inst_dir: Path, run_agent: Callable[..., Running]
) -> None:
    r = run_agent(SLEEPER, FakeGuest(["provisioning failed: step 2"]))
    wait_for(lambda: "degraded" in kinds(inst_dir))
    running = statuses(inst_dir)[-1]
    assert running["running"] and running["degraded"]
    assert running["errors"] == ["provisioning failed: step 2"]
    assert r.stop() == 0


def test_guest_never_ready_shuts_down(
    inst_dir: Path, run_agent: Callable[..., Running]
) -> None:
    r = run_agent(SLEEPER, FakeGuest(TemporaryError("no ssh login within 600 s")))
    r.thread.join(30)
    assert r.rc == 1
    assert kinds(inst_dir) == ["booting", "ssh_ready", "error", "exiting"]
    assert statuses(inst_dir)[2]["errors"] == ["no ssh login within 600 s"]
    qemu = r.agent._qemu
    assert qemu is not None and qemu.poll() is not None


def test_qemu_exiting_early_is_reported(
    inst_dir: Path, run_agent: Callable[..., Running]
) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom: no accel\\n'); sys.exit(3)"]
    r = run_agent(argv, FakeGuest(None))
    r.thread.join(30)
    assert r.rc == 1
    assert kinds(inst_dir) == ["booting", "error", "exiting"]
    (error,) = statuses(inst_dir)[1]["errors"]
    assert "status 3" in error and "boom: no accel" in error
    assert not (inst_dir / paths.HA_PID).exists()


def test_missing_qemu_binary(inst_dir: Path, run_agent: Callable[..., Running]) -> None:
    r = run_agent([str(inst_dir / "no-such-qemu")], FakeGuest([]))
    r.thread.join(30)
    assert r.rc == 1
    assert kinds(inst_dir) == ["booting", "error", "exiting"]
    assert "qemu did not start" in statuses(inst_dir)[1]["errors"][0]


def test_stop_powers_down_then_kills(inst_dir: Path, run_agent: Callable[..., Running]) -> None:
    calls: list[tuple[Path, float]] = []

    def powerdown(d: Path, timeout: float) -> bool:
        calls.append((d, timeout))
        return False  # the guest ignores the power button

    r = run_agent(SLEEPER, FakeGuest([]), powerdown=powerdown, stop_timeout=0.3)
    wait_for(lambda: "running" in kinds(inst_dir))
    assert r.stop() == 0
    assert calls == [(inst_dir, 0.3)]
    qemu = r.agent._qemu
    assert qemu is not None and qemu.returncode == -signal.SIGKILL


def test_refuses_a_second_agent(inst_dir: Path) -> None:
    # Looks like this instance's agent: `hostagent NAME` running in the instance directory.
    other = runner.spawn([sys.executable, "-c", "import time; time.sleep(60)", "hostagent",
                          inst_dir.name], cwd=inst_dir)
    try:
        # Until it has exec'd, /proc/PID/cmdline is still pytest's.
        wait_for(lambda: "hostagent" in procs.cmdline(other.pid))
        (inst_dir / paths.HA_PID).write_text(f"{other.pid}\n")
        agent = HostAgent(inst_dir, ssh_port=1, qemu_argv=SLEEPER, guest=FakeGuest([]),
                          powerdown=no_qmp)
        errors: list[Exception] = []

        def run() -> None:
            try:
                agent.run(install_signals=False)
            except Exception as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(30)
        if thread.is_alive():  # the bug this test looks for: it started anyway
            agent.request_stop()
            thread.join(30)
        assert len(errors) == 1 and isinstance(errors[0], BusyError)
        assert (inst_dir / paths.HA_PID).read_text() == f"{other.pid}\n"
    finally:
        other.kill()
        other.wait()


# --- as a daemon, with the real ssh readiness against a fake sshd ------------------------------

@pytest.fixture
def identity(_isolated_home: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    private = paths.user_identity()
    private.parent.mkdir(parents=True, exist_ok=True)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public = private.with_name("user.pub")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return public


@pytest.fixture
def daemon(inst_dir: Path, identity: Path) -> Iterator[Callable[[str], int]]:
    def start(mode: str) -> int:
        port = pick_ssh_port()
        argv = [sys.executable, str(FAKE_SSHD), str(port), "iid-1", str(identity), mode]
        return start_hostagent("ha", iid="iid-1", ssh_port=port, qemu_argv=argv,
                               boot_timeout=60, extra_args=["--ssh-user", "tester"])

    yield start
    stop_hostagent(inst_dir, force=True)


def fake_qemu_pid(agent_pid: int) -> int:
    """The agent's child (it answers on ha.sock a moment before it starts qemu)."""
    children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children")
    return int(wait_for(lambda: children.read_text().split())[0])


def test_daemon_boot_and_stop(inst_dir: Path, daemon: Callable[[str], int]) -> None:
    pid = daemon("ok")
    assert (inst_dir / paths.HA_PID).read_text().strip() == str(pid)
    wait_for(lambda: "running" in kinds(inst_dir))
    assert kinds(inst_dir) == ["booting", "ssh_ready", "provisioned", "running"]
    port = statuses(inst_dir)[0]["sshLocalPort"]
    info = hostagent_info(inst_dir)
    assert info is not None
    assert (info["sshLocalPort"], info["iid"], info["phase"]) == (port, "iid-1", "running")
    qemu = fake_qemu_pid(pid)
    stop_hostagent(inst_dir, timeout=60)
    assert kinds(inst_dir)[-1] == "exiting"
    assert not procs.pid_alive(pid) and not procs.pid_alive(qemu)
    assert not (inst_dir / paths.HA_PID).exists()
    assert not (inst_dir / paths.HA_SOCK).exists()
    # The agent's own log lines are JSON; the interpreter may add a plain line of its own
    # at exit under load (seen once: not the agent's), which is not what is checked here.
    lines = (inst_dir / paths.HA_STDERR).read_text().splitlines()
    logs = [json.loads(line) for line in lines if line.startswith("{")]
    assert logs, lines
    assert all({"level", "msg", "time"} <= set(entry) for entry in logs)


def test_daemon_boot_failed_is_degraded(inst_dir: Path, daemon: Callable[[str], int]) -> None:
    daemon("failed")
    wait_for(lambda: "degraded" in kinds(inst_dir))
    (error,) = statuses(inst_dir)[-1]["errors"]
    assert "provisioning failed" in error and "provision.system/00" in error


def test_daemon_exits_when_qemu_dies(inst_dir: Path, daemon: Callable[[str], int]) -> None:
    pid = daemon("exit")
    wait_for(lambda: not procs.pid_alive(pid))
    assert kinds(inst_dir) == ["booting", "error", "exiting"]
    assert "fake failure" in statuses(inst_dir)[1]["errors"][0]
    assert not (inst_dir / paths.HA_PID).exists()


def test_force_stop_kills_agent_and_qemu(inst_dir: Path, daemon: Callable[[str], int]) -> None:
    pid = daemon("silent")
    qemu = fake_qemu_pid(pid)
    stop_hostagent(inst_dir, force=True)
    assert not procs.pid_alive(pid) and not procs.pid_alive(qemu)
    assert not (inst_dir / paths.HA_PID).exists()
    last = statuses(inst_dir)[-1]
    assert last["exiting"] and "killed" in last["errors"][0]


def test_second_start_is_refused(inst_dir: Path, daemon: Callable[[str], int]) -> None:
    daemon("silent")
    with pytest.raises(BusyError):
        start_hostagent("ha", iid="iid-2", ssh_port=1, qemu_argv=SLEEPER)


# --- suspend with mounts the guest must unmount first (9p) --------------------------------------

class UnmountingGuest(FakeGuest):
    """A guest with 9p mounts: prepare_suspend unmounts (or refuses), suspend_failed mounts
    again; `calls` records the order against the state save."""

    def __init__(self, calls: list[str], refuse: str = "") -> None:
        super().__init__([])
        self.calls = calls
        self.refuse = refuse

    def prepare_suspend(self) -> None:
        self.calls.append("unmount")
        if self.refuse:
            raise LimaError(self.refuse)

    def suspend_failed(self) -> list[str]:
        self.calls.append("mount again")
        return ["mount /h on /h (9p) failed: gone"]


def _saving(calls: list[str], error: str = "") -> Callable[..., None]:
    def save_state(inst: Path, argv: list[str], **kw: Any) -> None:
        calls.append("save")
        if error:
            raise LimaError(error)
    return save_state


def test_suspend_unmounts_before_the_state_is_saved(
    inst_dir: Path, run_agent: Callable[..., Running], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lima.drivers import suspend

    calls: list[str] = []
    monkeypatch.setattr(suspend, "save_state", _saving(calls))
    r = run_agent(SLEEPER, UnmountingGuest(calls))
    wait_for(lambda: "running" in kinds(inst_dir))
    r.agent.request_suspend()
    r.thread.join(30)
    assert r.rc == 0
    assert calls == ["unmount", "save"]  # nothing mounted again: the resume does it


def test_a_refused_unmount_leaves_the_guest_running_unsaved(
    inst_dir: Path, run_agent: Callable[..., Running], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lima.drivers import suspend

    calls: list[str] = []
    monkeypatch.setattr(suspend, "save_state", _saving(calls))
    r = run_agent(SLEEPER, UnmountingGuest(calls, refuse="the 9p mount /h is in use"))
    wait_for(lambda: "running" in kinds(inst_dir))
    r.agent.request_suspend()
    wait_for(lambda: statuses(inst_dir)[-1]["errors"])
    assert calls == ["unmount"]  # no save, and nothing to mount again
    last = statuses(inst_dir)[-1]
    assert last["running"] and last["errors"] == ["suspend failed: the 9p mount /h is in use"]
    assert r.thread.is_alive()
    info = hostagent_info(inst_dir)
    assert info is not None and info["phase"] == "running"
    assert r.stop() == 0


def test_a_failed_save_mounts_again(
    inst_dir: Path, run_agent: Callable[..., Running], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lima.drivers import suspend

    calls: list[str] = []
    monkeypatch.setattr(suspend, "save_state", _saving(calls, "QMP migrate: no room"))
    r = run_agent(SLEEPER, UnmountingGuest(calls))
    wait_for(lambda: "running" in kinds(inst_dir))
    r.agent.request_suspend()
    wait_for(lambda: statuses(inst_dir)[-1]["errors"])
    assert calls == ["unmount", "save", "mount again"]
    assert statuses(inst_dir)[-1]["errors"] == ["suspend failed: QMP migrate: no room",
                                                "mount /h on /h (9p) failed: gone"]
    assert r.thread.is_alive()
    assert r.stop() == 0
