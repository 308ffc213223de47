"""lima.yaml's `message`, rendered as Lima renders it: a Go template over the instance.

Called by `limactl list` (lima.commands.listing.instance_record puts the rendered text
under Lima's key `message`) and by apply/start, which print it once the instance runs
(lima.commands.lifecycle). The data is Lima's FormatData: the instance's fields under
their Go names (`{{.Name}}`, `{{.Dir}}`, `{{.Hostname}}`, `{{.SSHLocalPort}}`,
`{{.Status}}`, `{{.Param.KEY}}`, `{{.Config...}}`, also reachable as `{{.Instance.X}}`)
plus `{{.HostOS}}`, `{{.HostArch}}`, `{{.LimaHome}}` and `{{.IdentityFile}}`. Fields Lima
does not offer there (`{{.User}}`, `{{.Home}}`) print `<no value>`, where Lima refuses
the template.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

from lima import paths
from lima.gotmpl import TemplateError, execute
from lima.schemas.arch import host_arch

# The instance record's keys (Lima's JSON names) -> the Go field names templates use.
_INSTANCE_FIELDS = {
    "name": "Name", "hostname": "Hostname", "status": "Status", "dir": "Dir",
    "vmType": "VMType", "arch": "Arch", "cpus": "CPUs", "memory": "Memory", "disk": "Disk",
    "sshLocalPort": "SSHLocalPort", "sshConfigFile": "SSHConfigFile",
    "sshAddress": "SSHAddress", "hostAgentPID": "HostAgentPID", "driverPID": "DriverPID",
    "errors": "Errors", "protected": "Protected", "limaVersion": "LimaVersion",
}
# lima.yaml keys whose Go field name is not the key with its first letter upper-cased.
_GO_NAMES = {
    "cpus": "CPUs", "vmType": "VMType", "vmOpts": "VMOpts", "ssh": "SSH", "dns": "DNS",
    "os": "OS", "cpuType": "CPUType", "uid": "UID", "caCerts": "CACertificates",
    "guestIP": "GuestIP", "hostIP": "HostIP", "guestIPMustBeZero": "GuestIPMustBeZero",
    "9p": "NineP", "vnc": "VNC", "legacyBIOS": "LegacyBIOS",
}
# Maps in Lima's types: their keys stay as written.
_MAPS = frozenset({"vmOpts", "param", "env", "cpuType", "additionalArchives"})


def go_names(value: Any, key: str = "") -> Any:
    """A lima.yaml value with its struct keys under Go's field names (maps keep theirs)."""
    if isinstance(value, list):
        return [go_names(v, key) for v in value]
    if not isinstance(value, dict) or key in _MAPS:
        return value
    return {_GO_NAMES.get(k, k[:1].upper() + k[1:]): go_names(v, k) for k, v in value.items()}


def format_data(record: Mapping[str, Any]) -> dict[str, Any]:
    """Lima's FormatData for one `list --format json` record."""
    instance: dict[str, Any] = {go: record.get(key) for key, go in _INSTANCE_FIELDS.items()
                                if key in record}
    config = record.get("config")
    instance["Config"] = go_names(config) if isinstance(config, dict) else {}
    param = config.get("param") if isinstance(config, dict) else None
    instance["Param"] = dict(param) if isinstance(param, dict) else {}
    return {**instance, "Instance": dict(instance), "HostOS": platform.system().lower(),
            "HostArch": host_arch(), "LimaHome": str(paths.lima_home()),
            "IdentityFile": str(paths.user_identity())}


def render(template: str, record: Mapping[str, Any]) -> str:
    """The message for `record`; TemplateError (with Lima's wording) when it cannot be."""
    if not template:
        return ""
    try:
        return execute(template, format_data(record))
    except TemplateError as exc:
        raise TemplateError(f"message {template!r} is not a valid template: {exc}") from None
