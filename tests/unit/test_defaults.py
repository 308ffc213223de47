"""Builtin defaults, _config/default.yaml and override.yaml precedence, {{.X}} expansion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lima import gotmpl
from lima.errors import Problem
from lima.schemas.defaults import fill, hostname_of, mac_address
from lima.schemas.hostfacts import HostFacts
from lima.units import bytes_size

HOST = HostFacts(
    arch="x86_64",
    cpus=2,
    memory=3 << 30,
    user="alice",
    uid=501,
    comment="Alice A",
    home="/Users/alice",
    timezone="Europe/Paris",
    machine_id="abc",
    tempdir="/var/tmp",
)


def run(data: dict[str, Any], home: Path, host: HostFacts = HOST, **kw: Any) -> dict[str, Any]:
    return fill(data, name="dev", lima_home=home, host=host, **kw)


def config(home: Path, name: str, text: str) -> None:
    (home / "_config").mkdir(parents=True, exist_ok=True)
    (home / "_config" / name).write_text(text)


def test_builtin_defaults(tmp_path: Path) -> None:
    out = run({"images": [{"location": "/i.qcow2"}]}, tmp_path)
    assert out["vmType"] == "qemu" and out["os"] == "Linux" and out["arch"] == "x86_64"
    assert out["cpus"] == 2  # min(4, host)
    assert out["memory"] == "1.5GiB"  # min(4GiB, half of 3GiB)
    assert out["disk"] == "100GiB"
    assert out["images"] == [{"location": "/i.qcow2", "arch": "x86_64"}]
    assert out["user"] == {
        "name": "alice",
        "comment": "Alice A",
        "home": "/home/alice.guest",
        "shell": "/bin/bash",
        "uid": 501,
        "passwordlessSudo": True,  # Lima >= 2.2
    }
    # Lima 2.2's other new fields, filled as Lima fills them.
    assert out["tpm"] is False and out["osOpts"] == {}
    assert out["audio"] == {"device": "", "interface": ""}
    assert out["mountType"] == "9p"  # Lima >= 1.0 on QEMU
    assert out["ssh"] == {
        "localPort": 0,
        "loadDotSSHPubKeys": False,
        "forwardAgent": False,
        "forwardX11": False,
        "forwardX11Trusted": False,
    }
    assert out["containerd"] == {"system": False, "user": False, "archives": []}
    assert out["hostResolver"] == {"hosts": {}, "enabled": True, "ipv6": False}
    assert out["propagateProxyEnv"] is True
    assert out["firmware"] == {"legacyBIOS": False, "images": []}
    assert out["video"] == {"display": "none", "vnc": {"display": "127.0.0.1:0,to=9"}}
    assert out["timezone"] == "Europe/Paris"
    assert out["vmOpts"]["qemu"]["restrictNetwork"] is False
    assert out["plain"] is False and out["nestedVirtualization"] is False
    assert list(out)[:3] == ["vmType", "arch", "images"]


def test_big_host_caps_cpus_and_memory(tmp_path: Path) -> None:
    big = HostFacts(**{**HOST.__dict__, "cpus": 64, "memory": 256 << 30})
    out = run({}, tmp_path, big)
    assert out["cpus"] == 4 and out["memory"] == "4GiB"


def test_root_host_user_falls_back_to_lima(tmp_path: Path) -> None:
    root = HostFacts(**{**HOST.__dict__, "user": "root", "uid": 0})
    notes: list[Problem] = []
    out = run({}, tmp_path, root, warnings=notes)
    assert (out["user"]["name"], out["user"]["uid"]) == ("lima", 1000)
    assert notes and notes[0].warning
    # An explicit user is kept, with no warning.
    notes.clear()
    out = run({"user": {"name": "me", "uid": 1234}}, tmp_path, root, warnings=notes)
    assert (out["user"]["name"], out["user"]["uid"]) == ("me", 1234) and not notes


def test_zero_and_empty_mean_default(tmp_path: Path) -> None:
    out = run({"cpus": 0, "memory": "", "disk": "", "arch": "default", "vmType": ""}, tmp_path)
    assert (out["cpus"], out["memory"], out["disk"]) == (2, "1.5GiB", "100GiB")
    assert out["arch"] == "x86_64" and out["vmType"] == "qemu"


def test_mount_type_defaults_as_lima_on_qemu(tmp_path: Path) -> None:
    assert run({}, tmp_path)["mountType"] == "9p"
    assert run({"mountType": "default"}, tmp_path)["mountType"] == "9p"
    # 9p unsupported (a cloud kernel without 9p): reverse-sshfs, as Lima's QEMU driver picks.
    out = run({"mountTypesUnsupported": ["9p"]}, tmp_path)
    assert out["mountType"] == "reverse-sshfs"
    config(tmp_path, "default.yaml", "mountTypesUnsupported: [9p]\n")
    assert run({}, tmp_path)["mountType"] == "reverse-sshfs"
    assert run({"mountType": "reverse-sshfs"}, tmp_path)["mountType"] == "reverse-sshfs"
    assert run({"vmType": "vz"}, tmp_path)["mountType"] == "virtiofs"


def test_scalar_precedence(tmp_path: Path) -> None:
    config(tmp_path, "default.yaml", "cpus: 3\nmemory: 3GiB\ndisk: 30GiB\n")
    assert run({}, tmp_path)["cpus"] == 3  # default.yaml over builtin
    out = run({"cpus": 1, "memory": "1GiB"}, tmp_path)
    assert (out["cpus"], out["memory"], out["disk"]) == (1, "1GiB", "30GiB")  # instance first
    config(tmp_path, "override.yaml", "cpus: 4\nssh: {localPort: 2222}\n")
    out = run({"cpus": 1, "ssh": {"localPort": 60022}}, tmp_path)
    assert out["cpus"] == 4 and out["ssh"]["localPort"] == 2222  # override wins


def test_list_precedence_override_instance_default(tmp_path: Path) -> None:
    config(tmp_path, "default.yaml", "provision:\n- script: d\nportForwards:\n- guestPort: 1\n")
    config(tmp_path, "override.yaml", "provision:\n- script: o\nportForwards:\n- guestPort: 3\n")
    out = run({"provision": [{"script": "y"}], "portForwards": [{"guestPort": 2}]}, tmp_path)
    assert [p["script"] for p in out["provision"]] == ["o", "y", "d"]
    assert [p["guestPortRange"][0] for p in out["portForwards"]] == [3, 2, 1]


def test_dns_is_taken_from_highest_priority_nonempty(tmp_path: Path) -> None:
    config(tmp_path, "default.yaml", "dns: [1.1.1.1]\n")
    assert run({}, tmp_path)["dns"] == ["1.1.1.1"]
    assert run({"dns": ["9.9.9.9"]}, tmp_path)["dns"] == ["9.9.9.9"]
    config(tmp_path, "override.yaml", "dns: [8.8.8.8]\n")
    assert run({"dns": ["9.9.9.9"]}, tmp_path)["dns"] == ["8.8.8.8"]


def test_maps_merge_with_override_winning(tmp_path: Path) -> None:
    config(tmp_path, "default.yaml", "env: {A: d, B: d, C: d}\nparam: {P: d}\n")
    config(tmp_path, "override.yaml", "env: {C: o}\n")
    out = run({"env": {"B": "y", "C": "y"}, "param": {"Q": "y"}}, tmp_path)
    assert out["env"] == {"A": "d", "B": "y", "C": "o"}
    assert out["param"] == {"P": "d", "Q": "y"}


def test_mounts_merge_by_mount_point_later_file_wins(tmp_path: Path) -> None:
    config(tmp_path, "default.yaml", "mounts:\n- location: '~'\n  sshfs: {cache: false}\n")
    config(tmp_path, "override.yaml", "mounts:\n- location: '~'\n  writable: true\n")
    out = run({"mounts": [{"location": "~", "writable": False}, {"location": "/tmp/x"}]}, tmp_path)
    assert [m["location"] for m in out["mounts"]] == ["/Users/alice", "/tmp/x"]
    home = out["mounts"][0]
    assert home["writable"] is True and home["sshfs"]["cache"] is False
    assert home["mountPoint"] == "/Users/alice"
    assert home["9p"] == {
        "securityModel": "none",
        "protocolVersion": "9p2000.L",
        "msize": "128KiB",
        "cache": "mmap",
    }
    assert out["mounts"][1]["9p"]["cache"] == "fscache"
    assert out["mounts"][1]["sshfs"] == {"cache": True, "followSymlinks": False}


def test_host_and_guest_templates(tmp_path: Path) -> None:
    out = run(
        {
            "param": {"PORT": "8080"},
            "mounts": [
                {"location": "{{.Home}}/src", "mountPoint": "/home/{{.User}}.guest/src"},
                {"location": "{{.Dir}}/shared"},
                {"location": "{{.GlobalTempDir}}/{{.Name}}-{{.UID}}"},
            ],
            "provision": [{"script": "#!/bin/sh\necho {{.Param.PORT}} {{.Hostname}} {{.Home}}"}],
            "probes": [{"script": "#!/bin/sh\ntest {{.UID}} = 501"}],
            "portForwards": [
                {"guestSocket": "/run/user/{{.UID}}/s.sock", "hostSocket": "{{.Name}}.sock"},
                {"guestSocket": "/x", "hostSocket": "/abs/{{.User}}.sock"},
            ],
            "copyToHost": [{"guest": "{{.Home}}/f", "host": "{{.Dir}}/f"}],
        },
        tmp_path,
    )
    inst = str(tmp_path / "dev")
    assert out["mounts"][0]["location"] == "/Users/alice/src"
    assert out["mounts"][0]["mountPoint"] == "/home/alice.guest/src"
    assert out["mounts"][1]["location"] == f"{inst}/shared"
    assert out["mounts"][2]["location"] == "/tmp/dev-501"
    assert out["provision"][0]["script"].endswith("echo 8080 lima-dev /home/alice.guest")
    assert out["probes"][0]["script"].endswith("test 501 = 501")
    assert out["probes"][0]["description"] == "user probe 1/1"
    assert out["portForwards"][0]["guestSocket"] == "/run/user/501/s.sock"
    assert out["portForwards"][0]["hostSocket"] == f"{inst}/sock/dev.sock"
    assert out["portForwards"][1]["hostSocket"] == "/abs/alice.sock"
    assert out["copyToHost"][0] == {"guest": "/home/alice.guest/f", "host": f"{inst}/f"}


def test_unsupported_template_is_kept_with_a_warning(tmp_path: Path) -> None:
    notes: list[Problem] = []
    script = "#!/bin/sh\ndocker ps --format '{{json .}}'\n"
    out = run({"provision": [{"script": script}]}, tmp_path, warnings=notes)
    assert out["provision"][0]["script"] == script
    assert any(n.path == "provision[0].script" for n in notes)


def test_provision_and_port_forward_defaults(tmp_path: Path) -> None:
    out = run(
        {
            "provision": [
                {"mode": "data", "path": "/etc/{{.User}}", "content": "x"},
                {"mode": "dependency", "script": "#!/bin/sh"},
                {"script": "#!/bin/sh"},
            ],
            "portForwards": [{"guestPort": 80, "hostPort": 8080}, {"guestIPMustBeZero": True}],
        },
        tmp_path,
    )
    data, dep, plain = out["provision"]
    assert data == {
        "mode": "data",
        "path": "/etc/alice",
        "content": "x",
        "overwrite": True,
        "owner": "root:root",
        "permissions": "644",
    }
    assert dep["skipDefaultDependencyResolution"] is False
    assert plain["mode"] == "system"
    first, second = out["portForwards"]
    assert first["guestPortRange"] == [80, 80] and first["hostPortRange"] == [8080, 8080]
    assert first["guestIP"] == first["hostIP"] == "127.0.0.1" and first["proto"] == "any"
    assert second["guestIP"] == "0.0.0.0" and second["hostPortRange"] == [1, 65535]


def test_networks_get_interface_mac_and_metric(tmp_path: Path) -> None:
    out = run({"networks": [{"lima": "shared"}, {"socket": "/s", "interface": "x"}]}, tmp_path)
    first, second = out["networks"]
    assert first["interface"] == "lima0" and first["metric"] == 100
    assert first["macAddress"].startswith("52:55:55:")
    assert second["interface"] == "x"
    assert first["macAddress"] == mac_address(f"{tmp_path / 'dev' / 'lima.yaml'}#0", "abc")


def test_top_level_cpu_type_moves_into_vm_opts(tmp_path: Path) -> None:
    data = {"cpuType": {"x86_64": "qemu64"}, "vmOpts": {"qemu": {"cpuType": {"aarch64": "max"}}}}
    out = run(data, tmp_path)
    assert out["vmOpts"]["qemu"]["cpuType"] == {"aarch64": "max", "x86_64": "qemu64"}
    assert "cpuType" not in out


def test_plain_mode_drops_mounts_and_forwards(tmp_path: Path) -> None:
    out = run({"plain": True, "mounts": [{"location": "/a"}], "portForwards": [{"guestPort": 1}]},
              tmp_path)
    assert out["mounts"] == [] and out["portForwards"] == [] and out["timezone"] == ""


def test_unknown_keys_are_kept_and_input_untouched(tmp_path: Path) -> None:
    data = {"futureField": {"x": 1}, "mounts": [{"location": "~"}]}
    out = run(data, tmp_path)
    assert out["futureField"] == {"x": 1} and list(out)[-1] == "futureField"
    assert data == {"futureField": {"x": 1}, "mounts": [{"location": "~"}]}


def test_helpers() -> None:
    assert bytes_size(4 << 30) == "4GiB"
    assert bytes_size(12_000_000_000) == "11.18GiB"
    assert hostname_of("my.box_1") == "lima-my-box-1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{.User}}", "bob"),
        ("{{ .User }}", "bob"),
        ("a {{- .User -}} b", "abobb"),
        ('{{"{{"}}.User}}', "{{.User}}"),
        ("{{/* note */}}x", "x"),
        ("{{.Param.MISSING}}", "<no value>"),
        ("{{.Nope}}", "<no value>"),
    ],
)
def test_gotemplate(text: str, expected: str) -> None:
    assert gotmpl.execute(text, {"User": "bob", "Param": {}}) == expected


@pytest.mark.parametrize(
    "text", ["{{range .X}}{{end}}", "{{.User.Name}}", "{{ .User", "{{$x := 1}}"]
)
def test_gotemplate_errors(text: str) -> None:
    with pytest.raises(gotmpl.TemplateError):
        gotmpl.execute(text, {"User": "bob", "Param": {}})
