"""lima.editflags: Lima's edit flags as the yq expressions Lima generates (the strings of
Lima's editflags_test.go where it has them), Lima's value parsing and errors, and what
evaluating them does to a document."""

from __future__ import annotations

import logging
import os
from typing import Any

import click
import pytest
from click.testing import CliRunner

from lima import editflags
from lima.editflags import EditValues, apply_expressions, expressions, flag_expressions
from lima.errors import LimaError, Problem, SpecError

pytestmark = pytest.mark.unit


def exprs(new_instance: bool = True, params: dict[str, Any] | None = None,
          **values: Any) -> list[str]:
    given = {k.replace("_", "-"): v for k, v in values.items()}
    return expressions(EditValues(given), new_instance=new_instance,
                       params=params if params is not None else {"version": ""})


def expand(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


# -- Lima's editflags_test.go ------------------------------------------------------------


def test_mount_reverses_and_prepends() -> None:
    bar, foo = expand("./bar"), expand("/foo")
    assert exprs(False, mount=("/foo", "./bar:w")) == [
        f'.mounts = [{{"location": "{bar}", "mountPoint": "{bar}", "writable": true}},'
        f'{{"location": "{foo}", "mountPoint": "{foo}", "writable": false}}] + .mounts']


def test_mount_only_keeps_order() -> None:
    assert exprs(False, mount_only=("/foo", "/bar:w")) == [
        '.mounts = [{"location": "/foo", "mountPoint": "/foo", "writable": false},'
        '{"location": "/bar", "mountPoint": "/bar", "writable": true}]']


def test_mount_conflicts_with_mount_only() -> None:
    with pytest.raises(LimaError, match="flag `--mount` conflicts with `--mount-only`"):
        exprs(False, mount=("/foo",), mount_only=("/bar:w",))


def test_dns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        out = exprs(False, dns=("8.8.8.8", "8.8.4.4", "1.1.1.1"))
    assert out == ['.dns += ["8.8.8.8","8.8.4.4","1.1.1.1"] | .dns |= unique | '
                   '.hostResolver.enabled=false']
    assert "Disabling HostResolver, as custom DNS addresses ([8.8.8.8 8.8.4.4 1.1.1.1])" \
        in caplog.text


def test_nested_virt_and_param() -> None:
    assert exprs(False, nested_virt=True) == [".nestedVirtualization = true"]
    assert exprs(False, param=("version=v1.35",)) == ['.param["version"] = "v1.35"']
    assert exprs(param=("version=a=b",)) == ['.param["version"] = "a=b"']


@pytest.mark.parametrize("param, error", [
    ("missing=value", "error while processing flag `param`: template does not define param "
                      "`missing`"),
    ("version", "invalid parameter `version`, expected NAME=VALUE"),
])
def test_bad_param(param: str, error: str) -> None:
    with pytest.raises(LimaError) as info:
        exprs(False, param=(param,))
    assert error in str(info.value)


def test_invalid_network_name_is_limas_error() -> None:
    with pytest.raises(LimaError, match="network name must be `vzNAT` or `lima:\\*`, got "
                                        "`invalid`"):
        exprs(network=("invalid",))


@pytest.mark.parametrize("nets", [("vzNAT",), ("lima:shared",), ("vzNAT", "lima:bridged")])
def test_networks_limapy_cannot_make_are_refused(nets: tuple[str, ...]) -> None:
    with pytest.raises(LimaError, match=r"error while processing flag `network`: .*not "
                                        r"supported"):
        exprs(network=nets)


@pytest.mark.parametrize("specs, expected", [
    (["8080:80"], '.portForwards += [{"guestPort": "80", "hostPort": "8080", "static": false}]'),
    (["8080:80,static=true"],
     '.portForwards += [{"guestPort": "80", "hostPort": "8080", "static": true}]'),
    (["8080:80", "2222:22,static=true", "3000:3000"],
     '.portForwards += [{"guestPort": "80", "hostPort": "8080", "static": false},'
     '{"guestPort": "22", "hostPort": "2222", "static": true},'
     '{"guestPort": "3000", "hostPort": "3000", "static": false}]'),
    ([" 8080 : 80 , static=true "],
     '.portForwards += [{"guestPort": "80", "hostPort": "8080", "static": true}]'),
])
def test_port_forward_expression(specs: list[str], expected: str) -> None:
    expr = editflags.port_forward_expression(specs)
    assert expr is not None and expr.text == expected
    assert editflags.port_forward_expression([]) is None


@pytest.mark.parametrize("spec", ["8080", "8080:80:extra", "8080:80,invalid=true",
                                  "8080:80,static=true,extra=value", "8080:80,static=maybe"])
def test_bad_port_forward(spec: str) -> None:
    with pytest.raises(ValueError):
        editflags.parse_port_forward(spec)
    with pytest.raises(LimaError, match="error while processing flag `port-forward`"):
        exprs(port_forward=(spec,))


def test_parse_port_forward() -> None:
    assert editflags.parse_port_forward("8080:80") == ("8080", "80", False)
    assert editflags.parse_port_forward(" 8080 : 80 , static=true ") == ("8080", "80", True)


# -- the other flags -----------------------------------------------------------------------


def test_every_flag_in_limas_order() -> None:
    out = exprs(shell="/bin/zsh", plain=True, disk="50", containerd="user", arch="aarch64",
                ssh_port="2222", video=True, set=(".a = 1", ".b = 2"), mount_type="9p",
                memory="2", cpus="4", vm_type="qemu", mount_writable=True, mount_inotify=True,
                image_variant="v", arch_variant="v3", audio_device="none",
                audio_interface="hda", rosetta=False, mount_none=True)
    assert out == [
        ".cpus = 4", '.memory = "2GiB"', ".mounts = null", '.mountType = "9p"',
        '.vmType = "qemu"', ".mountInotify = true", ".mounts[].writable = true",
        ".vmOpts.vz.rosetta.enabled = false | .vmOpts.vz.rosetta.binfmt = false",
        ".a = 1", ".b = 2", '.video.display = "default"', '.audio.device = "none"',
        '.audio.interface = "hda"', ".ssh.localPort = 2222",
        '.images = [.images[] | select(.variant == "v")]',
        '.images = [.images[] | select(.archVariant == "v3")]', '.arch = "aarch64"',
        ".containerd.user = true | .containerd.system = false", '.disk= "50GiB"',
        ".plain = true", '.user.shell = "/bin/zsh"']


@pytest.mark.parametrize("flag, value, error", [
    ("cpus", "x", 'invalid argument "x" for "--cpus" flag: strconv.ParseInt: parsing "x": '
                  "invalid syntax"),
    ("cpus", "-1", "error while processing flag `cpus`: invalid value for number of cpus, "
                   "must be >= 0"),
    ("memory", "abc", 'invalid argument "abc" for "--memory" flag: strconv.ParseFloat: '
                      'parsing "abc": invalid syntax'),
    ("ssh-port", "70000", 'invalid argument "70000" for "--ssh-port" flag: '
                          'strconv.ParseUint: parsing "70000": value out of range'),
    ("dns", ("1.2.3",), 'invalid argument "1.2.3" for "--dns" flag: invalid string being '
                        "converted to IP address: 1.2.3"),
    ("containerd", "both", "expected one of [`user`, `system`, `user+system`, `none`], got "
                           "`both`"),
    ("image-variant", "", "`--image-variant` must not be empty"),
    ("mount", ("~foo/x",), "error while processing flag `mount`: unexpandable path `~foo/x`"),
    ("mount-none", True, "flag `--mount-none` conflicts with `mount`"),
    ("vm-type", "vz", "error while processing flag `vm-type`: limapy runs QEMU only"),
    ("rosetta", True, "error while processing flag `rosetta`: Rosetta needs vmType vz"),
])
def test_bad_values_in_limas_words(flag: str, value: Any, error: str) -> None:
    given: dict[str, Any] = {flag: value}
    if flag == "mount-none":
        given["mount"] = ("/x",)
    with pytest.raises(LimaError) as info:
        expressions(EditValues(given))
    assert error in str(info.value)


@pytest.mark.parametrize("text, shown", [("2", "2"), ("1.5", "1.5"), ("0.1", "0.1"),
                                         ("1000000", "1e+06"), ("0x1p-2", "0.25")])
def test_memory_is_printed_as_pflag_prints_a_float32(text: str, shown: str) -> None:
    assert exprs(memory=text) == [f'.memory = "{shown}GiB"']


def test_cpus_takes_go_integer_literals() -> None:
    assert exprs(cpus="0x4") == [".cpus = 4"]
    assert exprs(cpus="010") == [".cpus = 8"]


def test_containerd_modes() -> None:
    assert exprs(containerd="none") == [".containerd.user = false | .containerd.system = false"]
    assert exprs(containerd="system+user") == [
        ".containerd.user = true | .containerd.system = true"]


def test_new_instance_flags_are_skipped_on_an_existing_one(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        out = exprs(False, arch="aarch64", plain=True, cpus="2")
    assert out == [".cpus = 2"]
    assert ("`--arch` is not applicable to an existing instance (Hint: create a new instance "
            "with `limactl create --arch=aarch64 --name=NAME`)") in caplog.text


def test_experimental_flags_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        exprs(mount_inotify=True)
    assert "`--mount-inotify` is experimental" in caplog.text


# -- evaluation ----------------------------------------------------------------------------


def run(data: dict[str, Any], **values: Any) -> dict[str, Any]:
    given = {k.replace("_", "-"): v for k, v in values.items()}
    found = flag_expressions(EditValues(given), new_instance=True, params={"v": ""})
    out, _ = apply_expressions(found, data)
    return out


def test_evaluation_keeps_yqs_order_for_unique() -> None:
    out = run({"dns": ["9.9.9.9"]}, dns=("8.8.8.8", "1.1.1.1", "9.9.9.9"))
    assert out == {"dns": ["9.9.9.9", "8.8.8.8", "1.1.1.1"], "hostResolver": {"enabled": False}}


def test_mount_writable_without_mounts_is_a_no_op_as_in_yq() -> None:
    assert run({"cpus": 1}, mount_writable=True) == {"cpus": 1}
    assert run({"mounts": [{"location": "/a"}]}, mount_writable=True) == {
        "mounts": [{"location": "/a", "writable": True}]}


def test_port_forward_ports_become_numbers() -> None:
    assert run({}, port_forward=("8080:80,static=true",)) == {
        "portForwards": [{"guestPort": 80, "hostPort": 8080, "static": True}]}


def test_image_variant_selects() -> None:
    data = {"images": [{"location": "a", "variant": "x"}, {"location": "b"}]}
    assert run(data, image_variant="x") == {"images": [{"location": "a", "variant": "x"}]}


def test_a_bad_set_expression_names_the_flag() -> None:
    with pytest.raises(LimaError, match="error while processing flag `set`"):
        run({}, set=(".cpus = ",))


def test_changed_paths_and_annotation() -> None:
    old = {"cpus": 1, "mounts": [{"a": 1}], "ssh": {"localPort": 0, "x": 1}}
    new = {"cpus": 2, "mounts": [{"a": 1}, {"b": 2}], "ssh": {"localPort": 22, "x": 1}}
    assert editflags.changed_paths(old, new) == [("cpus",), ("mounts",), ("ssh", "localPort")]
    err = SpecError([Problem("f.yaml", 3, "ssh.localPort", "bad"),
                     Problem("f.yaml", 1, "memory", "bad too")])
    out = editflags.annotate(err, {("ssh", "localPort"): "ssh-port"})
    assert [p.message for p in out.problems] == ["bad too", "bad (set by --ssh-port)"]


# -- the click side ------------------------------------------------------------------------


@click.command(cls=editflags.EditCommand)
@click.argument("target", required=False)
@editflags.edit_options(create=True)
def probe(target: str | None, edit_flags: EditValues) -> None:
    click.echo(repr(sorted(edit_flags.values.items())))


@pytest.mark.parametrize("args, shown", [
    (["--video", "x"], "[('video', True)]"),
    (["--video=false", "x"], "[('video', False)]"),
    (["--plain=T", "--video=0"], "[('plain', True), ('video', False)]"),
    (["--cpus=2", "--mount", "/a", "--mount", "/b"], "[('cpus', '2'), ('mount', ('/a', '/b'))]"),
    ([], "[]"),
])
def test_options_report_only_what_was_given(args: list[str], shown: str) -> None:
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == shown


def test_edit_only_options_lack_the_create_ones() -> None:
    @click.command(cls=editflags.EditCommand)
    @editflags.edit_options(create=False)
    def edit_probe(edit_flags: EditValues) -> None:
        click.echo("ran")

    names = {p.name for p in edit_probe.params}
    assert "edit_cpus" in names and "edit_set" in names
    assert not names & {"edit_arch", "edit_plain", "edit_port_forward", "edit_containerd"}
    assert CliRunner().invoke(edit_probe, ["--arch", "x86_64"]).exit_code != 0


def test_bad_bool_value_is_pflags_error() -> None:
    result = CliRunner().invoke(probe, ["--video=maybe"])
    assert isinstance(result.exception, LimaError)
    assert str(result.exception) == ('invalid argument "maybe" for "--video" flag: '
                                     'strconv.ParseBool: parsing "maybe": invalid syntax')
