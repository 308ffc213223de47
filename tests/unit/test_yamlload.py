"""lima.schemas.yamlload: safe loading with line marks, and refusal of hostile input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lima.errors import SpecError
from lima.schemas import yamlload
from lima.schemas.yamlload import MAX_BYTES, load_yaml


def refused(text: str | bytes) -> str:
    with pytest.raises(SpecError) as info:
        load_yaml(text, "bad.yaml")
    assert all(p.file == "bad.yaml" for p in info.value.problems)
    return str(info.value)


def test_data_and_lines_of_keys_and_items() -> None:
    loaded = load_yaml(
        "# comment\n"
        "vmType: qemu\n"
        "images:\n"
        "- location: https://example.org/a.img\n"
        "  arch: x86_64\n"
        "- location: /b.img\n"
        "mounts: []\n",
        "x.yaml",
    )
    assert loaded.data == {
        "vmType": "qemu",
        "images": [{"location": "https://example.org/a.img", "arch": "x86_64"},
                   {"location": "/b.img"}],
        "mounts": [],
    }
    assert loaded.lines[("vmType",)] == 2
    assert loaded.lines[("images",)] == 3
    assert loaded.lines[("images", 0)] == 4
    assert loaded.lines[("images", 0, "arch")] == 5
    assert loaded.lines[("images", 1, "location")] == 6
    assert loaded.lines[("mounts",)] == 7


def test_bytes_with_bom_are_decoded() -> None:
    assert load_yaml("\ufeffcpus: 2\n".encode(), "x.yaml").data == {"cpus": 2}


def test_scalars_follow_yaml_1_2_core_like_lima() -> None:
    data = load_yaml(
        "a: yes\nb: on\nc: true\nd: 0644\ne: 0o17\nf: 0x1F\ng: 1.5\nh: ~\ni:\n"
        "j: 2024-01-01\nk: '4'\nl: 1:30\nm: .inf\nn: False\n",
        "x.yaml",
    ).data
    assert data == {"a": "yes", "b": "on", "c": True, "d": 644, "e": 15, "f": 31, "g": 1.5,
                    "h": None, "i": None, "j": "2024-01-01", "k": "4", "l": "1:30",
                    "m": float("inf"), "n": False}


def test_keys_are_strings_even_when_they_look_like_numbers() -> None:
    assert load_yaml("env:\n  1: a\n  true: b\n", "x.yaml").data == {"env": {"1": "a", "true": "b"}}


def test_standard_tags_are_allowed() -> None:
    data = load_yaml("a: !!str 12\nb: !!int '3'\nc: !!bool 'true'\nd: ! 5\n", "x.yaml").data
    assert data == {"a": "12", "b": 3, "c": True, "d": "5"}


def test_aliases_are_copied_and_keep_the_anchor_lines() -> None:
    loaded = load_yaml(
        "mounts:\n"
        "- &m\n"
        "  location: /a\n"
        "  writable: true\n"
        "- *m\n",
        "x.yaml",
    )
    first, second = loaded.data["mounts"]
    assert first == second and first is not second  # later mutation stays local
    assert loaded.lines[("mounts", 1)] == 5
    assert loaded.lines[("mounts", 1, "writable")] == 4


def test_merge_keys() -> None:
    loaded = load_yaml(
        "base: &b\n  cpus: 2\n  memory: 1GiB\nother:\n  <<: *b\n  cpus: 4\n", "x.yaml")
    assert loaded.data["other"] == {"cpus": 4, "memory": "1GiB"}
    assert loaded.lines[("other", "memory")] == 3
    assert loaded.lines[("other", "cpus")] == 6


def test_first_document_of_a_stream_is_used() -> None:
    assert load_yaml("cpus: 1\n---\ncpus: 2\n", "x.yaml").data == {"cpus": 1}


def test_syntax_error_names_file_and_line() -> None:
    message = refused("cpus: 1\nimages: [\n  - a\n")
    assert message.startswith("bad.yaml:")
    assert "YAML syntax error" in message


def test_syntax_error_in_a_later_document_is_still_refused() -> None:
    message = refused("cpus: 1\n---\na: [\n")
    # libyaml marks the end of input (line 4); the pure-Python parser the bracket (line 3)
    assert message.startswith(("bad.yaml:3: YAML syntax error", "bad.yaml:4: YAML syntax error"))


@pytest.mark.parametrize("text", ["", "   \n", "# nothing but a comment\n", "---\n", "~\n"])
def test_empty_documents(text: str) -> None:
    assert "empty document" in refused(text)


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("hello\n", "a scalar")])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    assert f"the document is {kind}" in refused(text)


def test_duplicate_keys_are_an_error_with_the_second_line() -> None:
    assert refused("cpus: 1\nmemory: 2GiB\ncpus: 2\n") == (
        "bad.yaml:3: duplicate key 'cpus' in mapping")


def test_binary_garbage_is_refused() -> None:
    assert "NUL" in refused(b"cpus: 1\n\x00\x01\x02")
    assert "bad.yaml:2: not a text file: invalid UTF-8" in refused(b"cpus: 1\n\xff\xfe\xfd")
    assert "not a text file" in refused("cpus: \x07\n")


def test_files_over_4_mib_are_refused_before_parsing() -> None:
    big = "a: '" + "x" * MAX_BYTES + "'\n"
    assert "larger than 4 MiB" in refused(big)
    assert "larger than 4 MiB" in refused(big.encode())


def test_billion_laughs_fails_fast() -> None:
    bomb = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        prev, cur = chr(96 + i), chr(97 + i)
        bomb.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    start = time.monotonic()
    message = refused("\n".join(bomb) + "\n")
    assert "alias bomb" in message
    assert time.monotonic() - start < 5  # generous: it must not expand a billion nodes


def test_legitimate_aliases_within_budget_are_fine() -> None:
    text = "a: &a [1, 2, 3]\n" + "".join(f"k{i}: *a\n" for i in range(1000))
    assert load_yaml(text, "x.yaml").data["k999"] == [1, 2, 3]


def test_alias_to_itself_and_unknown_alias() -> None:
    assert "unknown alias *a" in refused("a: &a [*a]\n")
    assert "unknown alias *nope" in refused("a: *nope\n")


def test_deep_nesting_is_refused() -> None:
    message = refused("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nest" in message


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/name:os.system",
                                 "!!binary", "!!set", "!!timestamp", "!custom"])
def test_non_standard_tags_are_refused_and_never_run(tag: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"a: {tag} ['touch {marker}']\n" if "apply" in tag else f"a: {tag} x\n"
    message = refused(text)
    assert "is not allowed" in message
    assert not marker.exists()


def test_complex_keys_are_refused() -> None:
    assert "mapping keys must be scalars" in refused("? [a, b]\n: 1\n")


def test_invalid_explicit_int() -> None:
    assert "'abc' is not a valid !!int" in refused("a: !!int abc\n")


def test_pure_python_parser_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    text = "a: &x {b: [1, 2]}\nc: *x\nd: 'q'\n"
    fast = load_yaml(text, "x.yaml")
    monkeypatch.setattr(yamlload, "_Loader", yaml.SafeLoader)
    slow = load_yaml(text, "x.yaml")
    assert fast == slow
    with pytest.raises(SpecError, match="not a text file"):
        load_yaml("a: \x07\n", "x.yaml")
