"""`limactl watch`: host agent events (Lima's shape), status.json lifecycle changes and
controller markers written to fake instance directories come out as records, in order,
once each. Most tests drive `Watcher.tick()` directly (no sleeps); one runs the real CLI."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lima.commands.watch import Watcher, human_lines, run
from lima.drivers.hostagent.events import append_event, make_event


def make_instance(home: Path, name: str) -> Path:
    d = home / name
    d.mkdir()
    (d / "lima.yaml").write_text("images: []\n")
    return d


def write_status(d: Path, phase: str, conds: list[tuple[str, str, str]]) -> None:
    data = {"version": 1, "phase": phase,
            "conditions": [{"type": t, "status": s, "reason": r, "message": f"{t} {r}"}
                           for t, s, r in conds]}
    tmp = d / ".status.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, d / "status.json")  # as the status store writes it


def kinds(records: list[dict[str, Any]]) -> list[str]:
    return [next(k for k in ("event", "lifecycle", "controller") if k in r) for r in records]


def test_host_agent_events_only_from_start_unless_history(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home, "a")
    old = make_event(ssh_port=1)
    old["time"] = (datetime.now().astimezone() - timedelta(minutes=5)).isoformat()
    append_event(d, old)
    w = Watcher(["a"])
    assert w.tick()[0] == []  # the old event is history
    append_event(d, make_event(ssh_port=2222, phase="ssh_ready"))
    append_event(d, make_event(ssh_port=2222, running=True, degraded=True, errors=["mnt"]))
    records, _ = w.tick()
    assert [r["instance"] for r in records] == ["a", "a"]
    assert [r["event"]["status"].get("phase") for r in records] == ["ssh_ready", None]
    assert records[1]["event"]["status"]["degraded"] is True
    assert w.tick()[0] == []  # each event once
    lines = [ln.split(" | ", 1)[1] for r in records for ln in human_lines(r)]
    assert lines == ["ssh available on port 2222", "boot: ssh_ready", "running (degraded)",
                     "ssh available on port 2222", "error: mnt"]
    hist = Watcher(["a"], history=True).tick()[0]
    assert [r["event"]["status"]["sshLocalPort"] for r in hist] == [1, 2222, 2222]


def test_truncated_log_and_torn_lines(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home, "a")
    w = Watcher(["a"])
    for port in (1, 2, 3):
        append_event(d, make_event(ssh_port=port))
    assert len(w.tick()[0]) == 3
    # A start truncates ha.stdout.log and the new boot writes more than was there.
    (d / "ha.stdout.log").write_bytes(b"")
    for port in (7, 8, 9, 10):
        append_event(d, make_event(ssh_port=port))
    line = json.dumps(make_event(ssh_port=11)).encode()
    with (d / "ha.stdout.log").open("ab") as f:
        f.write(b"not json\n" + line[:10])  # a foreign line, and half of an event
    got = [r["event"]["status"]["sshLocalPort"] for r in w.tick()[0]]
    assert got == [7, 8, 9, 10]
    with (d / "ha.stdout.log").open("ab") as f:
        f.write(line[10:] + b"\n")
    assert [r["event"]["status"]["sshLocalPort"] for r in w.tick()[0]] == [11]


def test_lifecycle_changes_from_status_json(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home, "a")
    write_status(d, "booting", [("Ready", "False", "Booting")])
    w = Watcher(["a"])
    assert w.tick()[0] == []  # the state at the start is not an event
    write_status(d, "running", [("Ready", "True", "Running"), ("Degraded", "False", "Healthy")])
    (rec,) = w.tick()[0]
    ev = rec["lifecycle"]
    assert (ev["phase"], ev["previousPhase"]) == ("running", "booting")
    assert [(c["type"], c["status"], c["reason"]) for c in ev["conditions"]] == [
        ("Ready", "True", "Running"), ("Degraded", "False", "Healthy")]
    write_status(d, "running", [("Ready", "False", "Degraded"), ("Degraded", "True", "Mount"),
                                ("RestartRequired", "True", "SpecChanged"),
                                ("Stalled", "False", "Progressing")])
    (rec,) = w.tick()[0]
    assert "phase" not in rec["lifecycle"]
    assert {c["type"]: c["reason"] for c in rec["lifecycle"]["conditions"]} == {
        "Ready": "Degraded", "Degraded": "Mount", "RestartRequired": "SpecChanged",
        "Stalled": "Progressing"}
    text = [ln.split(" | ", 1)[1] for ln in human_lines(rec)]
    assert "Degraded=True (Mount): Degraded Mount" in text
    assert w.tick()[0] == []
    write_status(d, "running", [("Ready", "False", "Degraded"), ("Degraded", "True", "Mount"),
                                ("RestartRequired", "True", "SpecChanged"),
                                ("Stalled", "True", "CrashLoop")])
    (rec,) = w.tick()[0]
    assert rec["lifecycle"]["conditions"] == [
        {"type": "Stalled", "status": "True", "reason": "CrashLoop",
         "message": "Stalled CrashLoop"}]


def test_retry_record_from_status_json(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home, "a")
    write_status(d, "booting", [])
    w = Watcher(["a"])
    w.tick()
    data = json.loads((d / "status.json").read_text())
    data.update(retries=2, restarts=1, nextAttempt="2026-01-01T10:00:05+00:00",
                lastError="qemu exited 1")
    (d / "status.json").write_text(json.dumps(data))
    (rec,) = w.tick()[0]
    assert rec["lifecycle"]["retry"] == {"retries": 2, "restarts": 1,
                                         "nextAttempt": "2026-01-01T10:00:05+00:00",
                                         "lastError": "qemu exited 1"}
    line = human_lines(rec)[0].split(" | ", 1)[1]
    assert line.startswith("retries 2, restarts 1, next attempt at 2026-01-01 ")
    assert line.endswith(": qemu exited 1")
    write_status(d, "running", [])  # a success resets the record: said once
    (rec,) = w.tick()[0]
    assert rec["lifecycle"]["retry"] == dict.fromkeys(("retries", "restarts", "nextAttempt",
                                                        "lastError"))
    write_status(d, "stopped", [])
    (rec,) = w.tick()[0]
    assert "retry" not in rec["lifecycle"]


def test_all_instances_including_new_ones(_isolated_home: Path) -> None:
    a = make_instance(_isolated_home, "a")
    w = Watcher([])
    assert w.tick() == ([], [])
    (_isolated_home / "_controller").mkdir()  # never an instance
    b = make_instance(_isolated_home, "b")
    write_status(b, "creating", [])
    append_event(b, make_event(ssh_port=5))
    append_event(a, make_event(ssh_port=4))
    records, notes = w.tick()
    assert notes == ["New instance detected: b"]
    assert sorted((r["instance"], k) for r, k in zip(records, kinds(records), strict=True)) == [
        ("a", "event"), ("b", "event"), ("b", "lifecycle")]
    assert next(r for r in records if "lifecycle" in r)["lifecycle"]["phase"] == "creating"


def test_named_instance_is_waited_for(_isolated_home: Path) -> None:
    w = Watcher(["t"])
    assert w.tick() == ([], ["Waiting for instance 't' to be created"])
    d = make_instance(_isolated_home, "t")
    append_event(d, make_event(ssh_port=9, running=True))
    records, _ = w.tick()
    assert [r["event"]["status"]["running"] for r in records] == [True]


def test_controller_managed_and_paused(_isolated_home: Path) -> None:
    from lima.controller import managed

    make_instance(_isolated_home, "a")
    w = Watcher(["a"])
    assert w.tick()[0] == []
    managed.set_ownership("a", managed.Ownership("controller:/f", "/f/a.yaml", "x"))
    (rec,) = w.tick()[0]
    assert rec["controller"] | {"time": ""} == {"time": "", "managedBy": "controller:/f",
                                                "paused": False}
    marker = managed.control_dir() / "a.paused"
    marker.write_text("")
    (rec,) = w.tick()[0]
    assert rec["controller"]["paused"] is True
    assert human_lines(rec)[0].endswith("a | managed by controller:/f (paused)")
    assert w.tick()[0] == []


def test_stop_still_prints_what_was_written(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home, "a")
    w = Watcher(["a"])
    append_event(d, make_event(ssh_port=3, running=True))
    stop = threading.Event()
    stop.set()  # Ctrl-C came before the next tick
    out, err = io.StringIO(), io.StringIO()
    run(w, out, err, True, stop)
    assert [json.loads(ln)["event"]["status"]["sshLocalPort"] for ln in
            out.getvalue().splitlines()] == [3]
    assert "Watching for events..." in err.getvalue()


def readline(pipe: Any, timeout: float = 15.0) -> str:
    """The next line of a child's pipe, failing instead of hanging when none comes."""
    ready, _, _ = select.select([pipe], [], [], timeout)
    assert ready, "no output from limactl watch"
    return str(pipe.readline())


def test_cli_json_and_ctrl_c(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home, "a")
    proc = subprocess.Popen([sys.executable, "-m", "lima.cli", "watch", "--json", "a"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LIMA_HOME": str(_isolated_home)})
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert "Watching for events..." in readline(proc.stderr)  # it has started
        append_event(d, make_event(ssh_port=2222, running=True))
        line = readline(proc.stdout)
        assert json.loads(line)["instance"] == "a"
        assert json.loads(line)["event"]["status"] == {
            "running": True, "degraded": False, "exiting": False, "errors": [],
            "sshLocalPort": 2222}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_deleted_then_created_again(_isolated_home: Path) -> None:
    import shutil

    d = make_instance(_isolated_home, "a")
    write_status(d, "stopped", [])
    w = Watcher([])
    w.tick()
    shutil.rmtree(d)
    (rec,) = w.tick()[0]
    assert (rec["lifecycle"]["phase"], rec["lifecycle"]["previousPhase"]) == ("absent",
                                                                              "stopped")
    assert w.tick() == ([], [])
    d = make_instance(_isolated_home, "a")
    append_event(d, make_event(ssh_port=6))
    records, notes = w.tick()
    assert notes == ["New instance detected: a"]
    assert [r["event"]["status"]["sshLocalPort"] for r in records] == [6]


def test_verbose_passes_host_agent_stderr(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home, "a")
    quiet, verbose = Watcher(["a"]), Watcher(["a"], verbose=True)
    quiet.tick()
    verbose.tick()
    old = (datetime.now().astimezone() - timedelta(minutes=5)).isoformat()
    (d / "ha.stderr.log").write_text(
        json.dumps({"level": "info", "msg": "old", "time": old}) + "\n"
        + '{"level":"info","msg":"booting"}\nplain text\n')
    assert quiet.tick() == ([], [])
    assert verbose.tick() == ([], ['a: {"level":"info","msg":"booting"}', "a: plain text"])


def test_bad_name_is_refused(_isolated_home: Path, capsys: Any) -> None:
    import pytest

    from lima.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["watch", "../etc"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "../etc" in err and "Traceback" not in err


def test_controller_decisions_and_plans(_isolated_home: Path) -> None:
    from lima.controller import managed
    from lima.controller.folder import DecisionLog

    make_instance(_isolated_home, "a")
    log = DecisionLog(io.StringIO())
    log.emit("a", "pass", want="running", phase="running", decision="Done")  # before watch
    w = Watcher(["a"])
    assert w.tick()[0] == []  # history
    log.emit("a", "plan", verdict="restart", file="/f/a.yaml", digest="abc",
             changes=[{"path": "cpus", "old": 1, "new": 2, "class": "restart",
                       "action": "stop, then boot with the new spec"}],
             restart="auto", action="one restart with the new spec")
    log.emit("b", "pass", decision="Done")  # another instance's line: not a's
    log.emit("a", "invalid", file="/f/a.yaml", digest="def", action="none",
             problems=[{"file": "/f/a.yaml", "line": 2, "field": "cpus",
                        "message": "must be at least 1"}])
    plan, invalid = w.tick()[0]
    assert kinds([plan, invalid]) == ["controller", "controller"]
    assert plan["instance"] == "a" and "instance" not in plan["controller"]
    assert plan["controller"]["event"] == "plan"
    assert plan["controller"]["changes"][0]["new"] == 2
    (line,) = human_lines(plan)
    assert line.split(" a | ", 1)[1] == (
        "controller: plan verdict=restart file=/f/a.yaml digest=abc restart=auto: "
        "cpus 1 -> 2 (restart); action: one restart with the new spec")
    assert human_lines(invalid)[0].endswith(
        "a | controller: invalid file=/f/a.yaml digest=def: /f/a.yaml:2 cpus: must be at "
        "least 1; action: none")
    assert w.tick()[0] == []  # each line once
    # --history shows the earlier pass too; a rotated log is followed from its new start.
    hist = Watcher(["a"], history=True)
    assert [r["controller"]["event"] for r in hist.tick()[0]] == ["pass", "plan", "invalid"]
    os.replace(managed.log_path("a"), managed.control_dir() / "a.log.1")
    log.emit("a", "pass", want="running", phase="booting", decision="Wait", until=2.0,
             reason="waiting for ssh")
    (rec,) = hist.tick()[0]
    assert human_lines(rec)[0].endswith(
        "a | controller: pass Wait want=running phase=booting until=2.0; reason: waiting "
        "for ssh")
