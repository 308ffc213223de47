"""Odd instance names through every verb: none may touch a path outside `$LIMA_HOME/NAME`.

A property test over every verb that takes a NAME (as an argument, as `--name`, or implied
by a file name) and names that are not instance names: `.`, `..`, `''`, absolute paths,
`../x`, `a/b`, unicode, a leading `-`, `_config`, `.hidden`, and whatever hypothesis adds.
Each run must exit 1, say "instance name 'X'", and leave LIMA_HOME and a sentinel
directory next to it unchanged byte for byte. The sentinel holds a lima.yaml, so a verb
that took `../sentinel` for an instance would have acted on it (the old code deleted it).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lima import schemas
from lima.cli import main
from lima.names import is_valid_name

Snapshot = dict[str, tuple[str, int, bytes]]


def snapshot(root: Path) -> Snapshot:
    """Every entry under `root`: kind, mode and content (a symlink's target)."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [*dirnames, *filenames]:
            p = Path(dirpath) / entry
            st_ = os.lstat(p)
            if stat.S_ISLNK(st_.st_mode):
                found[str(p)] = ("link", 0, os.readlink(p).encode())
            elif stat.S_ISDIR(st_.st_mode):
                found[str(p)] = ("dir", st_.st_mode, b"")
            else:
                found[str(p)] = ("file", st_.st_mode, p.read_bytes())
    found[str(root)] = ("root", os.lstat(root).st_mode, b"")
    return found


@pytest.fixture
def world(tmp_path: Path, _isolated_home: Path) -> Iterator[dict[str, Path]]:
    """LIMA_HOME with one instance, _config, _locks and a hidden dir; a sentinel next to it
    that looks like an instance; a spec file to create from."""
    home = _isolated_home
    (home / "vm").mkdir()
    (home / "vm" / "lima.yaml").write_text("images: []\n")
    (home / "vm" / "diffdisk").write_bytes(b"disk")
    (home / "_config").mkdir()
    (home / "_config" / "user").write_text("key")
    (home / "_locks").mkdir()
    (home / ".hidden").mkdir()
    (home / ".hidden" / "x").write_text("x")
    sentinel = home.parent / f"{home.name}-sentinel"
    sentinel.mkdir()
    (sentinel / "lima.yaml").write_text("images: []\n")
    (sentinel / "precious").write_text("precious")
    spec = tmp_path / "spec.yaml"
    spec.write_text("images:\n- location: /nonexistent.qcow2\n  arch: x86_64\n")
    try:
        yield {"home": home, "sentinel": sentinel, "spec": spec, "files": tmp_path}
    finally:
        shutil.rmtree(sentinel, ignore_errors=True)


def fixed_odd_names(home: Path, sentinel: Path) -> list[str]:
    return [
        ".", "..", "", "/", str(sentinel), str(sentinel) + "/", f"../{sentinel.name}",
        f"vm/../../{sentinel.name}", "a/b", "vm/", "/vm", "é", "vmé", "\uff56\uff4d", "-x", "--",
        "-", "_config", "_locks", ".hidden", " vm", "vm ", "vm\n", "vm\x00", "~", "~/x",
        "x" * 120, "vm..x", "a__b", "vm.", "vm-", "\u202evm",
    ]


VERBS: dict[str, Callable[[str, Path], list[str]]] = {
    "create --name": lambda n, spec: ["create", f"--name={n}", str(spec)],
    "start": lambda n, spec: ["start", "--", n],
    "start --name": lambda n, spec: ["start", f"--name={n}", str(spec)],
    "apply --name": lambda n, spec: ["apply", f"--name={n}", str(spec)],
    "stop": lambda n, spec: ["stop", "--", n],
    "stop -f": lambda n, spec: ["stop", "-f", "--", n],
    "delete": lambda n, spec: ["delete", "--", n],
    "delete -f": lambda n, spec: ["delete", "-f", "--", n],
    "delete vm NAME": lambda n, spec: ["delete", "vm", "--", n],  # nothing deleted at all
    "protect": lambda n, spec: ["protect", "--", n],
    "unprotect": lambda n, spec: ["unprotect", "--", n],
    "list": lambda n, spec: ["list", "--", n],
    "list --json": lambda n, spec: ["list", "--json", "vm", "--", n],
    "shell": lambda n, spec: ["shell", "--", n, "true"],
    "hostagent": lambda n, spec: ["hostagent", "--iid", "i-1", "--", n],
}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    _, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), err


def _looks_like_a_locator(verb: str, name: str) -> bool:
    # `start TARGET` takes a file or template as well as a name: those are not names.
    return verb == "start" and (name == "-" or name.startswith("template:")
                                or name.endswith((".yaml", ".yml")))


def check_refused(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                  args: list[str], shown: str) -> None:
    before = snapshot(world["home"]), snapshot(world["sentinel"])
    code, err = run(args, capsys)
    assert code == 1, (args, err)
    assert f"instance name {shown!r}" in err, (args, err)
    assert "Traceback" not in err
    assert (snapshot(world["home"]), snapshot(world["sentinel"])) == before, args


ODD_TEXT = st.text(max_size=24).filter(lambda s: not is_valid_name(s))
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_fixed_odd_names_touch_nothing(
    verb: str, world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for name in fixed_odd_names(world["home"], world["sentinel"]):
        if _looks_like_a_locator(verb, name):
            continue
        check_refused(world, capsys, VERBS[verb](name, world["spec"]), name)


@SETTINGS
@given(verb=st.sampled_from(sorted(VERBS)), name=ODD_TEXT)
def test_any_odd_name_touches_nothing(
    verb: str, name: str, world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assume(not _looks_like_a_locator(verb, name))
    check_refused(world, capsys, VERBS[verb](name, world["spec"]), name)


FILE_VERBS = ("create", "apply", "start")


@SETTINGS
@given(verb=st.sampled_from(FILE_VERBS), stem=st.one_of(
    st.sampled_from(["", ".", "..", "_config", ".hidden", "-x", "é", "a b", "_locks"]),
    st.text(st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]),
            max_size=20),
))
def test_odd_names_implied_by_file_names_touch_nothing(
    verb: str, stem: str, world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`limactl create ..yaml` names the instance '.', `create _config.yaml` '_config'."""
    f = world["files"] / f"{stem}.yaml"
    assume(len(os.fsencode(f.name)) < 250)
    derived = schemas.name_from_locator(str(f))
    assume(not is_valid_name(derived))
    f.write_bytes(world["spec"].read_bytes())
    try:
        check_refused(world, capsys, [verb, str(f)], derived)
    finally:
        f.unlink()
