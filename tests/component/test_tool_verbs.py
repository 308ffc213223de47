"""`limactl sudoers`, `show-ssh`, `tunnel` (what needs no guest) and `template` through the
real CLI entry point, with Lima 2.2.0's templates read in place beside the project."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lima.commands.showssh import format_options
from lima.commands.tunnel import tunnel_argv
from tests.component.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
LIMA_TEMPLATES = ROOT.parent / "shared" / "lima-templates-v2.2.0"
needs_lima_templates = pytest.mark.skipif(not LIMA_TEMPLATES.is_dir(),
                                          reason="Lima's v2.2.0 templates are not beside")

Capsys = pytest.CaptureFixture[str]


def _instance(home: Path, name: str = "vm", port: int | None = 60022) -> Path:
    inst = home / name
    inst.mkdir()
    (inst / "lima.yaml").write_text((ROOT / "examples" / "tiny.yaml").read_text())
    if port:
        (inst / "ssh.config").write_text(f"Host lima-{name}\n  Hostname 127.0.0.1\n"
                                         f"  Port {port}\n")
    return inst


# -- sudoers ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["--check"], ["--check", "/etc/sudoers.d/lima"]])
def test_sudoers_is_macos_only_as_in_lima(args: list[str], capsys: Capsys) -> None:
    code, out, err = run_cli(["sudoers", *args], capsys)
    assert (code, out) == (1, "")
    assert err == "limactl: sudoers command is only supported on macOS right now\n"


# -- show-ssh -----------------------------------------------------------------------------


def test_show_ssh_formats(_isolated_home: Path, capsys: Capsys,
                          caplog: pytest.LogCaptureFixture) -> None:
    inst = _instance(_isolated_home)
    code, out, err = run_cli(["show-ssh", "vm"], capsys)
    assert code == 0, err
    assert (f"`limactl show-ssh` is deprecated. Instead, use `ssh -F {inst}/ssh.config "
            "lima-vm`.") in caplog.text
    key = _isolated_home / "_config" / "user"
    assert out.startswith(f"ssh -o 'IdentityFile=\"{key}\"' -o StrictHostKeyChecking=no ")
    assert out.endswith(" -o User=lima -o ControlMaster=auto "
                        f"-o 'ControlPath=\"{inst}/ssh.sock\"' -o ControlPersist=yes "
                        "-o Hostname=127.0.0.1 -o Port=60022 lima-vm\n")
    code, args_out, _ = run_cli(["show-ssh", "--format=args", "vm"], capsys)
    assert args_out == out[len("ssh "):-len(" lima-vm\n")] + "\n"
    code, options, _ = run_cli(["show-ssh", "-f", "options", "vm"], capsys)
    lines = options.splitlines()
    assert lines[0] == f'IdentityFile="{key}"' and lines[-2:] == ["Hostname=127.0.0.1",
                                                                  "Port=60022"]
    code, config, _ = run_cli(["show-ssh", "--format", "config", "vm"], capsys)
    assert config.splitlines()[0] == "Host lima-vm"
    assert config.splitlines()[1:] == [f"  {o.replace('=', ' ', 1)}" for o in lines]
    assert not key.exists()  # showing the command generates no key


def test_show_ssh_errors(_isolated_home: Path, capsys: Capsys) -> None:
    _instance(_isolated_home)
    code, out, err = run_cli(["show-ssh", "--format", "json", "vm"], capsys)
    assert (code, out) == (1, "")
    assert err.endswith("limactl: unknown format: `json`\n")
    code, _, err = run_cli(["show-ssh", "nope"], capsys)
    assert code == 1
    assert err == ("limactl: instance `nope` does not exist, run `limactl create nope` to "
                   "create a new instance\n")


def test_format_options_quoting_and_line_breaks() -> None:
    opts = ['IdentityFile="/a b/user"', "User=me", "Port=22"]
    assert format_options("cmd", "lima-x", opts) == (
        "ssh -o 'IdentityFile=\"/a b/user\"' -o User=me -o Port=22 lima-x\n")
    with pytest.raises(Exception, match="contains a line break"):
        format_options("options", "lima-x", ["User=me\nProxyCommand=evil"])


# -- tunnel (the guest part is tests/integration/test_tool_verbs_tiny.py) -----------------


def test_tunnel_refusals(_isolated_home: Path, capsys: Capsys,
                         caplog: pytest.LogCaptureFixture) -> None:
    _instance(_isolated_home)
    code, _, err = run_cli(["tunnel", "nope"], capsys)
    assert code == 1 and "instance `nope` does not exist, run `limactl create nope`" in err
    code, _, err = run_cli(["tunnel", "vm"], capsys)
    assert code == 1
    assert "`limactl tunnel` is experimental" in caplog.text
    assert err.endswith("limactl: instance `vm` is stopped, run `limactl start vm` to start "
                        "the instance\n")
    code, _, err = run_cli(["tunnel", "--type", "l2tp", "vm"], capsys)
    assert code == 1 and err.endswith("limactl: unknown tunnel type: `l2tp`\n")
    for port in ("80", "70000"):
        code, _, err = run_cli(["tunnel", "--socks-port", port, "vm"], capsys)
        assert code == 1 and err.endswith(f"limactl: invalid socks port {port}\n")


def test_tunnel_argv_is_limas() -> None:
    argv = tunnel_argv(["User=me", "ControlMaster=auto"], 1080, 60022)
    assert argv == ["ssh", "-F", "/dev/null", "-o", "User=me", "-o", "ControlMaster=auto",
                    "-q", "-f", "-N", "-D", "127.0.0.1:1080", "-p", "60022", "127.0.0.1"]


# -- template -----------------------------------------------------------------------------


@pytest.fixture
def lima_templates(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not LIMA_TEMPLATES.is_dir():
        pytest.skip("Lima's v2.2.0 templates are not beside the project")
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(LIMA_TEMPLATES))
    return LIMA_TEMPLATES


@pytest.fixture
def local_template(tmp_path: Path) -> Path:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "base.yaml").write_text("cpus: 3\nprovision:\n- mode: system\n  script: echo b\n")
    (sub / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    vm = sub / "vm.yaml"
    vm.write_text("# my vm\nbase:\n- base.yaml   # local base\n"
                  "- {url: \"template:_default/mounts\"}\n"
                  "provision:\n- mode: user\n  file: hello.sh\nmemory: 1GiB\n")
    return vm


def test_template_copy_makes_locators_absolute_and_keeps_the_rest(
        lima_templates: Path, local_template: Path, capsys: Capsys) -> None:
    code, out, err = run_cli(["template", "copy", str(local_template)], capsys)
    assert code == 0, err
    sub = local_template.parent
    assert out == (f'# my vm\nbase:\n- "{sub}/base.yaml"   # local base\n'
                   "- {url: \"template:_default/mounts\"}\n"
                   f'provision:\n- mode: user\n  file: "{sub}/hello.sh"\nmemory: 1GiB\n')
    code, out, _ = run_cli(["tmpl", "copy", "--verbatim", str(local_template), "-"], capsys)
    assert out == local_template.read_text()


def test_template_copy_embed_keeps_template_bases(
        lima_templates: Path, local_template: Path, capsys: Capsys) -> None:
    import yaml

    code, out, err = run_cli(["template", "copy", "--embed", str(local_template)], capsys)
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert doc["base"] == ["template:_default/mounts"]
    assert doc["cpus"] == 3 and doc["memory"] == "1GiB"
    assert [p["script"] for p in doc["provision"]] == ["echo b", "#!/bin/sh\necho hello\n"]
    code, out, err = run_cli(["template", "copy", "--embed-all", str(local_template)], capsys)
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert "base" not in doc and doc["mounts"][0]["location"] == "~"


def test_template_copy_embed_refuses_a_file_base_after_a_template(
        lima_templates: Path, tmp_path: Path, capsys: Capsys) -> None:
    (tmp_path / "b.yaml").write_text("cpus: 2\n")
    vm = tmp_path / "vm.yaml"
    vm.write_text("base:\n- template:_default/mounts\n- b.yaml\n")
    code, _, err = run_cli(["template", "copy", "--embed", str(vm)], capsys)
    assert code == 1
    assert f"cannot embed template '{tmp_path}/b.yaml' after not embedding " \
           "'template:_default/mounts'" in err


@needs_lima_templates
def test_template_copy_of_limas_templates(lima_templates: Path, tmp_path: Path,
                                          capsys: Capsys) -> None:
    import yaml

    original = (lima_templates / "debian-12.yaml").read_text()
    code, out, _ = run_cli(["template", "copy", "--verbatim", "template:debian-12"], capsys)
    assert (code, out) == (0, original)
    code, out, _ = run_cli(["template", "copy", "template:debian-12"], capsys)
    assert out == original  # template: locators are absolute already
    code, out, err = run_cli(["template", "copy", "--fill", "template:debian-12"], capsys)
    assert code == 0, err
    filled = yaml.safe_load(out)
    assert filled["vmType"] == "qemu" and filled["images"][0]["location"].startswith("https://")
    assert "base" not in filled and filled["cpus"] >= 1
    dest = tmp_path / "copy.yaml"
    code, out, _ = run_cli(["template", "copy", "template:debian-12", str(dest)], capsys)
    assert (code, out) == (0, "")
    assert dest.read_text() == original
    assert stat.S_IMODE(dest.stat().st_mode) & 0o644 == 0o644
    code, _, err = run_cli(["template", "copy", "--fill", "--verbatim", "template:debian-12"],
                           capsys)
    assert code == 1
    assert "--verbatim cannot be used with any of --embed, --embed-all, or --fill" in err


def test_template_copy_from_stdin_with_relative_base(
        lima_templates: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"base: b.yaml\n")))
    code, _, err = run_cli(["template", "copy", "-"], capsys)
    assert code == 1
    assert "can't use relative paths when reading template from STDIN" in err


@needs_lima_templates
def test_template_validate_url_and_yq(lima_templates: Path, capsys: Capsys,
                                     caplog: pytest.LogCaptureFixture) -> None:
    import yaml

    code, out, err = run_cli(["template", "validate", "template:debian-12"], capsys)
    assert (code, out) == (0, "template:debian-12: OK\n"), err
    code, out, _ = run_cli(["template", "validate", "--fill", "template:debian-12"], capsys)
    assert yaml.safe_load(out)["vmType"] == "qemu"
    code, out, err = run_cli(["template", "validate", "template:nonexistent"], capsys)
    assert code == 1 and "nonexistent" in err

    code, out, err = run_cli(["template", "url", "template://debian-12"], capsys)
    assert (code, out) == (0, "template:debian-12\n")
    assert "should be written `template:debian-12` since Lima v2.0" in caplog.text
    for same in ("template:debian-12", "https://example.com/x.yaml", "./x.yaml"):
        code, out, _ = run_cli(["template", "url", same], capsys)
        assert (code, out) == (0, same + "\n")
    code, out, err = run_cli(["template", "url", "github:lima-vm/lima"], capsys)
    assert code == 1 and "github: template URLs are not supported" in err

    code, out, err = run_cli(["template", "yq", "template:debian-12", ".images[].location"],
                             capsys)
    assert code == 0, err
    locations = out.splitlines()
    assert len(locations) == 12 and all(x.startswith("https://cloud.debian.org/") for x in
                                        locations)
    code, out, _ = run_cli(["template", "yq", "template:debian-12", ".vmType, .images[0]"],
                           capsys)
    first = out.split("\n", 1)
    assert first[0] == "qemu" and yaml.safe_load(first[1])["arch"] == "x86_64"
    code, out, err = run_cli(["template", "yq", "template:debian-12", ".images[[["], capsys)
    assert code == 1 and "yq expression" in err
