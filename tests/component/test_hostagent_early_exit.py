"""A host agent that is gone before ha.sock answered: why, in qemu's words, and whether a
retry can help.

qemu refuses a bad configuration within milliseconds; the agent reports it and exits,
often before start_hostagent's first poll sees ha.sock answer. That race is made
certain here by a client that never sees the answer (hostagent_info patched to None);
the agent is the real `limactl hostagent` daemon, its "qemu" a script that prints what
qemu prints and exits.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from lima import paths
from lima.drivers import hostagent
from lima.errors import PermanentError, TemporaryError

REFUSAL = ("qemu-system-x86_64: -drive file=diffdisk,if=virtio,discard=on: "
           "Could not open backing file: Image is not in qcow2 format")
# A refusal that another attempt can get past (the port was taken meanwhile).
TRANSIENT = ("qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22: "
             "could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'")


def fake_qemu(stderr_line: str, rc: int = 1) -> list[str]:
    code = f"import sys; sys.stderr.write({stderr_line!r} + '\\n'); sys.exit({rc})"
    return [sys.executable, "-c", code]


@pytest.fixture
def inst_dir(_isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = paths.instance_dir("ha")
    d.mkdir(parents=True)
    from lima.drivers.hostagent import client

    monkeypatch.setattr(client, "hostagent_info", lambda *a, **kw: None)
    return d


def start(qemu_argv: list[str] | None, *, attach: bool = False) -> int:
    return hostagent.start_hostagent("ha", iid="iid-1", ssh_port=hostagent.pick_ssh_port(),
                                     qemu_argv=qemu_argv, boot_timeout=30, timeout=30,
                                     extra_args=["--ssh-user", "tester"], attach=attach)


def test_qemu_refusing_its_configuration_is_permanent_in_qemus_words(inst_dir: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(PermanentError) as err:
        start(fake_qemu(REFUSAL))
    msg = str(err.value)
    assert "before it answered" in msg
    assert "qemu exited with status 1" in msg and "Image is not in qcow2 format" in msg
    assert time.monotonic() - t0 < 20


def test_a_transient_refusal_is_retried_and_still_says_why(inst_dir: Path) -> None:
    with pytest.raises(TemporaryError) as err:
        start(fake_qemu(TRANSIENT))
    assert not isinstance(err.value, PermanentError)
    assert "could not set up host forwarding rule" in str(err.value)


def test_a_previous_boots_qemu_words_are_not_blamed(inst_dir: Path) -> None:
    # The agent dies before it starts any qemu (attaching needs the instance's lima.yaml,
    # which this one lacks), so qemu.stderr.log still holds an older boot's refusal: not
    # this failure's cause, and not permanent.
    stale = inst_dir / hostagent.QEMU_STDERR
    stale.write_text(REFUSAL + "\n")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    with pytest.raises(TemporaryError) as err:
        start(None, attach=True)
    assert not isinstance(err.value, PermanentError)
    msg = str(err.value)
    assert "before it answered" in msg and "does not exist" in msg  # the agent's own words
    assert "Image is not in qcow2 format" not in msg


def test_the_closing_exiting_event_keeps_why_the_agent_ended(inst_dir: Path) -> None:
    # What the driver reads once the agent is gone: its events, the last being the bare
    # `exiting` every run ends with. qemu's refusal before it must survive it.
    from lima.drivers.instance import events_progress, qemu_refused

    refusal = f"qemu exited with status 1: {REFUSAL}"
    for status in ({}, {"errors": [refusal]}, {"exiting": True}):
        hostagent.append_event(inst_dir, hostagent.make_event(ssh_port=1, **status))
    prog = events_progress(inst_dir)
    assert prog.exited and prog.errors == (refusal,)
    assert qemu_refused(prog.errors)
    # An exiting event with errors of its own still tells them.
    hostagent.append_event(inst_dir, hostagent.make_event(
        ssh_port=1, exiting=True, errors=["host agent was killed"]))
    assert events_progress(inst_dir).errors == ("host agent was killed",)
