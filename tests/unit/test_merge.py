"""The embed rules of lima.schemas.merge (Lima's pkg/limatmpl/embed.go), one by one."""

from __future__ import annotations

from typing import Any

from lima.schemas import fields
from lima.schemas.merge import (
    DISK_FIELDS,
    MOUNT_FIELDS,
    NETWORK_FIELDS,
    PREPENDED,
    LineMap,
    combine_list_entries,
    merge_base,
    walk_paths,
)


def lines_for(data: Any, file: str) -> LineMap:
    """A fake LineMap: every path on its own line number, in walk order."""
    return {p: (file, n + 1) for n, p in enumerate(walk_paths(data))}


def merge(child: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    data, _ = merge_base(child, lines_for(child, "child"), base, lines_for(base, "base"))
    return data


def test_missing_fields_come_from_the_base() -> None:
    assert merge({"cpus": 2}, {"cpus": 4, "memory": "1GiB"}) == {"cpus": 2, "memory": "1GiB"}


def test_child_null_wins_over_base_value() -> None:
    assert merge({"cpus": None}, {"cpus": 4}) == {"cpus": None}


def test_maps_merge_recursively_child_wins() -> None:
    out = merge(
        {"ssh": {"localPort": 60022}, "env": {"A": "child"}},
        {"ssh": {"localPort": 1, "forwardAgent": True}, "env": {"A": "base", "B": "base"}},
    )
    assert out["ssh"] == {"localPort": 60022, "forwardAgent": True}
    assert out["env"] == {"A": "child", "B": "base"}


def test_lists_are_appended() -> None:
    out = merge({"images": [{"location": "c"}]}, {"images": [{"location": "b"}]})
    assert [i["location"] for i in out["images"]] == ["c", "b"]


def test_provision_and_probes_are_prepended() -> None:
    out = merge(
        {"provision": [{"script": "child"}], "probes": [{"script": "child"}]},
        {"provision": [{"script": "base"}], "probes": [{"script": "base"}]},
    )
    assert [p["script"] for p in out["provision"]] == ["base", "child"]
    assert [p["script"] for p in out["probes"]] == ["base", "child"]


def test_list_missing_in_child_is_copied_not_doubled() -> None:
    out = merge({}, {"portForwards": [{"guestPort": 80}]})
    assert out["portForwards"] == [{"guestPort": 80}]


def test_nested_lists_in_maps_are_appended() -> None:
    out = merge(
        {"caCerts": {"certs": ["child"]}}, {"caCerts": {"certs": ["base"], "files": ["f"]}}
    )
    assert out["caCerts"] == {"certs": ["child", "base"], "files": ["f"]}


def test_dns_of_the_child_replaces_the_base() -> None:
    assert merge({"dns": ["1.1.1.1"]}, {"dns": ["8.8.8.8"]})["dns"] == ["1.1.1.1"]
    assert merge({}, {"dns": ["8.8.8.8"]})["dns"] == ["8.8.8.8"]


def test_mount_types_unsupported_are_unique() -> None:
    out = merge({"mountTypesUnsupported": ["9p"]}, {"mountTypesUnsupported": ["9p", "virtiofs"]})
    assert out["mountTypesUnsupported"] == ["9p", "virtiofs"]


def test_base_key_is_dropped() -> None:
    assert "base" not in merge({"base": ["x"], "cpus": 1}, {"base": "y", "memory": "1G"})


def test_minimum_versions_keep_the_higher() -> None:
    out = merge(
        {"minimumLimaVersion": "1.0.0", "vmOpts": {"qemu": {"minimumVersion": "8.2.1"}}},
        {"minimumLimaVersion": "1.1.0", "vmOpts": {"qemu": {"minimumVersion": "7.0.0"}}},
    )
    assert out["minimumLimaVersion"] == "1.1.0"
    assert out["vmOpts"]["qemu"]["minimumVersion"] == "8.2.1"


def test_lines_follow_values_to_their_file() -> None:
    child = {"cpus": 2, "provision": [{"script": "c"}]}
    base = {"memory": "1GiB", "provision": [{"script": "b"}]}
    data, lines = merge_base(child, lines_for(child, "child"), base, lines_for(base, "base"))
    assert lines[("cpus",)][0] == "child"
    assert lines[("memory",)][0] == "base"
    # The base's provision entry moved to index 0, the child's to index 1.
    assert lines[("provision", 0, "script")][0] == "base"
    assert lines[("provision", 1, "script")][0] == "child"
    assert data["provision"][1]["script"] == "c"


def combine(data: dict[str, Any]) -> dict[str, Any]:
    out, _ = combine_list_entries(data, lines_for(data, "f"))
    return out


def test_mounts_combine_by_mount_point() -> None:
    out = combine(
        {
            "mounts": [
                {"location": "~", "writable": True},
                {"location": "/tmp/lima", "writable": True},
                {"location": "~", "writable": False, "sshfs": {"cache": False}},
            ]
        }
    )
    assert out["mounts"] == [
        {"location": "~", "writable": True, "sshfs": {"cache": False}},
        {"location": "/tmp/lima", "writable": True},
    ]


def test_mounts_with_explicit_mount_point_match_on_it() -> None:
    out = combine(
        {
            "mounts": [
                {"location": "/a", "mountPoint": "/mnt"},
                {"location": "/b", "mountPoint": "/mnt", "writable": True},
            ]
        }
    )
    assert out["mounts"] == [{"location": "/a", "mountPoint": "/mnt", "writable": True}]


def test_mount_wildcard_fills_every_earlier_entry() -> None:
    out = combine(
        {
            "mounts": [
                {"location": "/a"},
                {"location": "/b", "writable": True},
                {"location": "*", "writable": False, "9p": {"cache": "none"}},
            ]
        }
    )
    assert out["mounts"] == [
        {"location": "/a", "writable": False, "9p": {"cache": "none"}},
        {"location": "/b", "writable": True, "9p": {"cache": "none"}},
    ]


def test_additional_disks_combine_by_name_and_strings_upgrade() -> None:
    out = combine(
        {
            "additionalDisks": [
                "data",
                {"name": "data", "format": True, "fsType": "ext4", "fsArgs": ["-m0"]},
                {"name": "other"},
            ]
        }
    )
    assert out["additionalDisks"] == [
        {"name": "data", "format": True, "fsType": "ext4", "fsArgs": ["-m0"]},
        {"name": "other"},
    ]


def test_networks_combine_by_interface_lima_and_socket_exclusive() -> None:
    out = combine(
        {
            "networks": [
                {"interface": "eth1", "socket": "/run/x"},
                {"interface": "eth1", "lima": "shared", "metric": 50},
                {"lima": "bridged"},
                {"lima": "bridged"},
            ]
        }
    )
    assert out["networks"] == [
        {"interface": "eth1", "socket": "/run/x", "metric": 50},
        {"lima": "bridged"},
        {"lima": "bridged"},
    ]


def test_combine_keeps_lines_of_surviving_entries() -> None:
    data = {
        "mounts": [{"location": "/a"}, {"location": "/a", "writable": True}, {"location": "/b"}]
    }
    lines = lines_for(data, "f")
    out, new_lines = combine_list_entries(data, lines)
    assert len(out["mounts"]) == 2
    assert new_lines[("mounts", 1, "location")] == lines[("mounts", 2, "location")]
    assert new_lines[("mounts", 0, "writable")] == lines[("mounts", 1, "writable")]
    assert data["mounts"][0] == {"location": "/a"}  # input untouched


def test_field_lists_come_from_the_field_table() -> None:
    """merge.py keeps no field lists of its own: they are read from lima.schemas.fields,
    and are what Lima's embed.go uses."""

    def keys(rows: tuple[fields.Entry, ...]) -> list[tuple[str, ...]]:
        return [tuple(row.key.split(".")) for row in rows]

    assert sorted(PREPENDED) == ["base", "probes", "provision"]
    assert keys(MOUNT_FIELDS) == [
        ("mountPoint",), ("writable",), ("sshfs", "cache"), ("sshfs", "followSymlinks"),
        ("sshfs", "sftpDriver"), ("9p", "securityModel"), ("9p", "protocolVersion"),
        ("9p", "msize"), ("9p", "cache"), ("virtiofs", "queueSize"),
    ]
    assert keys(DISK_FIELDS) == [("format",), ("fsType",), ("fsArgs",)]
    assert keys(NETWORK_FIELDS) == [
        ("lima",), ("socket",), ("macAddress",), ("vzNAT",), ("metric",),
    ]
    # fsArgs is taken whole when the earlier entry has none or an empty list.
    assert [r.combine for r in DISK_FIELDS][-1] is fields.Combine.FILL_EMPTY
    assert {r.key: r.exclusive for r in NETWORK_FIELDS if r.exclusive} == {
        "lima": ("socket",), "socket": ("lima",),
    }


def test_empty_fs_args_are_inherited_whole_and_lima_socket_judged_together() -> None:
    data = {
        "additionalDisks": [{"name": "d", "fsArgs": []}, {"name": "d", "fsArgs": ["-x"]}],
        "networks": [{"interface": "a"}, {"interface": "a", "lima": "l", "socket": "s"}],
    }
    out, _ = combine_list_entries(data, lines_for(data, "f"))
    assert out["additionalDisks"] == [{"name": "d", "fsArgs": ["-x"]}]
    # Neither set in the earlier entry: both are copied (the test is made before copying).
    assert out["networks"] == [{"interface": "a", "lima": "l", "socket": "s"}]
