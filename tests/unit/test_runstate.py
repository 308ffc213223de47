"""`x-limapy.runState`: validated at file:line, an unknown key under `x-limapy` only warned
about (as Lima does with fields it does not know), kept out of the generation, and the
pure helpers of lima.states.runstate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lima import schemas
from lima.errors import SpecError
from lima.schemas.lines import from_loaded
from lima.schemas.spec import Mount
from lima.schemas.validate import check
from lima.schemas.yamlload import load_yaml
from lima.states.model import RunState
from lima.states.phases import Phase
from lima.states.runstate import next_run_state, suspend_refusal, wanted

pytestmark = pytest.mark.unit

BASE = "images:\n- location: https://example.org/a.img\n  arch: x86_64\n"


def problems(extra: str) -> list[tuple[str, int, str, bool]]:
    loaded = load_yaml(BASE + extra, "t.yaml")
    found = check(loaded.data, from_loaded(loaded.lines, "t.yaml"), "t.yaml")
    return [(p.path, p.line, p.message, p.warning) for p in found]


@pytest.mark.parametrize("value", ["running", "stopped", "suspended", "null"])
def test_the_run_states_a_file_may_ask_for(value: str) -> None:
    assert problems(f"x-limapy:\n  runState: {value}\n") == []


@pytest.mark.parametrize("value, shown", [("sleeping", "'sleeping'"), ("Running", "'Running'"),
                                          ("absent", "'absent'")])
def test_a_bad_run_state_is_an_error_at_its_line(value: str, shown: str) -> None:
    [(path, line, message, warning)] = problems(f"x-limapy:\n  runState: {value}\n")
    assert (path, line, warning) == ("x-limapy.runState", 5, False)
    assert message == f'must be "running", "stopped" or "suspended", got {shown}'


def test_a_run_state_of_the_wrong_type_is_an_error() -> None:
    [(path, line, message, warning)] = problems("x-limapy:\n  runState: 3\n")
    assert (path, line, warning) == ("x-limapy.runState", 5, False) and "string" in message


def test_an_unknown_key_under_x_limapy_is_a_warning() -> None:
    [(path, _line, message, warning)] = problems("x-limapy:\n  sleepy: true\n")
    assert path == "x-limapy.sleepy" and warning and "unknown field" in message


def test_the_run_state_is_not_in_the_generation(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMA_HOME", str(tmp_path / "home"))
    plain, asks = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain.write_text(BASE)
    asks.write_text(BASE + "x-limapy:\n  runState: suspended\n")
    a, b = schemas.resolve(str(plain), name="t"), schemas.resolve(str(asks), name="t")
    assert (a.spec.run_state, b.spec.run_state) == ("running", "suspended")
    assert a.generation == b.generation
    assert b.filled["x-limapy"] == {"runState": "suspended"}  # validate --fill shows it
    other = tmp_path / "c.yaml"
    other.write_text(BASE + "cpus: 3\nx-limapy:\n  runState: suspended\n")
    assert schemas.resolve(str(other), name="t").generation != b.generation
    bad = tmp_path / "d.yaml"
    bad.write_text(BASE + "x-limapy:\n  runState: asleep\n")
    with pytest.raises(SpecError, match=r"d\.yaml:5: x-limapy\.runState"):
        schemas.resolve(str(bad), name="t")


def test_suspended_goes_through_running() -> None:
    s = RunState.SUSPENDED
    assert next_run_state(s, None) is RunState.RUNNING
    assert next_run_state(s, Phase.STOPPED) is RunState.RUNNING
    assert next_run_state(s, Phase.BOOTING) is RunState.RUNNING
    for phase in (Phase.RUNNING, Phase.SUSPENDING, Phase.SUSPENDED):
        assert next_run_state(s, phase) is s
    assert next_run_state(RunState.STOPPED, Phase.SUSPENDED) is RunState.STOPPED
    assert next_run_state(RunState.RUNNING, None) is RunState.RUNNING


def test_suspend_refusal_names_the_mount_type(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMA_HOME", str(tmp_path / "home"))
    f = tmp_path / "dev.yaml"
    f.write_text(BASE + "x-limapy:\n  runState: suspended\n")
    plain = schemas.resolve(str(f), name="dev").spec
    assert wanted(plain) is RunState.SUSPENDED
    assert wanted(replace(plain, run_state="")) is RunState.RUNNING
    assert suspend_refusal(plain) == ""
    mount = Mount(location="/src", mount_point="/src")
    assert suspend_refusal(replace(plain, mounts=(mount,), mount_type="reverse-sshfs")) == ""
    why = suspend_refusal(replace(plain, mounts=(mount,), mount_type="virtiofs"))
    assert why.startswith("instance 'dev' cannot be suspended") and "virtiofs" in why
