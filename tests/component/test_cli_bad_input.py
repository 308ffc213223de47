"""Bad input through the real CLI entry point (issue 2, "Bad input").

Every broken document is fed to `limactl validate` and `limactl create`: each must exit 1
with a message naming the file (and the line where there is one), never a traceback
(unless `--debug`), never run code, and leave LIMA_HOME untouched. Also: `validate --fill`
round trips, `limactl info`'s keys, every built-in template validates, `create -` reads
stdin. Most cases run in-process through `lima.cli.main`; a few run `python -m lima.cli`
as a subprocess to see exactly what a user sees.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lima import paths
from lima.cli import PASSTHROUGH_VERBS, main
from lima.errors import SpecError
from lima.globalflags import split_global_flags
from tests.component.cli import run_cli

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def run_subprocess(args: list[str], cwd: Path, stdin: bytes | None = None
                   ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "lima.cli", *args], cwd=cwd, env=dict(os.environ),
        input=stdin, capture_output=True, timeout=60,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))


def home_entries(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def alias_bomb() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Case:
    """A broken document: the files to write (first one is the locator) and what the
    message must say. `line` is the line the message must point at (0: no line)."""

    id: str
    files: dict[str, bytes]
    expect: str
    line: int = 0


MARKER = "PWNED"


def _tag(tag: str) -> bytes:
    return f'cpus: {tag} ["touch {MARKER}"]\n'.encode()


CASES = [
    Case("syntax", {"syntax.yaml": b"cpus: 1\nmounts: [\n"}, "YAML syntax error", 3),
    Case("syntax-indent", {"indent.yaml": b"ssh:\n  localPort: 1\n loadDotSSHPubKeys: x\n"},
         "YAML syntax error", 3),
    Case("wrong-type", {"types.yaml": b"images: []\ncpus: two\n"},
         "cpus: expected an integer", 2),
    Case("empty", {"empty.yaml": b""}, "empty document"),
    Case("comments-only", {"comments.yaml": b"# nothing here\n\n"}, "empty document"),
    Case("list", {"list.yaml": b"- cpus: 1\n- memory: 1GiB\n"}, "is a list", 1),
    Case("scalar", {"scalar.yaml": b"just some text\n"}, "is a scalar", 1),
    Case("binary", {"garbage.yaml": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4},
         "not a text file", 1),
    Case("bad-utf8", {"latin1.yaml": b"cpus: 1\nmessage: caf\xe9\n"}, "invalid UTF-8", 2),
    Case("huge", {"huge.yaml": b"cpus: 1\n" + b"#" * (4 * MIB + 16) + b"\n"},
         "larger than"),
    Case("alias-bomb", {"bomb.yaml": alias_bomb()}, "alias bomb"),
    Case("python-apply", {"apply.yaml": _tag("!!python/object/apply:os.system")},
         "YAML tag !!python/object/apply:os.system is not allowed", 1),
    Case("python-new", {"new.yaml": _tag("!!python/object/new:os.system")},
         "is not allowed", 1),
    Case("python-name", {"name.yaml": b"cpus: !!python/name:os.system\n"},
         "is not allowed", 1),
    Case("python-in-base",
         {"child.yaml": b"base: evil.yaml\n", "evil.yaml": _tag("!!python/object/apply:os.system")},
         "evil.yaml:1: YAML tag", 1),
    Case("unknown-template-base", {"unknown.yaml": b"cpus: 1\nbase: template:no-such-thing\n"},
         "template 'no-such-thing' not found", 2),
    Case("base-loop",
         {"loop-a.yaml": b"base: loop-b.yaml\n", "loop-b.yaml": b"cpus: 1\nbase: loop-a.yaml\n"},
         "loop"),
    Case("base-self", {"self.yaml": b"base: self.yaml\n"}, "loop", 1),
    Case("missing-base", {"orphan.yaml": b"base: not-there.yaml\n"}, "not-there.yaml", 1),
    Case("duplicate-key", {"dup.yaml": b"cpus: 1\nmemory: 1GiB\ncpus: 2\n"}, "duplicate key", 3),
]


@pytest.fixture
def in_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tmp_path, so file names in messages are the short relative ones."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_case(case: Case, where: Path) -> str:
    for name, content in case.files.items():
        (where / name).write_bytes(content)
    return next(iter(case.files))


def assert_names_file(err: str, file: str, line: int) -> None:
    if line:
        assert f"{file}:{line}:" in err, err
    else:
        assert file in err, err


@pytest.mark.parametrize("verb", ["validate", "create"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_document_is_refused(
    case: Case, verb: str, in_dir: Path, capsys: pytest.CaptureFixture[str],
    _isolated_home: Path,
) -> None:
    locator = write_case(case, in_dir)
    code, out, err = run_cli([verb, locator], capsys)
    assert code == 1, (out, err)
    assert case.expect in err
    # The problem is reported where it is: in the base file for the base cases.
    shown = locator if case.id not in ("python-in-base",) else "evil.yaml"
    if case.id == "base-loop":
        assert "loop-a.yaml" in err and "loop-b.yaml" in err
    else:
        assert_names_file(err, shown, case.line)
    assert "Traceback" not in err
    assert "OK" not in out
    assert not (in_dir / MARKER).exists(), "a YAML tag ran code"
    assert home_entries(_isolated_home) == []


@pytest.mark.parametrize("verb", ["validate", "create"])
def test_missing_file_and_directory(
    verb: str, in_dir: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    code, _, err = run_cli([verb, "missing.yaml"], capsys)
    assert code == 1
    assert "missing.yaml" in err and "No such file" in err
    (in_dir / "adir.yaml").mkdir()
    code, _, err = run_cli([verb, "adir.yaml"], capsys)
    assert code == 1 and "adir.yaml" in err
    assert "Traceback" not in err
    assert home_entries(_isolated_home) == []


@pytest.mark.parametrize("verb", ["validate", "create"])
def test_unknown_template_locator(
    verb: str, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    code, _, err = run_cli([verb, "template:no-such-template"], capsys)
    assert code == 1
    assert "template 'no-such-template' not found" in err
    assert str(paths.builtin_templates_dir()) in err  # says where it looked
    assert home_entries(_isolated_home) == []


MULTI = b"""\
cpus: 0
memory: 3XB
images: []
portForwards:
- guestPort: 22
  hostPort: 70000
mounts:
- location: relative/dir
user:
  shell: bash
"""
PROBLEM_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>[A-Za-z0-9_.\[\]]+): \S.*$")


@pytest.mark.parametrize("verb", ["validate", "create"])
def test_every_problem_reported_sorted(
    verb: str, in_dir: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    (in_dir / "multi.yaml").write_bytes(MULTI)
    code, _, err = run_cli([verb, "multi.yaml"], capsys)
    assert code == 1
    problems = [ln for ln in err.splitlines() if "warning:" not in ln]
    parsed = [PROBLEM_LINE.match(ln) for ln in problems]
    assert all(parsed), problems
    found = [(m["file"], int(m["line"]), m["path"]) for m in parsed if m]
    assert found == sorted(found)
    assert {f for f, _, _ in found} == {"multi.yaml"}
    paths_seen = {p for _, _, p in found}
    for field in ("cpus", "memory", "images", "portForwards[0].guestPort",
                  "portForwards[0].hostPort", "mounts[0].location", "user.shell"):
        assert field in paths_seen, (field, problems)
    assert dict((p, ln) for _, ln, p in found)["user.shell"] == 10
    assert home_entries(_isolated_home) == []


def test_problems_of_several_files_all_reported(
    in_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_dir / "b.yaml").write_bytes(b"images: []\n")
    (in_dir / "a.yaml").write_bytes(b"cpus: [\n")
    (in_dir / "ok.yaml").write_bytes(b"base: template:tiny\n")
    code, out, err = run_cli(["validate", "b.yaml", "ok.yaml", "a.yaml"], capsys)
    assert code == 1
    assert out.splitlines() == ["ok.yaml: OK"]
    lines = [ln for ln in err.splitlines() if "warning:" not in ln]
    assert lines[0].startswith("a.yaml:2: ") and lines[1].startswith("b.yaml:1: images: ")


def test_debug_reraises_in_process(in_dir: Path) -> None:
    (in_dir / "bad.yaml").write_bytes(b"cpus: [\n")
    for args in (["--debug", "validate", "bad.yaml"], ["validate", "--debug", "bad.yaml"]):
        with pytest.raises(SpecError, match=r"bad\.yaml:2"):
            main(args)


def test_global_flags_after_the_verb_are_taken_out() -> None:
    def rest(args: list[str]) -> list[str]:
        return split_global_flags(args, PASSTHROUGH_VERBS)[1]

    assert rest(["validate", "--debug", "x"]) == ["validate", "x"]
    assert rest(["--log-level", "info", "create", "--debug"]) == ["create"]
    # Arguments of the guest command are not ours.
    assert rest(["shell", "vm", "ls", "--debug"]) == ["shell", "vm", "ls", "--debug"]
    assert rest(["create", "--", "--debug"]) == ["create", "--", "--debug"]
    assert rest(["--debug"]) == []


@pytest.mark.parametrize("verb", ["validate", "create"])
def test_subprocess_no_traceback_no_code_run_and_debug_traceback(
    verb: str, tmp_path: Path, _isolated_home: Path
) -> None:
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / MARKER
    evil.write_text(f'images: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = run_subprocess([verb, "evil.yaml"], tmp_path)
    assert proc.returncode == 1
    assert "evil.yaml:1:" in proc.stderr and "not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()

    debug = run_subprocess(["--debug", verb, "evil.yaml"], tmp_path)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "SpecError" in debug.stderr
    assert "evil.yaml:1:" in debug.stderr
    assert not marker.exists()
    assert home_entries(_isolated_home) == []


def test_subprocess_huge_stdin_is_refused(tmp_path: Path, _isolated_home: Path) -> None:
    proc = run_subprocess(["validate", "-"], tmp_path, stdin=b"cpus: 1\n" + b"#" * (5 * MIB))
    assert proc.returncode == 1
    assert "larger than" in proc.stderr and "Traceback" not in proc.stderr


# -- what works --------------------------------------------------------------------------


def test_fill_round_trips(in_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, filled, _ = run_cli(["validate", "--fill", "template:default"], capsys)
    assert code == 0
    data = yaml.safe_load(filled)
    for key in ("cpus", "memory", "disk", "images", "mounts", "ssh", "user"):
        assert data.get(key) not in (None, "", []), key
    (in_dir / "filled.yaml").write_text(filled)
    code, out, err = run_cli(["validate", "filled.yaml"], capsys)
    assert code == 0, err
    assert out == "filled.yaml: OK\n"
    code, again, _ = run_cli(["validate", "--fill", "filled.yaml"], capsys)
    assert code == 0
    assert yaml.safe_load(again) == data


def test_fill_of_several_files_is_a_yaml_stream(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", "--fill", "template:default", "template:tiny"], capsys)
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert len(docs) == 2
    assert docs[1]["images"][0]["location"] == "build:tiny"
    assert docs[0]["images"][0]["location"].startswith("https://")


def test_info_json(capsys: pytest.CaptureFixture[str], _isolated_home: Path) -> None:
    code, out, err = run_cli(["info"], capsys)
    assert code == 0, err
    info = json.loads(out)
    for key in ("version", "limaHome", "templates", "defaultTemplate", "vmTypes",
                "identityFile"):
        assert key in info, key
    assert info["limaHome"] == str(_isolated_home)
    assert info["identityFile"] == str(_isolated_home / "_config" / "user")
    assert "qemu" in info["vmTypes"]
    assert info["hostOS"] == "linux"
    names = {t["name"]: t["location"] for t in info["templates"]}
    assert {"default", "tiny"} <= set(names)
    assert all(set(t) == {"name", "location"} for t in info["templates"])
    assert Path(names["tiny"]).is_file()
    assert not any(n.startswith("_") or "/_" in n for n in names)
    default = info["defaultTemplate"]
    assert isinstance(default["cpus"], int) and default["cpus"] >= 1
    assert default["memory"] and default["disk"] and default["images"]
    assert default["user"]["name"]
    assert home_entries(_isolated_home) == []


def test_info_lists_user_templates_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny.yaml").write_text("base: template:default\n")
    (tmp_path / "mine.yaml").write_text("base: template:default\n")
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(tmp_path))
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0
    names = {t["name"]: t["location"] for t in json.loads(out)["templates"]}
    assert names["mine"] == str(tmp_path / "mine.yaml")
    assert names["tiny"] == str(tmp_path / "tiny.yaml")  # first in search order wins


BUILTIN = sorted(p.stem for p in paths.builtin_templates_dir().glob("*.yaml"))


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_template_validates(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["validate", f"template:{name}"], capsys)
    assert code == 0, err
    assert out == f"template:{name}: OK\n"


def test_builtin_templates_found() -> None:
    assert {"default", "tiny"} <= set(BUILTIN)


@pytest.fixture
def local_image(tmp_path: Path) -> Path:
    img = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    return img


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_create_from_stdin(
    local_image: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    _isolated_home: Path,
) -> None:
    doc = (f"images:\n- location: {local_image}\n  arch: x86_64\narch: x86_64\ncpus: 1\n"
           "memory: 512MiB\ndisk: 1GiB\nmounts: []\nvmOpts:\n  qemu:\n    restrictNetwork: true\n")
    feed_stdin(monkeypatch, doc.encode())
    code, out, err = run_cli(["create", "--name", "piped", "-"], capsys)
    assert "piped" in out
    assert code == 0, err
    inst = _isolated_home / "piped"
    stored = yaml.safe_load((inst / "lima.yaml").read_text())
    assert stored["images"][0]["location"] == str(local_image)
    assert stored["cpus"] == 1
    assert (inst / "lima-version").read_text().strip()
    assert not [p for p in _isolated_home.iterdir() if p.name.startswith(".")]

    feed_stdin(monkeypatch, doc.encode())  # no --name: refused, as Lima 2.2 refuses it
    code, _, err = run_cli(["create", "-"], capsys)
    assert code == 1
    assert "must pass instance name with --name when reading template from stdin" in err
    assert not (_isolated_home / "default").exists()


def test_create_from_bad_stdin_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    feed_stdin(monkeypatch, b"cpus: !!python/object/apply:os.system ['true']\n")
    code, _, err = run_cli(["create", "--name", "default", "-"], capsys)
    assert code == 1
    assert "-:1:" in err and "not allowed" in err
    assert home_entries(_isolated_home) == []


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x" * 120])
def test_create_bad_name_writes_nothing(
    name: str, local_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    _isolated_home: Path,
) -> None:
    f = tmp_path / "vm.yaml"
    f.write_text(f"images:\n- location: {local_image}\n  arch: x86_64\narch: x86_64\n")
    code, _, err = run_cli(["create", "--name", name, str(f)], capsys)
    assert code == 1
    assert "name" in err and "Traceback" not in err
    assert home_entries(_isolated_home) == []
    assert not (_isolated_home.parent / "escape").exists()



@pytest.mark.parametrize("verb", ["validate", "create"])
def test_bad_config_files_named_with_their_lines(
    verb: str, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    config = _isolated_home / "_config"
    config.mkdir()
    (config / "default.yaml").write_text("cpus: 2\nprovision: not-a-list\n")
    (config / "override.yaml").write_text("# override\ncpus: two\n")
    code, _, err = run_cli([verb, "template:tiny"], capsys)
    assert code == 1
    problems = [ln for ln in err.splitlines() if "warning:" not in ln]
    assert problems == [
        f"{config / 'default.yaml'}:2: provision: expected a list, got 'not-a-list'",
        f"{config / 'override.yaml'}:2: cpus: expected an integer, got 'two'",
    ]
    assert home_entries(_isolated_home) == ["_config"]
    assert sorted(p.name for p in config.iterdir()) == ["default.yaml", "override.yaml"]
