"""`limactl watch t --json` on a real tiny guest: started before `limactl apply` creates and
boots `t`, it shows the boot (status.json's phases, the host agent's events) up to running,
in order, and Ctrl-C ends it with exit 0; `limactl list` then says Ready."""

from __future__ import annotations

import json
import select
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, Limactl

pytestmark = pytest.mark.integration

BOOTING = {"cidata_built", "booting", "ssh_ready", "provisioned"}


def test_watch_shows_booting_then_running(limactl: Limactl, tmp_path: Path) -> None:
    spec = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", spec)
    watch = limactl.popen("watch", "t", "--json")
    try:
        assert watch.stderr is not None and watch.stdout is not None
        ready, _, _ = select.select([watch.stderr], [], [], 30)
        assert ready and "Waiting for instance 't' to be created" in watch.stderr.readline()
        assert "Watching for events..." in watch.stderr.readline()
        limactl("apply", str(spec), timeout=400)
        # While it runs, list agrees with what the watch saw: Ready, and why not when not.
        rec = json.loads(limactl("list", "--json", "t").stdout)
        assert (rec["status"], rec["ready"], rec["reason"]) == ("Running", True, "")
        wide = limactl("list", "--wide", "t").stdout.splitlines()
        assert wide[0].split()[-3:] == ["READY", "MANAGED", "REASON"]
        assert wide[1].split()[-3:] == ["Ready", "-", "-"]
        # apply has returned, so everything is written: Ctrl-C right away must still show
        # it (the watch ticks once more before it exits).
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=20)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    records: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert records and all(r["instance"] == "t" for r in records)
    phases = [r["lifecycle"]["phase"] for r in records if "phase" in r.get("lifecycle", {})]
    assert "running" in phases, phases
    first_running = phases.index("running")
    assert BOOTING & set(phases[:first_running]), phases
    ready = [c for r in records for c in r.get("lifecycle", {}).get("conditions", [])
             if c["type"] == "Ready"]
    assert ready and ready[-1]["status"] == "True", ready
    events = [r["event"]["status"] for r in records if "event" in r]
    # The host agent's own events, Lima's shape: progress while booting, then running.
    assert any(e.get("phase") == "ssh_ready" for e in events), events
    assert events[-1]["running"] is True and events[-1]["sshLocalPort"] > 0, events
    # The running event comes after the booting lifecycle record, not before.
    kinds = ["booting" if r.get("lifecycle", {}).get("phase") in BOOTING else
             "running" if r.get("event", {}).get("status", {}).get("running") else "" for r in
             records]
    assert kinds.index("booting") < kinds.index("running"), kinds
    # `t` did not exist when the watch started (it said it waits, read above).
    assert "New instance detected: t" in err, err
