"""The host agent's after-boot steps that need no guest: probe commands, output tails,
deleteOnStop, ansible without ansible-playbook, and lima.yaml's message rendered the
way Lima renders it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lima.drivers import message, postboot
from lima.gotmpl import TemplateError
from tests.unit.cidata_fixtures import Provision, make_spec


def test_probe_command_sets_params_and_runs_the_script_by_its_shebang() -> None:
    cmd = postboot.script_command({"B": "it's", "A": "x y"})
    assert "env PARAM_A='x y' PARAM_B='it'\"'\"'s' \"$f\"" in cmd
    assert cmd.startswith('f=$(mktemp) && cat >"$f" && chmod 700 "$f"')
    assert cmd.endswith("exit $rc")
    assert 'env "$f"' in postboot.script_command({})


def test_output_tail() -> None:
    text = "one\n\n two \nthree\n" + "x" * 300 + "\n"
    assert postboot.output_tail(text, 3) == "two | three | " + "x" * 160
    assert postboot.output_tail("") == ""


def test_delete_on_stop_removes_only_flagged_copies(tmp_path: Path) -> None:
    keep, gone = tmp_path / "keep", tmp_path / "sub" / "gone"
    gone.parent.mkdir()
    keep.write_text("k")
    gone.write_text("g")
    spec = make_spec(raw={"copyToHost": [
        {"guest": "/a", "host": str(keep)},
        {"guest": "/b", "host": str(gone), "deleteOnStop": True},
        {"guest": "/c", "host": str(tmp_path / "never-copied"), "deleteOnStop": True},
    ]})
    assert postboot.delete_on_stop(spec) == []
    assert keep.exists() and not gone.exists()


def test_ansible_without_ansible_playbook_is_an_error_naming_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    spec = make_spec(provision=(Provision(mode="system", script="true"),
                                Provision(mode="ansible", playbook="site.yml")))
    assert postboot.run_ansible(spec, tmp_path) == [
        'provision[1] (mode: ansible) "site.yml": not run: ansible-playbook is not installed '
        "on the host (Debian package ansible-core)"]
    assert postboot.run_ansible(make_spec(), tmp_path) == []


RECORD = {
    "name": "k3s", "hostname": "lima-k3s", "status": "Running", "dir": "/lh/k3s",
    "vmType": "qemu", "arch": "x86_64", "cpus": 4, "sshLocalPort": 60022,
    "config": {"param": {"url": ""}, "vmOpts": {"vz": {"rosetta": {"enabled": False}}},
               "cpus": 4, "user": {"name": "lima", "uid": 1000}},
}


def test_message_uses_limas_format_data() -> None:
    text = message.render(
        "kubeconfig: {{.Dir}}/copied-from-guest/kubeconfig.yaml ({{.Name}}, {{.Hostname}}, "
        "{{.Status}}, port {{.SSHLocalPort}}, {{.Instance.Config.CPUs}} cpus, "
        "uid {{.Config.User.UID}})\n", RECORD)
    assert text == ("kubeconfig: /lh/k3s/copied-from-guest/kubeconfig.yaml (k3s, lima-k3s, "
                    "Running, port 60022, 4 cpus, uid 1000)\n")


def test_message_conditions_as_in_limas_templates() -> None:
    # k3s.yaml and docker.yaml of Lima: `if not (and .Param.url .Param.token)`, VMOpts map.
    tmpl = ("{{- if not ( and .Param.url .Param.token ) -}}local{{- else -}}remote{{- end }}"
            "{{- if .Instance.Config.VMOpts.vz.rosetta.enabled}} rosetta{{- end}}")
    assert message.render(tmpl, RECORD) == "local"
    assert message.render("", RECORD) == ""


def test_message_that_is_not_a_template_is_refused_in_limas_words() -> None:
    with pytest.raises(TemplateError, match="is not a valid template"):
        message.render("{{if .Name}}unclosed", RECORD)
