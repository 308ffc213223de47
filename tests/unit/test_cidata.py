"""cidata.iso: layout, Rock Ridge names and modes, provision scripts, name limits."""

from __future__ import annotations

import stat
from pathlib import Path

import pycdlib
import pytest
import yaml

from lima import paths
from lima.drivers import cidata
from lima.drivers.identity import ensure_identity
from lima.errors import SpecError
from tests.unit.cidata_fixtures import Provision, make_spec, read_iso

PROVISIONS = (
    Provision(mode="system", script="#!/bin/sh\necho system {{.Param.GREETING}}\n"),
    Provision(mode="user", script="#!/bin/sh\necho user\n"),
    Provision(mode="boot", script="echo boot\n"),
    Provision(mode="dependency", script="echo dep\n"),
    Provision(mode="data", path="/etc/{{.Param.GREETING}}.conf", content="v={{.Param.GREETING}}\n"),
    Provision(mode="ansible", playbook="site.yml"),
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _build(tmp_path: Path, **spec_kw: object) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    spec = make_spec(**spec_kw)
    inst = tmp_path / "inst"
    iso = cidata.build_cidata(spec, inst, iid="iid-42", identity=ensure_identity(), host_env={})
    return iso, read_iso(iso)


def test_iso_layout_and_contents(tmp_path: Path) -> None:
    iso_path, files = _build(
        tmp_path, provision=PROVISIONS, param={"GREETING": "hello"}, env={"A": "1"}
    )
    assert iso_path == tmp_path / "inst" / paths.CIDATA_ISO
    for name in (
        "user-data",
        "meta-data",
        "network-config",
        "lima.env",
        "param.env",
        "etc_environment",
        "boot.sh",
        "boot/10-hostname.sh",
    ):
        assert name in files, name
    ud = yaml.safe_load(files["user-data"][0])
    assert ud["users"][0]["ssh_authorized_keys"] == [ensure_identity().public_key]
    # The boot's IID is lima.env's; meta-data's instance-id is cloud-init's own.
    assert b"LIMA_CIDATA_IID=iid-42\n" in files["lima.env"][0]
    assert yaml.safe_load(files["meta-data"][0])["instance-id"].startswith("iid-seed-")
    assert files["param.env"][0] == b"PARAM_GREETING=hello\n"
    assert b"\nA=1\n" in files["etc_environment"][0]
    assert files["boot.sh"][0] == (cidata.ASSETS / "boot.sh").read_bytes()


def test_volume_label_and_rock_ridge(tmp_path: Path) -> None:
    iso_path, files = _build(tmp_path)
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        # Plain ISO9660 names are mangled; the real names come from Rock Ridge.
        names = {c.file_identifier().decode() for c in iso.list_children(iso_path="/")}
        assert "USER_DATA.;1" in names
    finally:
        iso.close()
    assert stat.S_IMODE(files["boot.sh"][1]) == 0o755
    assert stat.S_IMODE(files["user-data"][1]) == 0o644


def test_provision_scripts_in_their_dirs_with_params(tmp_path: Path) -> None:
    _, files = _build(tmp_path, provision=PROVISIONS, param={"GREETING": "hello"})
    assert files["provision.system/00000000"][0] == b"#!/bin/sh\necho system hello\n"
    assert stat.S_IMODE(files["provision.system/00000000"][1]) == 0o755
    assert files["provision.user/00000001"][0] == b"#!/bin/sh\necho user\n"
    assert files["boot/50-provision-00000002"][0] == b"echo boot\n"
    assert files["provision.dependency/00000003"][0] == b"echo dep\n"
    assert files["provision.data/00000004"][0] == b"v=hello\n"
    writer = files["provision.data/00000004.sh"][0].decode()
    assert "dest=/etc/hello.conf" in writer
    assert not any("00000005" in name for name in files)  # ansible runs from the host


def test_cloud_config_reference_copy(tmp_path: Path) -> None:
    _build(tmp_path)
    ref = tmp_path / "inst" / paths.CLOUD_CONFIG
    doc = yaml.safe_load(ref.read_text())
    assert doc["users"][0]["name"] == "alice"
    assert "bootcmd" not in doc


def test_cloud_init_id_follows_what_cloud_init_reads_not_the_boot(tmp_path: Path) -> None:
    """A new boot of the same spec: a new IID in lima.env, the same instance-id in
    meta-data (cloud-init's once-per-instance modules do not run again). A change to what
    cloud-init is given (user-data, network-config, hostname) gives another instance-id;
    one to what only boot.sh reads (a provision script) does not."""
    identity = ensure_identity()

    def meta(iid: str, **spec_kw: object) -> tuple[str, bytes]:
        iso = cidata.build_cidata(make_spec(**spec_kw), tmp_path / iid, iid=iid,
                                  identity=identity, host_env={})
        files = read_iso(iso)
        return (yaml.safe_load(files["meta-data"][0])["instance-id"], files["lima.env"][0])

    first, env1 = meta("iid-1")
    again, env2 = meta("iid-2")
    assert first == again and env1 != env2
    assert b"LIMA_CIDATA_IID=iid-2\n" in env2
    assert meta("iid-3", provision=PROVISIONS, param={"GREETING": "hi"})[0] == first
    changed = {meta("iid-4", name="other")[0], meta("iid-5", timezone="Asia/Tokyo")[0],
               meta("iid-6", dns=["10.0.2.9"])[0]}
    assert first not in changed and len(changed) == 3


def test_rebuild_replaces_iso(tmp_path: Path) -> None:
    _build(tmp_path)
    spec = make_spec()
    iso = cidata.build_cidata(
        spec, tmp_path / "inst", iid="iid-43", identity=ensure_identity(), host_env={}
    )
    assert b"LIMA_CIDATA_IID=iid-43\n" in read_iso(iso)["lima.env"][0]
    assert [p.name for p in (tmp_path / "inst").iterdir() if p.name.startswith(".")] == []


def test_too_long_name_fails_clearly(tmp_path: Path) -> None:
    long = "x" * 31
    with pytest.raises(SpecError, match=f"{long}.*at most 30"):
        cidata.write_iso([cidata.SeedFile(f"boot/{long}", b"")], tmp_path / "c.iso")
    assert not (tmp_path / "c.iso").exists()
    cidata.write_iso([cidata.SeedFile("boot/" + "y" * 30, b"ok")], tmp_path / "ok.iso")
    assert read_iso(tmp_path / "ok.iso")["boot/" + "y" * 30][0] == b"ok"


def test_colliding_iso_names_stay_distinct(tmp_path: Path) -> None:
    files = [
        cidata.SeedFile("a-b", b"1"),
        cidata.SeedFile("a_b", b"2"),
        cidata.SeedFile("A-B", b"3"),
    ]
    cidata.write_iso(files, tmp_path / "c.iso")
    back = read_iso(tmp_path / "c.iso")
    assert {k: v[0] for k, v in back.items()} == {"a-b": b"1", "a_b": b"2", "A-B": b"3"}


def test_unknown_param_in_script_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="NOPE"):
        _build(tmp_path, provision=(Provision(mode="system", script="{{.Param.NOPE}}"),))


def test_parse_boot_failed() -> None:
    assert cidata.parse_boot_failed("iid-1\n/x/a: exit 2\n") == ("iid-1", ["/x/a: exit 2"])
    assert cidata.parse_boot_failed("") == ("", [])
