"""The host agent's VNC display hook (video.display: vnc) against a dummy qemu: set up once
qemu runs, forgotten when qemu is gone; a display that cannot be set up ends the agent with
the reason, as Lima's host agent does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lima.errors import LimaError
from tests.component.test_hostagent import (
    SLEEPER,
    FakeGuest,
    Running,
    inst_dir,
    kinds,
    run_agent,
    statuses,
    wait_for,
)

__all__ = ["inst_dir", "run_agent"]  # fixtures, imported for this module's tests


class FakeDisplay:
    def __init__(self, error: str = "") -> None:
        self.error = error
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")
        if self.error:
            raise LimaError(self.error)

    def stop(self) -> None:
        self.calls.append("stop")


def test_display_set_up_before_readiness_and_dropped_at_exit(
    inst_dir: Path, run_agent: Callable[..., Running]
) -> None:
    display = FakeDisplay()
    r = run_agent(SLEEPER, FakeGuest([]), display=display)
    wait_for(lambda: "running" in kinds(inst_dir))
    assert display.calls == ["start"]
    assert r.stop() == 0
    assert display.calls == ["start", "stop"]
    qemu = r.agent._qemu
    assert qemu is not None and qemu.poll() is not None


def test_display_that_cannot_be_set_up_ends_the_agent(
    inst_dir: Path, run_agent: Callable[..., Running]
) -> None:
    display = FakeDisplay("cannot set the VNC password: no answer in time")
    guest = FakeGuest([])
    r = run_agent(SLEEPER, guest, display=display)
    r.thread.join(30)
    assert r.rc == 1
    assert kinds(inst_dir) == ["booting", "error", "exiting"]
    (error,) = statuses(inst_dir)[1]["errors"]
    assert error == "VNC display not set up: cannot set the VNC password: no answer in time"
    assert display.calls == ["start", "stop"]
    qemu = r.agent._qemu
    assert qemu is not None and qemu.poll() is not None  # not left running
