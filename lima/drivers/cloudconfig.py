"""The text of every generated file on the cidata seed, from an InstanceSpec.

Pure functions (no disk, no processes, no environment reads): the cidata builder
(`lima.drivers.cidata.build_cidata`) calls them and packs the results into
cidata.iso; tests call them directly. Anything from the host (the user's home, the
proxy variables) comes in as an argument.

The guest-side contract these files serve is described in lima/assets/cidata/boot.sh.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from lima.drivers import virtfs
from lima.drivers.guest import (
    GUEST_AGENT_PORT,
    HOST_RESOLVER_ADDRESS,
    NETWORK_UP_LINE,
    SLIRP_DNS,
    SLIRP_GATEWAY,
    SLIRP_IP_ADDRESS,
    SLIRP_PREFIX_LENGTH,
)
from lima.errors import SpecError
from lima.names import guest_hostname
from lima.schemas import yamldump
from lima.schemas.spec import InstanceSpec, Mount, Provision
from lima.schemas.yqexpr import YqError, compile_expression, program_json, resolve_format

CIDATA_MOUNT_POINT = "/mnt/lima-cidata"
CIDATA_DEVICE = "/dev/disk/by-label/cidata"
CIDATA_MOUNT_OPTIONS = "ro,mode=0700,dmode=0700,overriderockperm,exec,uid=0"
GUEST_INSTALL_PREFIX = "/usr/local"
# The startup CPU weight of the bootcmd's units (boot.sh and `boot.sh --mounts`): that of
# build:debian-12's cloud-init stages (see boot_hook_script).
BOOT_UNIT_WEIGHT = 1000
CONTAINERD_ARCHIVE = "nerdctl-full.tgz"

_PROXY_VARS = ("ftp_proxy", "http_proxy", "https_proxy", "no_proxy")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PARAM_REF = re.compile(r"\{\{-?\s*\.Param\.([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}")


def hostname(spec: InstanceSpec) -> str:
    """`lima-NAME`, with the characters a hostname cannot hold turned into dashes."""
    return guest_hostname(spec.name)


# --- user-data -------------------------------------------------------------------


def boot_hook_script(mount_point: str = CIDATA_MOUNT_POINT,
                     modules: Sequence[str] = ()) -> str:
    """The per-boot shell snippet (cloud-init bootcmd) that mounts cidata and starts boot.sh.

    bootcmd runs inside cloud-init.service, before users exist and before
    sysinit.target; waiting there for boot.sh would block cloud-init (and so the user
    and sshd) forever. So boot.sh is handed to systemd as a transient unit with
    --no-block (it starts once basic.target is up, after cloud-init's init stage),
    or detached with setsid where systemd is not PID 1. RemainAfterExit keeps daemons
    that provision scripts leave running alive after boot.sh exits (systemd would
    otherwise kill the unit's cgroup). A transient unit of its own runs `boot.sh
    --mounts`: the shares' lines into /etc/fstab (stale ones out), the shares mounted.
    Nothing in cloud-init waits for it: user-data has no `mounts:`, so cloud-init's mounts
    module leaves fstab alone (no `mount -a`, no daemon-reload: 2-4 s under TCG) and its
    config stage need not wait. boot.sh itself, told so by LIMA_BOOT_SHARES_UNIT, leaves
    the shares to that unit and waits for its end before provisioning: both mounting them
    at once raced (one mount failed with a warning, and both appended to fstab).
    `modules` (the shares' file system) are loaded in the background from here, so that
    unit does not load them. The first line tells the host agent the guest's network is up.
    The hook runs inside cloud-init's network stage, which sshd and the rest of the boot
    wait for, and under TCG each program a shell starts costs the guest 50-70 ms. So all
    that follows the first line runs in a background subshell: bootcmd returns at once,
    and the mount and the two systemd-run (0.5-0.65 s of that stage on build:debian-12,
    by `cloud-init analyze show`) no longer hold sshd back. bootcmd waits for the hook's
    shell only (it does not capture the output), and cloud-init.service stays active after
    its run (RemainAfterExit), so systemd leaves the subshell be; the units' start jobs,
    queued from it, wait for basic.target as before. Inside, /proc/mounts and lima.env are
    read with shell builtins, and mkdir and tr run only when needed. The mount of cidata
    is tried again for a few seconds when it fails: udev may be redoing the CD's by-label
    link at that moment.
    Both units get cloud-init's startup CPU weight (build:debian-12 gives its stages
    1000): Running waits for boot.sh as much as for cloud-init's final stage, and under
    TCG the two vCPUs are short while the system starts (sshd, logind, the host agent's
    login).
    """
    mnt = shlex.quote(mount_point)
    return (
        # First: the host agent reads the console for it (lima.drivers.serialwatch).
        f"echo {NETWORK_UP_LINE} >/dev/console 2>/dev/null || :\n"
        + (f"modprobe -q -a {' '.join(shlex.quote(m) for m in modules)} </dev/null "
           ">/dev/null 2>&1 &\n" if modules else "")
        # The rest in the background: the network stage does not wait for it.
        + "(\n"
        f"MNT={mnt}\n"
        '[ -d "$MNT" ] || mkdir -p -m 700 "$MNT"\n'
        "MOUNTED=\n"
        'while read -r _ dir _; do [ "$dir" = "$MNT" ] && MOUNTED=1 && break; done '
        "</proc/mounts\n"
        # udev may be redoing the CD's links while this runs (a boot's coldplug, a media
        # change event): the by-label link can be gone for a moment, so a failed mount is
        # tried again, for up to about 5 s.
        "TRIES=0\n"
        'while [ -z "$MOUNTED" ]; do\n'
        f"  DEV={CIDATA_DEVICE}\n"
        '  [ -e "$DEV" ] || DEV=$(blkid -L cidata)\n'
        f'  [ -n "$DEV" ] && mount -o {CIDATA_MOUNT_OPTIONS} "$DEV" "$MNT" && break\n'
        "  TRIES=$((TRIES + 1))\n"
        '  [ "$TRIES" -lt 50 ] || break\n'
        "  sleep 0.1\n"
        "done\n"
        # This boot's IID, lima.env's first LIMA_CIDATA_IID line (meta-data's instance-id
        # is cloud-init's, the same from boot to boot); only characters a unit name takes
        # (tr runs only when there are others).
        "IID=\n"
        'while IFS= read -r line || [ -n "$line" ]; do case $line in LIMA_CIDATA_IID=*) '
        'IID=${line#LIMA_CIDATA_IID=}; break ;; esac; line=; done <"$MNT/lima.env"\n'
        'case $IID in *[!a-zA-Z0-9-]*) IID=$(printf %s "$IID" | tr -cd "a-zA-Z0-9-") ;; esac\n'
        "if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then\n"
        # A systemd that refuses StartupCPUWeight gets the unit without it.
        f"  lima_unit() {{ systemd-run -p StartupCPUWeight={BOOT_UNIT_WEIGHT} \"$@\" "
        "2>/dev/null || "
        'systemd-run "$@"; }\n'
        '  lima_unit --no-block --collect --unit="lima-mounts-$IID" -p Type=oneshot '
        '--setenv=LIMA_CIDATA_MNT="$MNT" /bin/sh "$MNT/boot.sh" --mounts\n'
        '  lima_unit --no-block --collect --unit="lima-boot-$IID" -p RemainAfterExit=yes '
        '--setenv=LIMA_CIDATA_MNT="$MNT" --setenv=LIMA_BOOT_SHARES_UNIT=1 '
        '/bin/sh "$MNT/boot.sh"\n'
        "else\n"
        '  LIMA_CIDATA_MNT="$MNT" setsid /bin/sh "$MNT/boot.sh" </dev/null >/dev/null 2>&1 &\n'
        "fi\n"
        ") </dev/null &\n"
    )


def user_data(
    spec: InstanceSpec,
    *,
    keys: Sequence[str],
    boot_hook: bool = True,
    host_home: str | None = None,
    ca_certs: Sequence[str] = (),
) -> str:
    """`#cloud-config` user-data. `boot_hook=False` gives Lima's cloud-config.yaml copy.

    `ca_certs`: the PEM texts of caCerts.files and caCerts.certs (the caller reads the
    files), for cloud-init's ca_certs module.
    """
    if not keys:
        raise SpecError("no ssh public key for the guest user (the identity is missing)")
    user: dict[str, Any] = {"name": spec.user.name, "uid": int(spec.user.uid)}
    if spec.user.comment:
        user["gecos"] = spec.user.comment
    user.update(
        {
            "homedir": spec.user.home,
            "shell": spec.user.shell,
            # Lima's guest user always has passwordless sudo.
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
            "ssh_authorized_keys": list(keys),
        }
    )
    doc: dict[str, Any] = {
        "growpart": {"mode": "auto", "devices": ["/"]},
        "resize_rootfs": True,
    }
    if spec.upgrade_packages:
        doc.update(
            {"package_update": True, "package_upgrade": True, "package_reboot_if_required": True}
        )
    else:
        doc["package_update"] = False
    doc["hostname"] = hostname(spec)
    if spec.timezone:
        doc["timezone"] = spec.timezone
    certs = ca_certs_block(spec, ca_certs)
    if certs:
        doc["ca_certs"] = certs
    # No `mounts:` for the 9p/virtiofs shares (Lima has them): boot.sh puts the seed's
    # `fstab` lines in place itself, so cloud-init's config stage does not wait for them.
    doc["users"] = [user]
    doc["ssh_pwauth"] = False
    # An RSA host key costs seconds under TCG; ed25519 is enough for loopback ssh.
    doc["ssh_genkeytypes"] = ["ed25519"]
    if boot_hook:
        # The file system of the 9p shares, loaded while the rest of this stage runs: the
        # shares' unit, which provisioning waits for, then does not load it.
        shares = bool(_fstab_mounts(spec, host_home))
        doc["bootcmd"] = [boot_hook_script(
            modules=("9p",) if shares and spec.mount_type == "9p" else ())]
    return "#cloud-config\n" + _dump(doc)


def ca_certs_block(spec: InstanceSpec, certs: Sequence[str]) -> dict[str, Any]:
    """cloud-init `ca_certs:` as Lima writes it: remove_defaults only when true, trusted
    only when there are certificates; empty when neither (Lima then leaves it out)."""
    out: dict[str, Any] = {}
    if remove_ca_defaults(spec):
        out["remove_defaults"] = True
    if certs:
        out["trusted"] = [c if c.endswith("\n") else c + "\n" for c in certs]
    return out


def remove_ca_defaults(spec: InstanceSpec) -> bool:
    ca = spec.raw.get("caCerts")
    return isinstance(ca, dict) and ca.get("removeDefaults") is True


def _fstab_mounts(spec: InstanceSpec, host_home: str | None) -> list[list[str]]:
    """The 9p/virtiofs shares as Lima's cloud-init `mounts:` entries (reverse-sshfs is
    host-driven): `[TAG, MOUNTPOINT, TYPE, OPTIONS, "0", "0"]`, TAG the device's mount tag."""
    if not virtfs.uses_virtfs(spec):
        return []
    return [[virtfs.mount_tag(m.location, m.mount_point), m.mount_point, spec.mount_type,
             mount_options(spec, m), "0", "0"] for m in spec.mounts]


# cloud-init's mounts module adds this to the options of each fstab line it writes (and
# finds its own lines by it); boot.sh's share lines carry it too, and are found by it.
CLOUD_INIT_MOUNT_COMMENT = "comment=cloudconfig"


def fstab(spec: InstanceSpec, host_home: str | None) -> str:
    """The shares' fstab lines as cloud-init's mounts module writes Lima's `mounts:`
    (fields joined by tabs, its comment added to the options): the seed's `fstab`, which
    boot.sh puts in place, removing stale share lines, and mounts
    (lima/assets/cidata/boot.sh). Earlier boots' lines, by either, stay the same."""
    return "".join(
        "\t".join((tag, point, fstype, f"{options},{CLOUD_INIT_MOUNT_COMMENT}", dump, passno))
        + "\n"
        for tag, point, fstype, options, dump, passno in _fstab_mounts(spec, host_home))


def mount_options(spec: InstanceSpec, m: Mount) -> str:
    """fstab options of a 9p/virtiofs mount, as Lima builds them."""
    return virtfs.guest_options(spec.mount_type, m)


# --- meta-data, network-config ------------------------------------------------------


def meta_data(spec: InstanceSpec, *, instance_id: str) -> str:
    """meta-data; `instance_id` is cloud-init's (`lima.drivers.cidata.cloud_init_id`)."""
    return _dump({"instance-id": instance_id, "local-hostname": hostname(spec)})


def network_config(spec: InstanceSpec) -> str:
    """network-config v2: the slirp NIC with a static address, pinned gateway and DNS.

    The address is the one slirp's DHCP would hand out anyway (first lease is .15);
    static avoids depending on DHCP options QEMU leaves out under restrict=on. The
    NIC is matched by name: `eth0` (net.ifnames=0) and `en*` (predictable names;
    cloud-init writes the key verbatim as the networkd `Name=` glob).
    """
    nameservers = list(spec.dns) or [SLIRP_DNS]
    nic = {
        "dhcp4": False,
        "dhcp6": False,
        "addresses": [f"{SLIRP_IP_ADDRESS}/{SLIRP_PREFIX_LENGTH}"],
        "gateway4": SLIRP_GATEWAY,
        "nameservers": {"addresses": nameservers},
    }
    return _dump({"version": 2, "ethernets": {"eth0": dict(nic), "en*": dict(nic)}})


# --- env files --------------------------------------------------------------------


def lima_env(
    spec: InstanceSpec,
    *,
    iid: str,
    debug: bool = False,
    host_home: str | None = None,
    udp_dns_local_port: int = 0,
    tcp_dns_local_port: int = 0,
    mount_point: str = CIDATA_MOUNT_POINT,
) -> str:
    """lima.env: the LIMA_CIDATA_* variables of Lima's seed, plus IID and MNT (sourceable)."""
    user = spec.user
    lines = [
        ("DEBUG", _gobool(debug)),
        ("NAME", spec.name),
        ("MNT", mount_point),
        ("IID", iid),
        ("USER", user.name),
        ("UID", str(user.uid)),
        ("COMMENT", user.comment),
        ("HOME", user.home),
        ("SHELL", user.shell),
        ("HOSTHOME_MOUNTPOINT", _host_home_mount_point(spec, host_home)),
        ("MOUNTS", str(len(spec.mounts))),
    ]
    lines += [(f"MOUNTS_{i}_MOUNTPOINT", m.mount_point) for i, m in enumerate(spec.mounts)]
    lines += [
        ("MOUNTTYPE", spec.mount_type),
        ("DISKS", str(len(spec.additional_disks))),
    ]
    # Lima's device names: the boot disk is vda, the additional disks follow in order.
    for i, d in enumerate(spec.additional_disks):
        lines += [
            (f"DISK_{i}_NAME", d.name),
            (f"DISK_{i}_DEVICE", f"vd{chr(ord('b') + i)}"),
            (f"DISK_{i}_FORMAT", _gobool(d.format)),
            (f"DISK_{i}_FSTYPE", d.fs_type),
            (f"DISK_{i}_FSARGS", " ".join(d.fs_args)),
        ]
    lines += _provision_env(spec)
    lines += [
        ("GUEST_INSTALL_PREFIX", GUEST_INSTALL_PREFIX),
        ("UPGRADE_PACKAGES", "1" if spec.upgrade_packages else ""),
        ("CONTAINERD_USER", "1" if spec.containerd_user else ""),
        ("CONTAINERD_SYSTEM", "1" if spec.containerd_system else ""),
    ]
    if spec.containerd_user or spec.containerd_system:
        lines.append(("CONTAINERD_ARCHIVE", CONTAINERD_ARCHIVE))
    lines += [
        ("SLIRP_DNS", SLIRP_DNS),
        ("SLIRP_GATEWAY", SLIRP_GATEWAY),
        ("SLIRP_IP_ADDRESS", SLIRP_IP_ADDRESS),
        ("UDP_DNS_LOCAL_PORT", str(udp_dns_local_port)),
        ("TCP_DNS_LOCAL_PORT", str(tcp_dns_local_port)),
        # Ours: where the host agent's DNS server answers (TCP only; 05-host-dns.sh).
        ("HOST_RESOLVER", HOST_RESOLVER_ADDRESS
         if spec.host_resolver_enabled and not spec.dns else ""),
        ("ROSETTA_ENABLED", "false"),
        ("ROSETTA_BINFMT", "false"),
        ("SKIP_DEFAULT_DEPENDENCY_RESOLUTION", "1" if _skip_dependency(spec) else ""),
        ("VMTYPE", spec.vm_type),
        ("VSOCK_PORT", "0"),
        ("VIRTIO_PORT", GUEST_AGENT_PORT),
        ("PLAIN", "1" if spec.plain else ""),
        # limapy's own: how many caCerts entries cloud-init is to install (boot.sh reports
        # them as not installed on a guest without cloud-init).
        ("CA_CERTS", str(ca_cert_count(spec) + (1 if remove_ca_defaults(spec) else 0))),
        # limapy's own: boot.sh sets it where no cloud-init does (the tiny guest).
        ("TIMEZONE", spec.timezone),
    ]
    return "".join(f"LIMA_CIDATA_{k}={_shell_value(k, v)}\n" for k, v in lines)


def _provision_env(spec: InstanceSpec) -> list[tuple[str, str]]:
    """Lima's LIMA_CIDATA_DATAFILE_* and LIMA_CIDATA_YQ_PROVISION_* lines, per step index."""
    out: list[tuple[str, str]] = []
    for i, raw in enumerate(spec.provision):
        p = expanded(raw, spec.param, i)
        num = f"{i:08d}"
        if p.mode == "data":
            out += [(f"DATAFILE_{num}_OVERWRITE", _gobool(p.overwrite is not False)),
                    (f"DATAFILE_{num}_OWNER", p.owner or "root:root"),
                    (f"DATAFILE_{num}_PATH", p.path or ""),
                    (f"DATAFILE_{num}_PERMISSIONS", str(p.permissions or "644"))]
        elif p.mode == "yq":
            out += [(f"YQ_PROVISION_{num}_FORMAT", yq_format(p, i)),
                    (f"YQ_PROVISION_{num}_OWNER", p.owner or "root:root"),
                    (f"YQ_PROVISION_{num}_PATH", p.path or ""),
                    (f"YQ_PROVISION_{num}_PERMISSIONS", str(p.permissions or "644"))]
    return out


def ca_cert_count(spec: InstanceSpec) -> int:
    ca = spec.raw.get("caCerts")
    if not isinstance(ca, dict):
        return 0
    return sum(len(v) for k in ("files", "certs") if isinstance(v := ca.get(k), list))


def _gobool(value: bool) -> str:
    return "true" if value else "false"


def _host_home_mount_point(spec: InstanceSpec, host_home: str | None) -> str:
    if host_home is None:
        return ""
    home = host_home.rstrip("/") or "/"
    for m in spec.mounts:
        if m.location.rstrip("/") == home:
            return m.mount_point
    return ""


def _skip_dependency(spec: InstanceSpec) -> bool:
    return any(
        p.mode == "dependency" and p.skip_default_dependency_resolution for p in spec.provision
    )


def param_env(spec: InstanceSpec) -> str:
    """param.env: one `PARAM_KEY=value` line per spec.param entry, sorted (sourceable)."""
    out = []
    for key in sorted(spec.param):
        if not _ENV_KEY.match(key):
            raise SpecError(f"param: {key!r} is not a valid variable name")
        out.append(f"PARAM_{key}={_shell_value(f'param.{key}', spec.param[key])}\n")
    return "".join(out)


def guest_env(spec: InstanceSpec, host_env: Mapping[str, str]) -> dict[str, str]:
    """spec.env plus the host's proxy variables (when propagateProxyEnv), as Lima merges them.

    The limactl process environment wins over lima.yaml for proxy variables; empty
    values are dropped; a proxy on the host's loopback becomes the slirp gateway
    (the guest reaches the host there); lower and upper case variants end up equal.
    """
    env = dict(spec.env)
    upper = tuple(v.upper() for v in _PROXY_VARS)
    if spec.propagate_proxy_env:
        for name in (*_PROXY_VARS, *upper):
            if name in host_env:
                env[name] = host_env[name]
    for name in (*_PROXY_VARS, *upper):
        if name not in env:
            continue
        if env[name] == "":
            del env[name]
        elif name.lower() != "no_proxy":
            env[name] = _loopback_to_gateway(env[name])
    for lower in _PROXY_VARS:
        up = lower.upper()
        if lower in env:
            env[up] = env[lower]
        elif up in env:
            env[lower] = env[up]
    return env


_LOOPBACK_URL = re.compile(
    r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)?(?P<auth>[^@/]*@)?"
    r"(?P<host>localhost|127(?:\.[0-9]{1,3}){3}|\[::1\])(?P<rest>[:/].*)?$"
)


def _loopback_to_gateway(value: str) -> str:
    # Literal loopback names only: resolving names would be network I/O.
    m = _LOOPBACK_URL.match(value)
    if not m:
        return value
    return f"{m['scheme'] or ''}{m['auth'] or ''}{SLIRP_GATEWAY}{m['rest'] or ''}"


def etc_environment(spec: InstanceSpec, host_env: Mapping[str, str]) -> str:
    """etc_environment: the block boot.sh places in the guest's /etc/environment."""
    env = guest_env(spec, host_env)
    lines = ["#LIMA-START\n"]
    for key in sorted(env):
        if not _ENV_KEY.match(key):
            raise SpecError(f"env: {key!r} is not a valid variable name")
        value = _one_line(f"env.{key}", env[key])
        if any(c in value for c in " \t#\"'"):
            # pam_env strips one pair of surrounding quotes; use them when the value
            # would otherwise be cut at a '#' or lose meaning.
            value = '"' + value + '"'
        lines.append(f"{key}={value}\n")
    lines.append("#LIMA-END\n")
    return "".join(lines)


def _shell_value(what: str, value: str) -> str:
    """A value for a `KEY=value` line that is also a valid shell assignment.

    lima.env and param.env are sourced by boot.sh and the tiny guest's init; plain
    values stay byte-for-byte as Lima writes them, others are single-quoted.
    """
    value = _one_line(what, value)
    return value if value == "" else shlex.quote(value)


def _one_line(what: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise SpecError(f"{what}: a value on the cidata seed cannot contain a line break")
    return value


# --- provision scripts ------------------------------------------------------------


def expand_params(text: str, params: Mapping[str, str], *, what: str = "provision") -> str:
    """Replace `{{.Param.KEY}}` with spec.param[KEY], as Lima does for provision scripts.

    Lima expands these when it fills defaults; the spec layer may already have done
    so, in which case no reference is left and this is a no-op.
    """

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in params:
            ref = "{{.Param." + key + "}}"
            raise SpecError(f"{what}: {ref} refers to param {key!r}, which is not set")
        return params[key]

    return _PARAM_REF.sub(repl, text)


def expanded(p: Provision, params: Mapping[str, str], index: int) -> Provision:
    """`p` with {{.Param.KEY}} expanded in its text fields (a no-op on a filled spec)."""
    def x(key: str, value: str | None) -> str | None:
        return None if value is None else expand_params(value, params,
                                                        what=f"provision[{index}].{key}")

    return replace(p, script=x("script", p.script), path=x("path", p.path),
                   content=x("content", p.content), expression=x("expression", p.expression),
                   owner=x("owner", p.owner), playbook=x("playbook", p.playbook))


def provision_label(p: Provision, index: int) -> str:
    """How a failure names step `index`: `provision[2] (mode: system) "apt-get install x"`,
    the quoted part being the script's first line after `#!` (a comment's text), or the
    path a data/yq step writes, or the playbook."""
    what = ""
    if p.mode in ("data", "yq"):
        what = p.path or ""
    elif p.mode == "ansible":
        what = p.playbook or ""
    else:
        for line in (p.script or "").splitlines():
            line = line.strip()
            if not line or line.startswith("#!"):
                continue
            what = line.lstrip("#").strip() or line
            break
    if len(what) > 60:
        what = what[:57] + "..."
    what = what.replace("\t", " ")
    return f"provision[{index}] (mode: {p.mode})" + (f' "{what}"' if what else "")


def yq_format(p: Provision, index: int) -> str:
    """The resolved format of a `mode: yq` step (auto -> by the path's extension)."""
    try:
        return resolve_format(p.format, p.path or "")
    except YqError as exc:
        raise SpecError(f"provision[{index}].format: {exc}") from None


def yq_program(p: Provision, index: int) -> str:
    """The JSON program lima/assets/cidata/util/lima-yq applies for a `mode: yq` step."""
    try:
        return program_json(compile_expression(p.expression or ""))
    except YqError as exc:
        raise SpecError(f"provision[{index}].expression: {exc}") from None


def data_writer_script(p: Provision, index: int) -> str:
    """The script that installs one `mode: data` file (content sits next to it on the seed).

    It is run by boot.sh as root with $0 = `<mnt>/provision.data/NNNNNNNN.sh`; the
    content is `${0%.sh}`.
    """
    if not p.path:
        raise SpecError(f"provision[{index}]: mode data needs a path")
    owner = p.owner or "root:root"
    perms = p.permissions if p.permissions is not None else "644"
    if not re.fullmatch(r"[0-7]{3,4}", str(perms)):
        raise SpecError(f"provision[{index}].permissions: {perms!r} is not an octal mode")
    overwrite = True if p.overwrite is None else p.overwrite
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        f"# provision[{index}] (mode: data), generated by limapy",
        "set -eu",
        'src="${0%.sh}"',
        f"dest={q(p.path)}",
    ]
    if not overwrite:
        lines.append('if [ -e "$dest" ]; then echo "$dest exists; not overwritten"; exit 0; fi')
    lines += [
        # Missing directories belong to the owner's user, as Lima creates them as that user.
        f"user={q(owner.split(':')[0])}",
        'make_dir() { [ -d "$1" ] && return 0; make_dir "$(dirname "$1")" || return 1;'
        ' mkdir "$1" && chown "$user:$(id -g "$user")" "$1"; }',
        'make_dir "$(dirname "$dest")"',
        'tmp="$dest.lima-tmp.$$"',
        'cat "$src" >"$tmp"',
        f'chown {q(owner)} "$tmp"',
        f'chmod {q(str(perms))} "$tmp"',
        'mv -f "$tmp" "$dest"',
        "",
    ]
    return "\n".join(lines)


# --- YAML -------------------------------------------------------------------------


def _dump(doc: Mapping[str, Any]) -> str:
    # Wide lines: long ssh keys and commands must not be folded.
    return yamldump.dump(doc, width=4096)
