"""lima.schema.json and its fast evaluator (lima.schemas.schemacheck)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lima.schemas.lines import from_loaded
from lima.schemas.schemacheck import jsonschema_validator, load_schema, schema_problems
from lima.schemas.validate import check
from lima.schemas.yamlload import load_yaml

SCHEMA_FILE = Path(__file__).parents[2] / "lima" / "schemas" / "lima.schema.json"

# Every top-level field of Lima's templates/default.yaml (and limatype.LimaYAML).
TOP_LEVEL = [
    "base", "minimumLimaVersion", "vmType", "vmOpts", "os", "arch", "images", "cpuType", "cpus",
    "memory", "disk", "additionalDisks", "mounts", "mountTypesUnsupported", "mountType",
    "mountInotify", "ssh", "firmware", "audio", "video", "provision", "upgradePackages",
    "containerd", "guestInstallPrefix", "probes", "portForwards", "copyToHost", "message",
    "networks", "env", "param", "dns", "hostResolver", "propagateProxyEnv", "caCerts", "rosetta",
    "plain", "timezone", "nestedVirtualization", "user", "tpm",
]

NESTED = {
    "images": "location arch digest variant archVariant kernel initrd",
    "mounts": "location mountPoint writable sshfs 9p virtiofs",
    "provision": ("mode script file skipDefaultDependencyResolution playbook content overwrite "
                  "owner path permissions expression format"),
    "probes": "mode description script file hint",
    "portForwards": ("guestIP guestIPMustBeZero guestPort guestPortRange guestSocket hostIP "
                     "hostPort hostPortRange hostSocket proto reverse ignore static"),
    "copyToHost": "guest host deleteOnStop",
    "networks": "lima socket vzNAT macAddress interface metric",
}


def schema_errors(data: Any) -> list[tuple[str, str]]:
    return [(".".join(map(str, p)), m) for p, m, warn in schema_problems(data) if not warn]


def jsonschema_valid(data: Any) -> bool:
    valid: bool = jsonschema_validator().is_valid(data)
    return valid


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_default_yaml_field_is_described() -> None:
    props = load_schema()["properties"]
    assert sorted(set(TOP_LEVEL) - set(props)) == []
    defs = load_schema()["$defs"]
    for field, names in NESTED.items():
        item = props[field]["items"]
        item = defs[item["$ref"].rsplit("/", 1)[-1]] if "$ref" in item else item
        assert sorted(set(names.split()) - set(item["properties"])) == [], field
    for name, prop in props.items():
        prop = defs[prop["$ref"].rsplit("/", 1)[-1]] if "$ref" in prop else prop
        assert prop.get("description"), name


def test_our_restrict_network_field() -> None:
    qemu = load_schema()["properties"]["vmOpts"]["properties"]["qemu"]["properties"]
    assert qemu["restrictNetwork"]["type"] == ["boolean", "null"]
    assert schema_errors({"vmOpts": {"qemu": {"restrictNetwork": True}}}) == []
    assert schema_errors({"vmOpts": {"qemu": {"restrictNetwork": "on"}}}) == [
        ("vmOpts.qemu.restrictNetwork", "expected a boolean (true/false), got 'on'")]


def _nulls(schema: dict[str, Any]) -> dict[str, Any]:
    """A document setting every field, at every depth, to null."""
    root = load_schema()
    out: dict[str, Any] = {}
    for key, sub in schema.get("properties", {}).items():
        sub = root["$defs"][sub["$ref"].rsplit("/", 1)[-1]] if "$ref" in sub else sub
        types = sub.get("type", [])
        if "object" in types and sub.get("properties"):
            out[key] = _nulls(sub)
        else:
            out[key] = None
    return out


def test_null_is_allowed_everywhere() -> None:
    doc = _nulls(load_schema())
    assert doc["vmOpts"]["qemu"]["restrictNetwork"] is None
    assert schema_errors(doc) == []
    assert jsonschema_valid(doc)
    assert [p for p, m, w in schema_problems(doc) if w] == []  # no unknown keys either


def test_sizes_accept_strings_and_integers() -> None:
    assert schema_errors({"memory": "4GiB", "disk": 107374182400}) == []
    assert schema_errors({"memory": [4]}) == [
        ("memory", "expected a string or an integer, got [4]")]


def test_unknown_keys_are_warnings_with_their_path() -> None:
    text = ("images:\n- location: /a.img\n  arch: x86_64\n  colour: red\n"
            "env:\n  ANYTHING: goes\nfancy: true\n")
    loaded = load_yaml(text, "u.yaml")
    found = check(loaded.data, from_loaded(loaded.lines, "u.yaml"), "u.yaml")
    assert [str(p) for p in found] == [
        "u.yaml:4: warning: images[0].colour: unknown field (Lima ignores it)",
        "u.yaml:7: warning: fancy: unknown field (Lima ignores it)",
    ]
    assert all(p.warning for p in found)


@pytest.mark.parametrize(("doc", "expected"), [
    ({"cpus": "two"}, [("cpus", "expected an integer, got 'two'")]),
    ({"cpus": True}, [("cpus", "expected an integer, got true")]),
    ({"images": {"location": "x"}}, [("images", 'expected a list, got {"location": "x"}')]),
    ({"images": [{"arch": "x86_64"}]}, [("images.0", "missing required field 'location'")]),
    ({"mounts": [{"location": "/a", "writable": "yes"}]},
     [("mounts.0.writable", "expected a boolean (true/false), got 'yes'")]),
    ({"portForwards": [{"guestPortRange": [1]}]},
     [("portForwards.0.guestPortRange", "expected at least 2 items, got 1")]),
    ({"portForwards": [{"hostPortRange": [1, 2, 3]}]},
     [("portForwards.0.hostPortRange", "expected at most 2 items, got 3")]),
    ({"additionalDisks": [{"format": True}]},
     [("additionalDisks.0", "missing required field 'name'")]),
    ({"additionalDisks": [5]}, [("additionalDisks.0", "expected a string or a mapping, got 5")]),
    ({"base": 5}, [("base", "expected a string or a list, got 5")]),
    ({"provision": [{"mode": "system", "file": {"digest": "x"}}]},
     [("provision.0.file", "missing required field 'url'")]),
    ({"env": {"A": [1]}}, [("env.A", "expected a string, a number or a boolean (true/false), "
                                     "got [1]")]),
])
def test_type_errors(doc: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert schema_errors(doc) == expected
    assert not jsonschema_valid(doc)


def test_type_errors_carry_file_and_line() -> None:
    loaded = load_yaml("images:\n- location: /a\ncpus: many\n", "c.yaml")
    [problem] = check(loaded.data, from_loaded(loaded.lines, "c.yaml"), "c.yaml")
    assert str(problem) == "c.yaml:3: cpus: expected an integer, got 'many'"


@pytest.mark.parametrize("doc", [
    {},
    {"images": [{"location": "/a", "kernel": {"location": "/k", "cmdline": "c"}, "initrd": None}]},
    {"base": ["template:default", {"url": "x.yaml", "digest": None}]},
    {"base": "template:default"},
    {"tpm": True}, {"tpm": {"enabled": False}},
    {"cpus": 2.0},
    {"provision": [{"file": "script.sh"}, {"permissions": 644}]},
])
def test_valid_documents_agree_with_jsonschema(doc: dict[str, Any]) -> None:
    assert schema_errors(doc) == []
    assert jsonschema_valid(doc)
