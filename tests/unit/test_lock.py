"""The per-instance lock: exclusive across threads and processes; BusyError names the holder."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lima.controller.lock import holder, instance_lock, lock_path
from lima.errors import BusyError


def _grab(name: str, *, wait: bool, timeout: float | None = None) -> None:
    with instance_lock(name, wait=wait, timeout=timeout):
        pass


def test_lock_lives_outside_the_instance_dir(_isolated_home: Path) -> None:
    with instance_lock("web", wait=False):
        assert lock_path("web") == _isolated_home / "_locks" / "web.lock"
        assert not (_isolated_home / "web").exists()
        assert holder("web").startswith(f"PID {os.getpid()} (")


def test_second_holder_is_refused_naming_the_holder() -> None:
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            _grab("a", wait=False)
        except BusyError as e:
            errors.append(e)

    with instance_lock("a", wait=False, purpose="limactl controller /srv (worker 1)"):
        t = threading.Thread(target=other_thread, name="w2")
        t.start()
        t.join()
    assert len(errors) == 1
    assert "'a' is busy" in str(errors[0])
    assert "limactl controller /srv (worker 1)" in str(errors[0])


def test_other_instances_are_independent() -> None:
    with instance_lock("a", wait=False), instance_lock("b", wait=False):
        assert holder("a") and holder("b")


def test_released_after_the_block_and_on_error() -> None:
    with pytest.raises(RuntimeError), instance_lock("a", wait=False):
        raise RuntimeError("boom")
    with instance_lock("a", wait=False):
        pass
    assert holder("a") == ""  # the holder line is cleared on release


def test_waiter_gets_it_when_the_holder_leaves() -> None:
    order: list[str] = []
    entered = threading.Event()

    def first() -> None:
        with instance_lock("w", wait=False):
            order.append("first-in")
            entered.set()
            time.sleep(0.3)
            order.append("first-out")

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(5)
    with instance_lock("w", wait=True, timeout=10):
        order.append("second-in")
    t.join()
    assert order == ["first-in", "first-out", "second-in"]


def test_wait_timeout_raises_busy() -> None:
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            _grab("t", wait=True, timeout=0.2)
        except BusyError as e:
            errors.append(e)

    with instance_lock("t", wait=False):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert len(errors) == 1 and "waited" in str(errors[0])


@pytest.mark.processes  # the lock is held by another real process
def test_other_process_holding_the_lock(_isolated_home: Path) -> None:
    code = (
        "import sys, time\n"
        "from lima.controller.lock import instance_lock\n"
        "with instance_lock('p', wait=False):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    env = {**os.environ, "LIMA_HOME": str(_isolated_home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(BusyError) as exc, instance_lock("p", wait=False):
            pass
        assert f"PID {proc.pid}" in str(exc.value)
        assert "-c" in str(exc.value)  # the holder's command line
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
    with instance_lock("p", wait=False):  # released when the holder exits
        pass


@pytest.mark.processes  # a real holder is killed -9
def test_killed_holder_leaves_no_stale_lock(_isolated_home: Path) -> None:
    code = (
        "import time\n"
        "from lima.controller.lock import instance_lock\n"
        "with instance_lock('k', wait=False):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "LIMA_HOME": str(_isolated_home)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    with instance_lock("k", wait=False):
        pass
