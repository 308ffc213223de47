"""Builtin defaults, `_config/default.yaml` and `_config/override.yaml`: the filled document.

`lima.schemas.resolve()` calls `fill()` on the merged document from `templates.py`; the
result is what `limactl validate --fill` prints and what `build.build_spec()` reads. The
rules are Lima's `FillDefault` (pkg/limayaml/defaults.go):
- scalars: the instance's value, else default.yaml's, else the builtin; override.yaml wins;
- lists: override + instance + default (builtins never add entries), except mounts and
  networks, combined in default, instance, override order (later entries with the same
  location / interface update the earlier one), and dns, taken whole from the highest
  priority file that has any;
- maps (env, param, hostResolver.hosts): default, then instance, then override.
Host and guest `{{.X}}` templates are expanded (by `gotmpl.execute`) in the fields
Lima expands: host ones (mount locations, hostSocket, copyToHost.host) see the host user,
{{.Dir}}, {{.GlobalTempDir}}, {{.TempDir}}; guest ones (user.home, mountPoint, provision
scripts and data, probes, guestSocket, copyToHost.guest) see the guest user, {{.Hostname}}.

Pure: the host's facts (CPU count, RAM, user, time zone, machine id) are read once by
`lima.schemas.hostfacts.host_facts()`, and tests pass their own `HostFacts`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from lima import gotmpl, paths
from lima.errors import Problem, SpecError
from lima.names import guest_hostname
from lima.schemas import fields
from lima.schemas.hostfacts import HostFacts, host_facts, lima_user
from lima.schemas.lines import format_path, from_loaded, line_of
from lima.schemas.macaddr import mac_address
from lima.schemas.yamlload import load_yaml

# Key order of the filled document: the order of Lima's templates/default.yaml.
KEY_ORDER = (
    "minimumLimaVersion", "base", "vmType", "arch", "images", "cpus", "memory", "disk",
    "mounts", "mountTypesUnsupported", "mountType", "mountInotify", "additionalDisks", "ssh",
    "caCerts", "upgradePackages", "containerd", "provision", "probes", "user", "vmOpts",
    "os", "osOpts", "cpuType", "rosetta", "timezone", "firmware", "audio", "video", "networks",
    "portForwards", "copyToHost", "message", "env", "param", "propagateProxyEnv",
    "hostResolver", "dns", "guestInstallPrefix", "plain", "nestedVirtualization",
    "tpm",
)


def hostname_of(name: str) -> str:
    """The guest host name for an instance (lima.names.guest_hostname)."""
    return guest_hostname(name)


def load_config(path: Path) -> dict[str, Any]:
    """`_config/default.yaml` or `override.yaml`: empty when absent. Raises SpecError."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}", str(path)) from None
    if not text.strip():
        return {}
    loaded = load_yaml(text, str(path))
    # Lima unmarshals these files like a lima.yaml, so a wrong type in them is an error at
    # their own file and line. Unchecked, fill() would drop such a value (`provision: x`)
    # or the later check would blame the instance's file for it (`cpus: two` in override).
    from lima.schemas.schemacheck import schema_problems

    lines = from_loaded(loaded.lines, str(path))
    errors = [
        Problem(*line_of(lines, where, str(path)), format_path(where), message)
        for where, message, warning in schema_problems(loaded.data) if not warning
    ]
    if errors:
        raise SpecError(errors)
    data = loaded.data
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------------------


def _m(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _get(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = doc
    for key in keys[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    node[keys[-1]] = value


class _Filler:
    def __init__(self, y: dict[str, Any], d: dict[str, Any], o: dict[str, Any],
                 name: str, lima_home: Path, host: HostFacts) -> None:
        self.y, self.d, self.o = y, d, o
        self.name = name
        self.lima_home = lima_home
        self.inst_dir = str(lima_home / name)
        self.host = host
        self.out: dict[str, Any] = copy.deepcopy(y)
        self.warnings: list[Problem] = []
        self.param: dict[str, Any] = {}

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Problem("", 0, path, message, warning=True))

    def scalar(self, path: str, builtin: Any, empty: tuple[Any, ...] = ()) -> Any:
        """Instance, else default.yaml; override.yaml wins; None (or an `empty` value)
        falls back to the builtin."""
        value = _get(self.y, path)
        if value is None:
            value = _get(self.d, path)
        if _get(self.o, path) is not None:
            value = _get(self.o, path)
        if fields.is_unset(value, empty):
            value = builtin
        _set(self.out, path, copy.deepcopy(value))
        return value

    def field(self, path: str, derived: Any = None) -> Any:
        """`scalar()` with the builtin and the "unset" values of lima.schemas.fields; a
        field whose builtin is Derived from others passes the value it derives."""
        row = fields.field(path)
        builtin = derived if isinstance(row.default, fields.Derived) else \
            fields.builtin(path, self.host)
        return self.scalar(path, builtin, row.empty)

    def concat(self, path: str) -> list[Any]:
        """override + instance + default."""
        items = _l(_get(self.o, path)) + _l(_get(self.y, path)) + _l(_get(self.d, path))
        return copy.deepcopy(items)

    def merged_map(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for doc in (self.d, self.y, self.o):
            out.update(_m(_get(doc, path)))
        return copy.deepcopy(out)

    # template data -------------------------------------------------------------------
    def guest(self, text: str, path: str) -> str:
        user = _m(self.out.get("user"))
        data = {
            "Name": self.name,
            "Hostname": hostname_of(self.name),
            "UID": user.get("uid"),
            "User": user.get("name"),
            "Home": user.get("home"),
            "Param": self.param,
        }
        return self._expand(text, data, path)

    def host_tmpl(self, text: str, path: str) -> str:
        data = {
            "Dir": self.inst_dir,
            "Name": self.name,
            "UID": str(self.host.uid),
            "User": self.host.user,
            "Home": self.host.home,
            "Param": self.param,
            "GlobalTempDir": "/tmp",
            "TempDir": self.host.tempdir,
            "Instance": self.name,  # deprecated in Lima, still accepted
            "LimaHome": str(self.lima_home),
        }
        return self._expand(text, data, path)

    def _expand(self, text: str, data: dict[str, Any], path: str) -> str:
        try:
            return gotmpl.execute(text, data)
        except gotmpl.TemplateError as exc:
            self.warn(path, f"cannot process the value as a template ({exc}); kept as is")
            return text


def fill(
    data: dict[str, Any],
    *,
    name: str,
    lima_home: Path,
    host: HostFacts | None = None,
    warnings: list[Problem] | None = None,
    configs: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The filled document for instance `name` (a new dict; `data` is not changed).
    `configs`: default.yaml and override.yaml as `load_configs` gave them (else read)."""
    d, o = configs if configs is not None else load_configs(lima_home)
    f = _Filler(data, d, o, name, lima_home, host or host_facts())
    _fill_all(f)
    if warnings is not None:
        warnings.extend(f.warnings)
    return order_keys(f.out)


def load_configs(lima_home: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """`_config/default.yaml` and `_config/override.yaml`; SpecError names the problems of
    both files at once."""
    config = lima_home / "_config"
    configs: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for file_name in ("default.yaml", "override.yaml"):  # report both files' problems
        try:
            configs.append(load_config(config / file_name))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return configs[0], configs[1]


def order_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """Known keys in Lima's order, then unknown ones in their original order."""
    out = {k: doc[k] for k in KEY_ORDER if k in doc}
    out.update({k: v for k, v in doc.items() if k not in out})
    return out


def _fill_all(f: _Filler) -> None:
    f.param = {str(k): v for k, v in f.merged_map("param").items()}
    _fill_user(f)
    vm_type = f.field("vmType")
    f.field("os")
    arch = f.field("arch")
    _fill_images(f, arch)
    _fill_vmopts(f)
    f.field("cpus")
    f.field("memory")
    f.field("disk")
    f.out["additionalDisks"] = f.concat("additionalDisks")
    f.field("audio.device")
    f.field("audio.interface")
    f.field("video.display")
    f.field("video.vnc.display")
    f.field("firmware.legacyBIOS")
    firmware_images = f.concat("firmware.images")
    for i, image in enumerate(firmware_images):
        if isinstance(image, dict):
            _fill_entry(image, i, "firmware.images", {"arch": lambda _e, _i: arch})
    _set(f.out, "firmware.images", firmware_images)
    f.field("timezone")
    f.field("ssh.localPort")
    for key in ("loadDotSSHPubKeys", "forwardAgent", "forwardX11", "forwardX11Trusted"):
        f.field(f"ssh.{key}")
    _set(f.out, "hostResolver.hosts", f.merged_map("hostResolver.hosts"))
    _fill_provision(f)
    f.field("guestInstallPrefix")
    f.field("upgradePackages")
    f.field("containerd.system")
    f.field("containerd.user")  # Lima: true on x86_64/aarch64; limapy: opt-in
    archives = f.concat("containerd.archives")
    for i, archive in enumerate(archives):
        if isinstance(archive, dict):
            _fill_entry(archive, i, "containerd.archives", {"arch": lambda _e, _i: arch})
    _set(f.out, "containerd.archives", archives)
    _fill_probes(f)
    _fill_port_forwards(f)
    _fill_copy_to_host(f)
    # Lima's hcs driver (Windows hosts) turns the host resolver off unless it is set.
    f.field("hostResolver.enabled", vm_type != "hcs")
    f.field("hostResolver.ipv6")
    f.field("propagateProxyEnv")
    _fill_networks(f)
    f.out["mountTypesUnsupported"] = f.concat("mountTypesUnsupported")
    # Lima >= 1.0: 9p on QEMU (reverse-sshfs when 9p is unsupported), virtiofs on vz.
    default_mount = "virtiofs" if vm_type == "vz" else "9p"
    if default_mount == "9p" and "9p" in f.out["mountTypesUnsupported"]:
        default_mount = "reverse-sshfs"
    f.field("mountType", default_mount)
    f.field("mountInotify")
    _fill_mounts(f)
    if f.out["mountType"] == "virtiofs" and vm_type == "qemu":
        # Lima's QEMU driver fills each mount's queue size (its DefaultVirtiofsQueueSize).
        for mount in f.out["mounts"]:
            virtiofs = mount.setdefault("virtiofs", {}) if isinstance(mount, dict) else None
            if isinstance(virtiofs, dict) and virtiofs.get("queueSize") is None:
                virtiofs["queueSize"] = VIRTIOFS_QUEUE_SIZE
    dns = _l(f.y.get("dns")) or _l(f.d.get("dns"))
    if _l(f.o.get("dns")):
        dns = _l(f.o.get("dns"))
    f.out["dns"] = copy.deepcopy(dns)
    f.out["env"] = f.merged_map("env")
    f.out["param"] = dict(f.param)
    f.field("caCerts.removeDefaults")
    for key in ("files", "certs"):
        items = _l(_get(f.d, f"caCerts.{key}")) + _l(_get(f.y, f"caCerts.{key}"))
        items += _l(_get(f.o, f"caCerts.{key}"))
        _set(f.out, f"caCerts.{key}", _unique(items))
    # Rosetta exists only on Apple silicon hosts; everywhere else it is off.
    _set(f.out, "rosetta.enabled", fields.field("rosetta.enabled").default)
    f.field("rosetta.binfmt")
    f.field("nestedVirtualization")
    f.field("tpm")
    f.out["osOpts"] = f.merged_map("osOpts")
    if f.field("plain") is True:
        f.out["mounts"] = []
        f.out["portForwards"] = []
        _set(f.out, "containerd.system", False)
        _set(f.out, "containerd.user", False)
        _set(f.out, "rosetta.binfmt", False)
        f.out["timezone"] = ""


def _unique(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _fill_user(f: _Filler) -> None:
    name, uid, notes = lima_user(f.host)
    derived = {"name": name, "uid": uid}
    for key in ("name", "comment", "home", "shell", "uid", "passwordlessSudo"):
        used = f.scalar(f"user.{key}", None)
        if used is None:
            row = fields.field(f"user.{key}")
            builtin = derived[key] if isinstance(row.default, fields.Derived) else \
                fields.builtin(row.path, f.host)
            _set(f.out, f"user.{key}", builtin)
            if key in ("name", "uid"):
                for note in notes:
                    if note not in [w.message for w in f.warnings]:
                        f.warn("user", note)
    home = _get(f.out, "user.home")
    if isinstance(home, str):
        _set(f.out, "user.home", f.guest(home, "user.home"))


def _fill_images(f: _Filler, arch: Any) -> None:
    images = f.concat("images")
    of_image: _Derive = {"arch": lambda _e, _i: arch, "kernel.arch": lambda e, _i: e["arch"],
                         "initrd.arch": lambda e, _i: e["arch"]}
    for i, image in enumerate(images):
        if isinstance(image, dict):
            _fill_entry(image, i, "images", of_image)
    f.out["images"] = images


def _fill_vmopts(f: _Filler) -> None:
    """vmOpts: maps merged default < instance < override; the deprecated top-level
    cpuType moves into vmOpts.qemu.cpuType (which wins on conflicts), as in Lima."""
    vmopts: dict[str, Any] = {}
    for doc in (f.d, f.y, f.o):
        _deep_update(vmopts, copy.deepcopy(_m(doc.get("vmOpts"))))
    qemu = vmopts.setdefault("qemu", {})
    if not isinstance(qemu, dict):
        return
    cpu_type = {k: v for k, v in _m(qemu.get("cpuType")).items()}
    for arch, value in _m(f.y.get("cpuType")).items():
        if value and not cpu_type.get(arch):
            cpu_type[arch] = value
    qemu["cpuType"] = cpu_type
    qemu.setdefault("restrictNetwork", False)
    if qemu.get("restrictNetwork") is None:
        qemu["restrictNetwork"] = False
    f.out["vmOpts"] = vmopts
    f.out.pop("cpuType", None)


def _deep_update(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if value is None and key in into:
            continue  # null means "not set here"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


# Computes a Derived entry builtin from the entry (filled so far) and its index.
_Derive = Mapping[str, Callable[[dict[str, Any], int], Any]]
_NOTHING: _Derive = {}


def _fill_entry(entry: dict[str, Any], index: int, list_path: str, derive: _Derive = _NOTHING,
                *, only: Collection[str] | None = None, skip: Collection[str] = ()) -> None:
    """Set the keys that `entry`, number `index` of `list_path`, leaves unset, from the
    Entry rows of lima.schemas.fields (or `only` those / all but `skip`), in table order:
    a fixed builtin as it is there, a Derived one as `derive[key](entry, index)` computes
    it. A computation without a Derived row, or the reverse, raises ValueError."""
    rows = [row for row in fields.entry_rows(list_path)
            if (only is None or row.key in only) and row.key not in skip]
    derived = {row.key for row in rows if isinstance(row.default, fields.Derived)}
    if set(derive) != derived:
        raise ValueError(f"{list_path}: the fill computes {sorted(derive)}, "
                         f"the Derived rows are {sorted(derived)}")
    for row in rows:
        if row.default is fields.UNSET:
            continue
        if row.when is not None and entry.get(row.when[0]) != row.when[1]:
            continue
        *parents, key = row.key.split(".")
        node: Any = entry
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not fields.is_unset(node.get(key), row.empty):
            continue
        if isinstance(row.default, fields.Derived):
            node[key] = derive[row.key](entry, index)
        else:
            node[key] = copy.deepcopy(row.default)


def _fill_provision(f: _Filler) -> None:
    entries = f.concat("provision")
    for i, p in enumerate(entries):
        if not isinstance(p, dict):
            continue
        where = f"provision[{i}]"
        # The user's values are expanded; the builtins, filled after, are not templates.
        # (yq's owner/permissions/format builtins, root:root, 644 and auto, are applied
        # where they are used: lima.drivers.cloudconfig.)
        keys = {"data": ("content", "owner", "path"),
                "yq": ("expression", "owner", "path")}.get(str(p.get("mode")), ())
        for key in keys:
            if isinstance(p.get(key), str):
                p[key] = f.guest(p[key], f"{where}.{key}")
        if isinstance(p.get("script"), str) and p["script"]:
            p["script"] = f.guest(p["script"], f"{where}.script")
        _fill_entry(p, i, "provision")
    f.out["provision"] = entries


def _fill_probes(f: _Filler) -> None:
    entries = f.concat("probes")
    derive: _Derive = {"description": lambda _e, i: f"user probe {i + 1}/{len(entries)}"}
    for i, probe in enumerate(entries):
        if not isinstance(probe, dict):
            continue
        _fill_entry(probe, i, "probes", derive)
        if isinstance(probe.get("script"), str):
            probe["script"] = f.guest(probe["script"], f"probes[{i}].script")
    f.out["probes"] = entries


def _port_range(port: Any, otherwise: Callable[[], list[Any]]) -> list[Any]:
    return [port, port] if port else otherwise()


_PORT_FORWARD: _Derive = {
    "guestIP": lambda rule, _i: "0.0.0.0" if rule.get("guestIPMustBeZero") else "127.0.0.1",
    # Lima: an explicit 0.0.0.0 matches only listeners on 0.0.0.0 unless told otherwise.
    "guestIPMustBeZero": lambda rule, _i: rule.get("guestIP") == "0.0.0.0",
    "guestPortRange": lambda rule, _i: _port_range(rule.get("guestPort"), lambda: [1, 65535]),
    "hostPortRange": lambda rule, _i: _port_range(
        rule.get("hostPort"), lambda: list(rule["guestPortRange"])),
}


def _fill_port_forwards(f: _Filler) -> None:
    entries = f.concat("portForwards")
    for i, rule in enumerate(entries):
        if not isinstance(rule, dict):
            continue
        where = f"portForwards[{i}]"
        _fill_entry(rule, i, "portForwards", _PORT_FORWARD)
        if isinstance(rule.get("guestSocket"), str) and rule["guestSocket"]:
            rule["guestSocket"] = f.guest(rule["guestSocket"], f"{where}.guestSocket")
        if isinstance(rule.get("hostSocket"), str) and rule["hostSocket"]:
            sock = f.host_tmpl(rule["hostSocket"], f"{where}.hostSocket")
            if not os.path.isabs(sock):
                sock = os.path.join(f.inst_dir, paths.SOCK_DIR, sock)
            rule["hostSocket"] = sock
    f.out["portForwards"] = entries


def _fill_copy_to_host(f: _Filler) -> None:
    entries = f.concat("copyToHost")
    for i, rule in enumerate(entries):
        if not isinstance(rule, dict):
            continue
        if isinstance(rule.get("guest"), str) and rule["guest"]:
            rule["guest"] = f.guest(rule["guest"], f"copyToHost[{i}].guest")
        if isinstance(rule.get("host"), str) and rule["host"]:
            rule["host"] = f.host_tmpl(rule["host"], f"copyToHost[{i}].host")
    f.out["copyToHost"] = entries


def _fill_networks(f: _Filler) -> None:
    networks: list[dict[str, Any]] = []
    by_iface: dict[str, int] = {}
    for nw in _l(f.d.get("networks")) + _l(f.y.get("networks")) + _l(f.o.get("networks")):
        if not isinstance(nw, dict):
            continue
        iface = nw.get("interface") or ""
        if iface and iface in by_iface:
            target = networks[by_iface[iface]]
            if nw.get("socket"):
                target["socket"], target["lima"] = nw["socket"], ""
            if nw.get("lima"):
                target["lima"], target["socket"] = nw["lima"], ""
            for key in ("macAddress", "metric"):
                if nw.get(key):
                    target[key] = nw[key]
            continue
        if iface:
            by_iface[iface] = len(networks)
        networks.append(copy.deepcopy(nw))
    lima_yaml = os.path.join(f.inst_dir, "lima.yaml")
    derive: _Derive = {"interface": lambda _e, i: f"lima{i}",
                       "macAddress": lambda _e, i: mac_address(f"{lima_yaml}#{i}",
                                                               f.host.machine_id)}
    for i, nw in enumerate(networks):
        _fill_entry(nw, i, "networks", derive)
    f.out["networks"] = networks


def _fill_mounts(f: _Filler) -> None:
    """default, instance, override; an entry whose mount point is already taken updates
    that entry (so the higher priority file wins field by field)."""
    mounts: list[dict[str, Any]] = []
    by_point: dict[str, int] = {}
    for raw in _l(f.d.get("mounts")) + _l(f.y.get("mounts")) + _l(f.o.get("mounts")):
        if not isinstance(raw, dict) or not isinstance(raw.get("location"), str):
            if isinstance(raw, dict):
                mounts.append(copy.deepcopy(raw))  # invalid: validation reports it
            continue
        mount = copy.deepcopy(raw)
        i = len(mounts)
        location = f.host_tmpl(mount["location"], f"mounts[{i}].location")
        location = os.path.normpath(location) if location else location
        if location == "~" or location.startswith("~/"):
            location = f.host.home + location[1:]
        mount["location"] = location
        if isinstance(mount.get("mountPoint"), str):
            mount["mountPoint"] = f.guest(mount["mountPoint"], f"mounts[{i}].mountPoint")
        _fill_entry(mount, i, "mounts", {"mountPoint": lambda m, _i: m["location"]},
                    only=("mountPoint",))
        point = mount["mountPoint"]
        if isinstance(point, str) and point in by_point:
            target = mounts[by_point[point]]
            for group in ("sshfs", "9p", "virtiofs"):
                for key, value in _m(mount.get(group)).items():
                    if value is not None and isinstance(target.setdefault(group, {}), dict):
                        target[group][key] = value
            for key in ("location", "writable"):
                if mount.get(key) is not None:
                    target[key] = mount[key]
            continue
        if isinstance(point, str):
            by_point[point] = len(mounts)
        mounts.append(mount)
    for i, mount in enumerate(mounts):
        # Lima always writes these options, so their objects are made (invalid ones replaced).
        for group in ("sshfs", "9p"):
            mount[group] = _m(mount.get(group))
        _fill_entry(mount, i, "mounts", _MOUNT_OPTIONS, skip=("mountPoint",))
    f.out["mounts"] = [_order_mount(m) for m in mounts]


_MOUNT_OPTIONS: _Derive = {"9p.cache": lambda m, _i: "mmap" if m["writable"] is True else "fscache"}


VIRTIOFS_QUEUE_SIZE = 1024  # Lima's DefaultVirtiofsQueueSize

_MOUNT_ORDER = ("location", "mountPoint", "writable", "sshfs", "9p", "virtiofs")


def _order_mount(mount: dict[str, Any]) -> dict[str, Any]:
    out = {k: mount[k] for k in _MOUNT_ORDER if k in mount}
    out.update({k: v for k, v in mount.items() if k not in out})
    return out
