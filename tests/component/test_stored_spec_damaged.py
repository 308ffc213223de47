"""An instance whose stored lima.yaml was damaged after create, through the real CLI entry
point (no VM): `apply FILE` and `start NAME` stop at once with the file's problem and what
to do, `list` shows the instance Broken with the reason, nothing is written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lima import paths
from tests.component.cli import run_cli

DAMAGE = {
    "invalid YAML": (b"cpus: [1,\n", ":2: YAML syntax error"),
    "binary": (b"\x00\x01\xff\xfe\x7fELF", ":1: not a text file"),
    "empty": (b"", ": empty document"),
}


@pytest.fixture
def document(tmp_path: Path) -> Path:
    img = tmp_path / "base.img"
    img.write_bytes(b"\0" * 65536)
    doc = tmp_path / "t.yaml"
    doc.write_text(f"images:\n- location: {img}\n  arch: x86_64\n")
    return doc


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request: pytest.FixtureRequest, _isolated_home: Path) -> tuple[Path, str]:
    """Instance `t` as create leaves it, then its lima.yaml damaged; (file, problem)."""
    raw, problem = DAMAGE[request.param]
    inst = _isolated_home / "t"
    inst.mkdir()
    (inst / paths.LIMA_VERSION).write_text("2.1.2")
    (inst / paths.LIMA_YAML).write_bytes(raw)
    return inst / paths.LIMA_YAML, problem


def entries(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("args", [["apply", "{doc}"], ["start", "t"]])
def test_apply_and_start_stop_at_once_with_the_problem_and_the_remedy(
    damaged: tuple[Path, str], document: Path, args: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    yaml_file, problem = damaged
    before = entries(yaml_file.parent)
    t0 = time.monotonic()
    code, out, err = run_cli([a.format(doc=document) for a in args], capsys)
    assert time.monotonic() - t0 < 5
    assert code == 1
    assert "Traceback" not in err and "internal error" not in err
    first, *rest = err.splitlines()
    assert first.startswith(f"{yaml_file}{problem}")
    assert rest[-1] == (
        f"instance 't' cannot be started: its lima.yaml is damaged (see above). Fix "
        f"{yaml_file}, or start over with `limactl delete t` and apply again (that deletes"
        f" the instance's disk, and its data)"
    )
    assert "changed; restart needed" not in out
    assert entries(yaml_file.parent) == before  # nothing written, nothing booted


def test_list_shows_it_broken_with_the_reason(
    damaged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    yaml_file, problem = damaged
    code, out, _ = run_cli(["list", "--json"], capsys)
    assert code == 0
    rec = json.loads(out)
    assert rec["status"] == "Broken"
    assert any(e.startswith(f"{yaml_file}{problem}") for e in rec["errors"])


def test_host_agent_boots_without_mounts_rather_than_dying_on_it(
    damaged: tuple[Path, str], document: Path
) -> None:
    # The host agent reads lima.yaml only for the mounts, after qemu started from a checked
    # command line: a file damaged in between degrades the guest instead of killing it
    # (which made the driver boot it again and again).
    from lima.commands.hostagent import _spec_for_mounts

    yaml_file, problem = damaged
    spec, why = _spec_for_mounts("t")
    assert spec is None and why is not None
    assert why.startswith(f"mounts not set up: {yaml_file}{problem}")
    assert why.endswith(f"(fix {yaml_file}, then restart the instance)")
    yaml_file.write_bytes(document.read_bytes())
    spec, why = _spec_for_mounts("t")
    assert spec is not None and spec.name == "t" and why is None
    yaml_file.unlink()
    assert _spec_for_mounts("t") == (None, None)  # no file: nothing to mount, as before
