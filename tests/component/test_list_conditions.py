"""`limactl list` shows status.json's conditions: Ready / Degraded / RestartRequired / Stalled
with their reasons, in JSON (`ready`, `reason`, `conditions`) and in the `--wide` table,
while the default table keeps Lima's columns. Fake instance directories, no VM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lima.drivers import store
from tests.component.cli import run_cli

LIMA_COLUMNS = ["NAME", "STATUS", "SSH", "VMTYPE", "ARCH", "CPUS", "MEMORY", "DISK", "DIR"]


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00.000000Z", "observedGeneration": "g"}


# name -> conditions of its status.json
CASES: dict[str, list[dict[str, Any]]] = {
    "fine": [cond("Ready", "True", "Running"), cond("Degraded", "False", "Healthy")],
    "deg": [cond("Ready", "False", "Degraded", "mount /x failed"),
            cond("Degraded", "True", "MountFailed", "mount /x failed")],
    "staged": [cond("Ready", "True", "Running"),
               cond("RestartRequired", "True", "SpecChanged", "cpus 1 -> 2")],
    "stuck": [cond("Ready", "False", "Booting", "qemu exited 1"),
              cond("Stalled", "True", "CrashLoop", "boot failed 5 times")],
}
RUNNING = {"fine", "deg", "staged"}


@pytest.fixture
def instances(_isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"")
    for name, conds in CASES.items():
        d = _isolated_home / name
        d.mkdir()
        (d / "lima.yaml").write_text(
            f"images:\n- location: {image}\n  arch: x86_64\narch: x86_64\ncpus: 1\n"
            "memory: 512MiB\ndisk: 1GiB\nmounts: []\n")
        (d / "status.json").write_text(json.dumps(
            {"version": 1, "phase": "running" if name in RUNNING else "booting",
             "conditions": conds}))
    real = store.inspect_processes

    def inspect(name: str, inst_dir: Path) -> store.Inspection:
        # The pid files' verdict, faked: these directories have no VM behind them.
        ins = real(name, inst_dir)
        if name in RUNNING:
            ins.status = store.STATUS_RUNNING
        return ins

    monkeypatch.setattr(store, "inspect_processes", inspect)
    return _isolated_home


def test_json_shows_each_condition_with_its_reason(
    instances: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["list", "--format", "json"], capsys)
    assert code == 0, err
    recs = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert set(recs) == set(CASES)
    # Lima's keys first, in Lima's order; ours after them.
    assert list(recs["fine"])[:4] == ["name", "hostname", "status", "dir"]
    keys = list(recs["fine"])
    assert keys.index("ready") > keys.index("limaVersion")
    assert recs["fine"]["ready"] is True and recs["fine"]["reason"] == ""
    assert recs["deg"]["ready"] is False
    assert recs["deg"]["reason"] == "Degraded (MountFailed: mount /x failed)"
    assert recs["staged"]["ready"] is True
    assert recs["staged"]["reason"] == "RestartRequired (SpecChanged: cpus 1 -> 2)"
    assert recs["stuck"]["ready"] is False
    assert recs["stuck"]["reason"] == "Stalled (CrashLoop: boot failed 5 times)"
    for name, conds in CASES.items():
        assert recs[name]["conditions"] == conds


def test_default_table_keeps_lima_columns(
    instances: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == LIMA_COLUMNS
    statuses = {ln.split()[0]: ln.split()[1] for ln in lines[1:]}
    assert statuses == {"fine": "Running", "deg": "Running", "staged": "Running",
                        "stuck": "Stopped"}
    assert "Degraded" not in out and "Stalled" not in out


def test_wide_table_shows_conditions_and_reasons(
    instances: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["list", "--wide"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [*LIMA_COLUMNS, "READY", "MANAGED", "REASON"]
    start = lines[0].index("READY")
    rows = {ln.split()[0]: ln[start:] for ln in lines[1:]}
    assert rows["fine"].split() == ["Ready", "-", "-"]
    assert rows["deg"].split()[:2] == ["Degraded", "-"]
    assert rows["deg"].endswith("Degraded (MountFailed: mount /x failed)")
    assert rows["staged"].split()[0] == "Ready,RestartRequired"
    assert rows["staged"].endswith("RestartRequired (SpecChanged: cpus 1 -> 2)")
    assert rows["stuck"].split()[0] == "Stalled"
    assert rows["stuck"].endswith("Stalled (CrashLoop: boot failed 5 times)")


def test_stale_ready_of_a_stopped_vm_is_not_ready(
    instances: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # status.json still says Ready, but no VM runs (the pid files say Stopped).
    (instances / "stuck" / "status.json").write_text(json.dumps(
        {"version": 1, "phase": "running", "conditions": CASES["fine"]}))
    code, out, _ = run_cli(["list", "--json", "stuck"], capsys)
    assert code == 0
    rec = json.loads(out)
    assert rec["status"] == "Stopped"
    assert rec["ready"] is False
    assert "the VM is Stopped" in rec["reason"]


def test_no_status_json_has_no_readiness(
    instances: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (instances / "fine" / "status.json").unlink()
    code, out, _ = run_cli(["list", "--json", "fine"], capsys)
    assert code == 0
    rec = json.loads(out)
    assert "ready" not in rec and "conditions" not in rec
    code, out, _ = run_cli(["list", "--wide", "fine"], capsys)
    assert out.splitlines()[1].split()[-3:] == ["-", "-", "-"]


def test_managed_instance_in_wide_and_default_tables(
    instances: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lima.controller import managed

    managed.set_ownership("deg", managed.Ownership("controller:/f", "/f/deg.yaml", "x"))
    (managed.control_dir() / "deg.paused").write_text("")
    code, out, _ = run_cli(["list", "--wide", "deg", "fine"], capsys)
    assert code == 0
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert rows["deg"][9:11] == ["Degraded", "controller:/f"]
    assert rows["deg"][11] == "(paused)"
    assert rows["fine"][9:12] == ["Ready", "-", "-"]
    # Without --wide, MANAGED is the one column added, and only when something is managed.
    code, out, _ = run_cli(["list", "deg"], capsys)
    assert out.splitlines()[0].split() == [*LIMA_COLUMNS, "MANAGED"]
    code, out, _ = run_cli(["list", "--format", "yaml", "deg"], capsys)
    doc = yaml.safe_load(out)
    assert (doc["ready"], doc["reason"]) == (False, "Degraded (MountFailed: mount /x failed)")
