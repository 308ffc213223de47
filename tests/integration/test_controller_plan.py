"""A real `limactl controller` applying changed files through the plan, on two tiny guests:
DIR is a git repository checked out at another commit that changes both instance files at
once, `a` (cpus 1 -> 2, restart class) and `b` (`message:`, live class). `a` is restarted
exactly once (its boot IID in status.json changes once) and `nproc` in it says 2; `b`
keeps its boot and records the new spec; status.json says who manages both."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.conftest import REPO, Limactl, qemu_pids_for
from tests.integration.test_controller import Controller

TINY = (REPO / "examples" / "tiny.yaml").read_text()


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
        capture_output=True, text=True,
    ).stdout.strip()


def _status(home: Path, name: str) -> dict[str, object]:
    try:
        doc = json.loads((home / name / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _ready(home: Path, name: str) -> bool:
    st = _status(home, name)
    return st.get("phase") == "running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in st.get("conditions") or [] if isinstance(c, dict))


def test_a_checkout_of_another_commit_converges_every_changed_instance(
    limactl: Limactl, tmp_path: Path,
) -> None:
    home = limactl.home
    folder = tmp_path / "vms"
    folder.mkdir()
    _git(folder, "init", "-q")
    (folder / "a.yaml").write_text(TINY)
    (folder / "b.yaml").write_text(TINY)
    _git(folder, "add", ".")
    _git(folder, "commit", "-q", "-m", "one")
    first = _git(folder, "rev-parse", "HEAD")
    (folder / "a.yaml").write_text(TINY + "cpus: 2\n")
    (folder / "b.yaml").write_text(TINY + "message: hello from b\n")
    _git(folder, "commit", "-q", "-a", "-m", "two")
    second = _git(folder, "rev-parse", "HEAD")
    _git(folder, "checkout", "-q", first)

    log = tmp_path / "controller.log"
    ctl = Controller(limactl, folder, log, "--resync=3", "--workers=2")
    try:
        end = time.monotonic() + 600
        while not (_ready(home, "a") and _ready(home, "b")):
            assert time.monotonic() < end, "a and b not Running"
            time.sleep(1)
        label = f"controller:{folder.resolve()}"
        assert _status(home, "a")["managedBy"] == label
        assert _status(home, "b")["managedBy"] == label
        iid_a, iid_b = _status(home, "a")["iid"], _status(home, "b")["iid"]
        assert limactl("shell", "a", "nproc").stdout.strip() == "1"

        _git(folder, "checkout", "-q", second)  # both files replaced at once
        seen_a: list[object] = [iid_a]
        end = time.monotonic() + 600
        while True:
            st = _status(home, "a")
            if st.get("iid") not in (None, seen_a[-1]):
                seen_a.append(st.get("iid"))
            applied = json.loads((home / "b" / "lima.applied.json").read_text())
            if (len(seen_a) > 1 and _ready(home, "a")
                    and applied["filled"].get("message") == "hello from b"):
                break
            assert time.monotonic() < end, f"not converged: a {st}"
            time.sleep(0.2)
        time.sleep(7)  # two resyncs: nothing more happens
        assert [*seen_a, _status(home, "a")["iid"]] == [iid_a, seen_a[1], seen_a[1]]
        assert limactl("shell", "a", "nproc").stdout.strip() == "2"
        assert _status(home, "b")["iid"] == iid_b and _ready(home, "b")
        assert len(qemu_pids_for(home)) == 2

        plans = {str(r["instance"]): r for r in ctl.events("a", "plan") + ctl.events("b", "plan")}
        assert len(ctl.events("a", "plan")) == 1 and len(ctl.events("b", "plan")) == 1
        assert plans["a"]["verdict"] == "restart"
        assert [c["path"] for c in plans["a"]["changes"]] == ["cpus"]  # type: ignore[union-attr]
        assert plans["b"]["verdict"] == "live"
        listed = json.loads(limactl("list", "--json", "b").stdout.splitlines()[0])
        assert listed["managedBy"] == label
    finally:
        ctl.end(signal.SIGKILL)
