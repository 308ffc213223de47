"""Template loading: search order, base: chains, relative paths, stdin, file: inlining."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lima.errors import SpecError
from lima.schemas import name_from_locator
from lima.schemas.templates import find_template, load_document


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tpl_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", f"{first}:{second}")
    return tmp_path


def test_search_order_templates_path_then_lima_home_then_builtin(
    tpl_path: Path, _isolated_home: Path
) -> None:
    write(tpl_path / "second" / "x.yaml", "cpus: 2\n")
    write(_isolated_home / "_templates" / "x.yaml", "cpus: 3\n")
    assert load_document("template:x").data == {"cpus": 2}
    write(tpl_path / "first" / "x.yaml", "cpus: 1\n")
    assert load_document("template:x").data == {"cpus": 1}
    write(_isolated_home / "_templates" / "y.yaml", "cpus: 3\n")
    assert load_document("template:y").data == {"cpus": 3}
    # Built-in templates come last.
    assert find_template("default").parent.name == "templates"


def test_template_names_with_folders_and_old_form(tpl_path: Path) -> None:
    write(tpl_path / "first" / "_images" / "distro-1.2.yaml", "arch: x86_64\n")
    assert load_document("template:_images/distro-1.2").data == {"arch": "x86_64"}
    assert load_document("template://_images/distro-1.2").data == {"arch": "x86_64"}


def test_unknown_template_lists_where_it_looked(tpl_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_document("template:nope")
    text = str(err.value)
    assert "template 'nope' not found" in text
    assert str(tpl_path / "first") in text and "_templates" in text


def test_template_name_cannot_escape(tpl_path: Path) -> None:
    with pytest.raises(SpecError, match="invalid template name"):
        load_document("template:../etc/passwd")


def test_base_string_and_list_and_recursion(tpl_path: Path) -> None:
    write(tpl_path / "first" / "a.yaml", "base: template:b\ncpus: 1\n")
    write(tpl_path / "first" / "b.yaml", "base: [template:c, template:d]\nmemory: 1GiB\n")
    write(tpl_path / "first" / "c.yaml", "disk: 5GiB\nmemory: 2GiB\n")
    write(tpl_path / "first" / "d.yaml", "disk: 9GiB\narch: aarch64\n")
    doc = load_document("template:a")
    assert doc.data == {"cpus": 1, "memory": "1GiB", "disk": "5GiB", "arch": "aarch64"}
    assert doc.lines[("arch",)] == (str(tpl_path / "first" / "d.yaml"), 2)
    assert doc.lines[("cpus",)][1] == 2


def test_base_as_url_map(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "cpus: 3\n")
    main = write(tmp_path / "m.yaml", "base:\n- url: b.yaml\n")
    assert load_document(str(main)).data == {"cpus": 3}


def test_unknown_base_scheme_names_the_lima_url_plugin(tmp_path: Path) -> None:
    # Lima's experimental/fedora-rawhide uses `fedora-rawhide:` (a limactl-url-* plugin).
    main = write(tmp_path / "m.yaml", "base:\n- myscheme:some/thing\n")
    with pytest.raises(SpecError, match="limactl-url-myscheme plugin") as info:
        load_document(str(main))
    assert len(info.value.problems) == 1


def test_base_digest_is_not_supported_yet(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "cpus: 3\n")
    main = write(tmp_path / "m.yaml", "cpus: 1\nbase:\n- url: b.yaml\n  digest: sha256:00\n")
    with pytest.raises(SpecError, match="digest"):
        load_document(str(main))


def test_base_loop_is_detected_with_the_chain(tpl_path: Path) -> None:
    write(tpl_path / "first" / "a.yaml", "base: template:b\n")
    write(tpl_path / "first" / "b.yaml", "cpus: 1\nbase: template:a\n")
    with pytest.raises(SpecError) as err:
        load_document("template:a")
    problem = err.value.problems[0]
    assert "loop detected" in problem.message and "b.yaml ->" in problem.message
    assert problem.file.endswith("b.yaml") and problem.line == 2


def test_self_reference_is_a_loop(tmp_path: Path) -> None:
    main = write(tmp_path / "m.yaml", "base: ./m.yaml\n")
    with pytest.raises(SpecError, match="loop"):
        load_document(str(main))


def test_relative_paths_are_relative_to_the_including_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "sub" / "common" / "base.yaml", "memory: 1GiB\nbase: more.yaml\n")
    write(tmp_path / "sub" / "common" / "more.yaml", "disk: 2GiB\n")
    write(tmp_path / "sub" / "main.yaml", "base: common/base.yaml\n")
    monkeypatch.chdir(tmp_path)
    doc = load_document("sub/main.yaml")
    assert doc.data == {"memory": "1GiB", "disk": "2GiB"}
    assert doc.source == "sub/main.yaml"


def test_relative_dotdot_is_refused_like_lima(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "cpus: 1\n")
    main = write(tmp_path / "d" / "m.yaml", "base: ../b.yaml\n")
    with pytest.raises(SpecError, match=r"'\.\.'"):
        load_document(str(main))


def test_stdin(tmp_path: Path) -> None:
    doc = load_document("-", stdin=b"cpus: 2\n")
    assert doc.data == {"cpus": 2} and doc.source == "-"
    assert doc.lines[("cpus",)] == ("-", 1)
    with pytest.raises(SpecError, match="STDIN"):
        load_document("-", stdin=b"base: x.yaml\n")


def test_stdin_can_use_absolute_and_template_bases(tpl_path: Path) -> None:
    write(tpl_path / "first" / "b.yaml", "cpus: 4\n")
    assert load_document("-", stdin=b"base: template:b\n").data == {"cpus": 4}


def test_file_references_are_inlined(tmp_path: Path) -> None:
    write(tmp_path / "scripts" / "sys.sh", "#!/bin/sh\necho sys\n")
    write(tmp_path / "scripts" / "probe.sh", "#!/bin/sh\ntrue\n")
    write(tmp_path / "scripts" / "data.txt", "hello\n")
    main = write(
        tmp_path / "m.yaml",
        "provision:\n"
        "- mode: system\n  file: scripts/sys.sh\n"
        "- mode: data\n  path: /etc/x\n  file: {url: scripts/data.txt}\n"
        "probes:\n- file: scripts/probe.sh\n",
    )
    doc = load_document(str(main))
    assert doc.data["provision"][0] == {"mode": "system", "script": "#!/bin/sh\necho sys\n"}
    assert doc.data["provision"][1]["content"] == "hello\n"
    assert "file" not in doc.data["provision"][1]
    assert doc.data["probes"][0] == {"script": "#!/bin/sh\ntrue\n"}
    assert doc.lines[("provision", 0, "script")] == (str(main), 3)


def test_file_references_in_a_base_resolve_next_to_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "lib" / "s.sh", "#!/bin/sh\necho base\n")
    write(tmp_path / "lib" / "base.yaml", "provision:\n- file: s.sh\n")
    write(tmp_path / "app" / "s.sh", "#!/bin/sh\necho app\n")
    base = tmp_path / "lib" / "base.yaml"
    main = write(tmp_path / "app" / "m.yaml", f"base: {base}\nprovision:\n- file: s.sh\n")
    monkeypatch.chdir(tmp_path)
    doc = load_document(str(main))
    assert [p["script"] for p in doc.data["provision"]] == [
        "#!/bin/sh\necho base\n",
        "#!/bin/sh\necho app\n",
    ]


def test_file_reference_digest_is_checked(tmp_path: Path) -> None:
    write(tmp_path / "s.sh", "#!/bin/sh\n")
    good = hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    ok = write(
        tmp_path / "ok.yaml", f"provision:\n- file: {{url: s.sh, digest: 'sha256:{good}'}}\n"
    )
    assert load_document(str(ok)).data["provision"][0]["script"] == "#!/bin/sh\n"
    bad = write(tmp_path / "bad.yaml", "provision:\n- file: {url: s.sh, digest: 'sha256:00'}\n")
    with pytest.raises(SpecError, match="digest mismatch"):
        load_document(str(bad))


def test_missing_file_reference_names_file_and_line(tmp_path: Path) -> None:
    main = write(tmp_path / "m.yaml", "cpus: 1\nprovision:\n- mode: user\n  file: gone.sh\n")
    with pytest.raises(SpecError) as err:
        load_document(str(main))
    problem = err.value.problems[0]
    assert (problem.file, problem.line, problem.path) == (str(main), 4, "provision[0].file")
    assert "cannot read" in problem.message


def test_unreadable_top_level_file() -> None:
    with pytest.raises(SpecError, match=r"cannot read nowhere\.yaml"):
        load_document("nowhere.yaml")


def test_http_locators_are_refused_not_fetched() -> None:
    with pytest.raises(SpecError, match="not fetched"):
        load_document("https://example.com/x.yaml")


def test_image_locator_makes_a_minimal_template(tmp_path: Path) -> None:
    doc = load_document(str(tmp_path / "debian-12-genericcloud-arm64.qcow2"))
    assert doc.data["arch"] == "aarch64"
    assert doc.data["images"][0]["location"].endswith("arm64.qcow2")


def test_embed_combines_mounts_after_all_bases(tmp_path: Path) -> None:
    base = "mounts:\n- location: '~'\n- location: /tmp/lima\n  writable: true\n"
    write(tmp_path / "b.yaml", base)
    main = write(tmp_path / "m.yaml", "base: b.yaml\nmounts:\n- location: '~'\n  writable: true\n")
    doc = load_document(str(main))
    assert doc.data["mounts"] == [
        {"location": "~", "writable": True},
        {"location": "/tmp/lima", "writable": True},
    ]


@pytest.mark.parametrize(
    ("locator", "name"),
    [
        ("template:docker", "docker"),
        ("template://_images/ubuntu", "ubuntu"),
        ("dir/Foo.yaml", "foo"),
        ("x.yml", "x"),
        ("-", "default"),
        ("/x/debian-12.qcow2", "debian-12"),
    ],
)
def test_name_from_locator(locator: str, name: str) -> None:
    assert name_from_locator(locator) == name
