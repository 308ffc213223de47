"""The semantic rules of lima.yaml that a JSON Schema cannot express, as Lima applies them.

`validate.check()` runs every function in RULES (here and in rules_net.py) after the schema
check. Each rule reads the document defensively (a value of the wrong type was already
reported by the schema and is skipped here) and reports through `Ctx.error()` /
`Ctx.warn()` with the field's path, so the user sees `FILE:LINE: cpus: must be at least 1`.
Rules hold for a merged raw document (nulls, `{{.X}}` templates, relative host sockets)
and for a filled one; the few that only make sense before defaults are filled say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lima import LIMA_COMPAT_VERSION
from lima.schemas.arch import ARCHES, EXPERIMENTAL_ARCHES
from lima.schemas.lines import Path
from lima.schemas.rulebase import (
    MOUNT_TYPES,
    OSES,
    PROVISION_MODES,
    SYSTEM_DIRS,
    VM_TYPES,
    Ctx,
    Rule,
    check_enum,
    check_file,
    check_size,
    int_of,
    one_of,
    port_problem,
    semver,
    str_of,
    templated,
)
from lima.schemas.vnc import vnc_display_problem
from lima.schemas.yqexpr import LIMA_FORMATS, YqError, compile_expression, resolve_format

_PARAM_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
_FS_TYPE = re.compile(r"^[a-z0-9][a-z0-9._]*$")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


# -- top level ----------------------------------------------------------------------------
@rule
def minimum_versions(ctx: Ctx) -> None:
    want = str_of(ctx.data.get("minimumLimaVersion"))
    if want is not None:
        parsed = semver(want)
        if parsed is None:
            ctx.error(("minimumLimaVersion",), f'must be a semver value, got "{want}"')
        elif parsed > (semver(LIMA_COMPAT_VERSION) or (0, 0, 0)):
            ctx.error(("minimumLimaVersion",), f'template requires Lima version "{want}"; '
                      f'limapy implements Lima "{LIMA_COMPAT_VERSION}"')
    qemu_min = str_of(ctx.get("vmOpts", "qemu", "minimumVersion"))
    if qemu_min is not None and semver(qemu_min.lstrip("v")) is None:
        ctx.error(("vmOpts", "qemu", "minimumVersion"), f'must be a semver value, got "{qemu_min}"')


@rule
def os_arch_vmtype(ctx: Ctx) -> None:
    check_enum(ctx, ("os",), ctx.data.get("os"), OSES)
    check_enum(ctx, ("arch",), ctx.data.get("arch"), (*ARCHES, "default"))
    check_enum(ctx, ("vmType",), ctx.data.get("vmType"), (*VM_TYPES, "default"))
    arch = str_of(ctx.data.get("arch"))
    if arch in EXPERIMENTAL_ARCHES:
        ctx.warn(("arch",), f'"{arch}" is experimental')
    for base in (("cpuType",), ("vmOpts", "qemu", "cpuType")):
        table = ctx.get(*base)
        if isinstance(table, dict):
            for key in table:
                if key not in ARCHES:
                    ctx.error((*base, key), f'unsupported arch "{key}"')


@rule
def images(ctx: Ctx) -> None:
    listed = ctx.data.get("images")
    if not isinstance(listed, list) or not listed:
        # vmType "ext" drives a machine that already runs (Lima's raspberrypi template):
        # it boots no image, so Lima's own template lists none.
        if (listed is None or listed == []) and ctx.data.get("vmType") != "ext":
            ctx.error(("images",), "at least one image must be set")
        return
    for i, image in ctx.entries("images"):
        path: Path = ("images", i)
        check_file(ctx, path, image, arch_required=ctx.filled)
        arch = str_of(image.get("arch"))
        for part in ("kernel", "initrd"):
            sub = image.get(part)
            if isinstance(sub, dict):
                check_file(ctx, (*path, part), sub, arch_required=False)
                sub_arch = str_of(sub.get("arch"))
                if sub_arch and arch and sub_arch != arch:
                    ctx.error((*path, part, "arch"),
                              f'has architecture "{sub_arch}", must be "{arch}" like the image')


RUN_STATES = ("running", "stopped", "suspended")


@rule
def run_state(ctx: Ctx) -> None:
    """limapy's `x-limapy.runState`: one of the run states a file may ask for."""
    value = ctx.get("x-limapy", "runState")
    if isinstance(value, str) and value not in RUN_STATES:  # other types: the schema says
        ctx.error(("x-limapy", "runState"), f'must be "running", "stopped" or "suspended", '
                  f"got {value!r}")


@rule
def resources_(ctx: Ctx) -> None:
    cpus = int_of(ctx.data.get("cpus"))
    if cpus is not None and cpus < 1:
        ctx.error(("cpus",), f"must be at least 1, got {cpus}")
    for key in ("memory", "disk"):
        check_size(ctx, (key,), ctx.data.get(key))
    disks = ctx.data.get("additionalDisks")
    for i, disk in enumerate(disks if isinstance(disks, list) else []):
        name = disk.get("name") if isinstance(disk, dict) else disk
        path: Path = ("additionalDisks", i, "name") if isinstance(disk, dict) else (
            "additionalDisks", i)
        if isinstance(name, str) and not _IDENTIFIER.match(name):
            ctx.error(path, f'invalid disk name "{name}": use letters, digits and . _ -')
        fs_type = disk.get("fsType") if isinstance(disk, dict) else None
        if isinstance(fs_type, str) and fs_type and not _FS_TYPE.match(fs_type):
            # The guest runs mkfs.FSTYPE and mount -t FSTYPE with it.
            ctx.error(("additionalDisks", i, "fsType"), f'invalid file system type "{fs_type}"'
                      ': use a name such as ext4, xfs, btrfs or swap')


# -- mounts -------------------------------------------------------------------------------
@rule
def mounts(ctx: Ctx) -> None:
    home = str_of(ctx.get("user", "home"))
    for i, mount in ctx.entries("mounts"):
        path: Path = ("mounts", i)
        location = str_of(mount.get("location"))
        if (location is not None and not templated(location)
                and not location.startswith(("/", "~"))):
            ctx.error((*path, "location"), f'must be an absolute path or start with "~", '
                          f'got "{location}"')
        point = str_of(mount.get("mountPoint"))
        where: Path = (*path, "mountPoint") if point is not None else (*path, "location")
        effective = point if point is not None else location
        if effective is not None and not templated(effective):
            if point is not None and point.startswith("~"):
                ctx.error(where, 'must not start with "~" (guest paths are not expanded)')
            elif effective.startswith("/"):
                normal = "/" + effective.strip("/") if effective.strip("/") else "/"
                if normal in SYSTEM_DIRS:
                    ctx.error(where, f'mount point "{normal}" must not be a system path '
                              "such as /etc or /usr")
                elif home is not None and normal == home.rstrip("/"):
                    ctx.error(where, f'mount point "{normal}" is the guest user\'s home '
                              "directory, which Lima reserves")
            elif point is not None:
                ctx.error(where, f'must be an absolute path, got "{point}"')
        ninep = mount.get("9p")
        if isinstance(ninep, dict):
            check_size(ctx, (*path, "9p", "msize"), ninep.get("msize"))
            check_enum(ctx, (*path, "9p", "securityModel"), ninep.get("securityModel"),
                        ("passthrough", "mapped-xattr", "mapped-file", "none"))
            check_enum(ctx, (*path, "9p", "protocolVersion"), ninep.get("protocolVersion"),
                        ("9p2000", "9p2000.u", "9p2000.L"))
            check_enum(ctx, (*path, "9p", "cache"), ninep.get("cache"),
                        ("none", "loose", "fscache", "mmap"))
        check_enum(ctx, (*path, "sshfs", "sftpDriver"), ctx.get("mounts", i, "sshfs",
                    "sftpDriver"), ("", "builtin", "openssh-sftp-server"))  # "": auto
        queue = int_of(ctx.get("mounts", i, "virtiofs", "queueSize"))
        if queue is not None and queue < 1:
            ctx.error((*path, "virtiofs", "queueSize"), "must be at least 1")


@rule
def mount_type(ctx: Ctx) -> None:
    kind = str_of(ctx.data.get("mountType"))
    check_enum(ctx, ("mountType",), kind, (*MOUNT_TYPES, "default"))
    unsupported = ctx.data.get("mountTypesUnsupported")
    if kind is not None and isinstance(unsupported, list) and kind in unsupported:
        ctx.error(("mountType",), f'"{kind}" is listed in mountTypesUnsupported')
    vm_type = str_of(ctx.data.get("vmType"))
    if vm_type in (None, "", "default", "qemu") and kind == "wsl2":
        ctx.error(("mountType",), 'must be one of "reverse-sshfs", "9p" or "virtiofs" for '
                  'the QEMU driver, got "wsl2"')
    # virtiofs needs a virtiofsd on the host: the driver checks it when it starts the
    # instance (lima.drivers.virtiofs), since validation looks at no host.


# -- ssh, user ----------------------------------------------------------------------------
@rule
def ssh_port(ctx: Ctx) -> None:
    port = int_of(ctx.get("ssh", "localPort"))
    if port:
        why = port_problem(port)
        if why:
            ctx.error(("ssh", "localPort"), why)


@rule
def user(ctx: Ctx) -> None:
    name = str_of(ctx.get("user", "name"))
    if name is not None and not templated(name) and not _USER_NAME.match(name):
        ctx.error(("user", "name"), f'invalid user name "{name}": lower-case letters, digits, '
                  '"_" and "-", starting with a letter or "_", at most 32 characters')
    uid = ctx.get("user", "uid")
    if int_of(uid) is not None:
        value = int_of(uid) or 0
        if value == 0:
            ctx.error(("user", "uid"), "must not be 0 (the guest user cannot be root)")
        elif not 0 < value < 2**32 - 1:
            ctx.error(("user", "uid"), f"must be between 1 and {2**32 - 2}, got {value}")
    for key in ("shell", "home"):
        value_s = str_of(ctx.get("user", key))
        if value_s is not None and not templated(value_s) and not value_s.startswith("/"):
            ctx.error(("user", key), f'must be an absolute path, got "{value_s}"')


# -- provision and probes -----------------------------------------------------------------
@rule
def provision(ctx: Ctx) -> None:
    for i, step in ctx.entries("provision"):
        path: Path = ("provision", i)
        mode = step.get("mode")
        mode = "system" if mode is None else mode
        if not isinstance(mode, str):
            continue
        if mode not in PROVISION_MODES:
            ctx.error((*path, "mode"), f'must be one of {one_of(PROVISION_MODES)}; '
                      f'got "{mode}"')
            continue
        if mode != "dependency" and step.get("skipDefaultDependencyResolution") is not None:
            ctx.error((*path, "skipDefaultDependencyResolution"),
                      'can only be set when mode is "dependency"')
        script = step.get("script")
        has_script = (isinstance(script, str) and script != "") or step.get("file") is not None
        if mode in ("data", "yq"):
            _provision_file(ctx, path, step, mode)
        else:
            if not has_script and mode != "ansible":
                ctx.error(path, f'"script" must not be empty when mode is "{mode}"')
            for key, modes in (("content", "data"), ("overwrite", "data"), ("owner", "data"),
                               ("path", 'data" or "yq'), ("permissions", 'data" or "yq'),
                               ("expression", "yq"), ("format", "yq")):
                if step.get(key) is not None:
                    ctx.error((*path, key), f'can only be set when mode is "{modes}"')
        playbook = step.get("playbook")
        if isinstance(playbook, str) and playbook:
            if mode != "ansible":
                ctx.error((*path, "playbook"), 'can only be set when mode is "ansible"')
            if isinstance(script, str) and script:
                ctx.error((*path, "script"), "must be empty when playbook is set")
            ctx.warn((*path, "mode"), 'mode "ansible" is deprecated; run ansible-playbook '
                     "yourself instead")
        elif mode == "ansible":
            ctx.error(path, '"playbook" must be set when mode is "ansible"')
        if isinstance(script, str) and "LIMA_CIDATA" in script:
            ctx.warn((*path, "script"), "provisioning scripts should not use the "
                     "LIMA_CIDATA variables")


def _provision_file(ctx: Ctx, path: Path, step: dict[str, Any], mode: str) -> None:
    target = step.get("path")
    if target is None:
        ctx.error(path, f'"path" must be set when mode is "{mode}"')
    elif isinstance(target, str) and not templated(target) and not target.startswith("/"):
        ctx.error((*path, "path"), f'must be an absolute path, got "{target}"')
    if mode == "data" and step.get("content") is None and step.get("file") is None:
        ctx.error(path, '"content" must be set when mode is "data"')
    if mode == "yq" and step.get("expression") is None:
        ctx.error(path, '"expression" must be set when mode is "yq"')
    if mode == "yq":
        for key in ("content", "overwrite"):
            if step.get(key) is not None:
                ctx.error((*path, key), 'can only be set when mode is "data"')
        _yq(ctx, path, step)
    if step.get("script") is not None:
        ctx.error((*path, "script"), f'cannot be set when mode is "{mode}"')
    perms = step.get("permissions")
    if perms is not None and not isinstance(perms, bool):
        text = str(perms)
        if not re.fullmatch(r"[0-7]{1,4}", text):
            ctx.error((*path, "permissions"), f'must be an octal number such as "644", '
                      f'got "{text}"')


def _yq(ctx: Ctx, path: Path, step: dict[str, Any]) -> None:
    """The expression and format must be in the subset limapy runs (lima.schemas.yqexpr);
    templated values are checked once filled, when the seed is built."""
    fmt = str_of(step.get("format"))
    if fmt is not None:
        check_enum(ctx, (*path, "format"), fmt, LIMA_FORMATS)
    target = str_of(step.get("path"))
    if fmt not in (None, "auto") and fmt in LIMA_FORMATS:
        try:
            resolve_format(fmt, "")
        except YqError as exc:
            ctx.error((*path, "format"), str(exc))
    elif fmt in (None, "auto") and target is not None and not templated(target):
        try:
            resolve_format("auto", target)
        except YqError as exc:
            ctx.error((*path, "path"), f"{exc}; its extension picks the format")
    expression = str_of(step.get("expression"))
    if expression is not None and not templated(expression):
        try:
            compile_expression(expression)
        except YqError as exc:
            ctx.error((*path, "expression"), str(exc))


@rule
def probes(ctx: Ctx) -> None:
    for i, probe in ctx.entries("probes"):
        path: Path = ("probes", i)
        script = probe.get("script")
        if isinstance(script, str) and not script.startswith("#!"):
            ctx.error((*path, "script"), "must start with a '#!' line")
        elif script is None and probe.get("file") is None:
            ctx.error(path, '"script" must be set')
        check_enum(ctx, (*path, "mode"), probe.get("mode"), ("readiness",))


# -- params -------------------------------------------------------------------------------
@rule
def params(ctx: Ctx) -> None:
    table = ctx.data.get("param")
    if not isinstance(table, dict):
        return
    texts = None if ctx.filled else list(_param_haystack(ctx))
    if texts is not None:
        playbooks = [_playbook_text(book) for _, e in ctx.entries("provision")
                     if e.get("mode") == "ansible" and (book := str_of(e.get("playbook")))]
        if None in playbooks:
            texts = None  # a playbook not readable from here may use any param
        else:
            texts += [t for t in playbooks if t is not None]
    for key, value in table.items():
        if not _PARAM_NAME.match(key):
            ctx.error(("param", key), "invalid name: must start with a letter, followed by "
                      "letters, digits or underscores")
            continue
        if isinstance(value, str) and any(not (c.isprintable() or c in " \t") for c in value):
            ctx.error(("param", key), "value contains an unprintable character")
        # `internal_*` params are read by the guest's own boot scripts (Lima's convention).
        if texts is not None and not key.startswith("internal_"):
            used = re.compile(r"{{[^}]*\.Param\." + re.escape(key) + r"\b[^}]*}}|\bPARAM_"
                              + re.escape(key) + r"\b")
            if not any(used.search(t) for t in texts):
                ctx.error(("param", key), "is not used in any provision, probe, copyToHost, "
                          "mount or portForward")


def _param_haystack(ctx: Ctx) -> Iterator[str]:
    """Every string where Lima looks for {{.Param.KEY}} or $PARAM_KEY."""
    fields = {"provision": ("script", "content", "expression", "owner", "path", "permissions"),
              "probes": ("script",), "copyToHost": ("guest", "host"),
              "portForwards": ("guestSocket", "hostSocket"), "mounts": ("location", "mountPoint")}
    for section, keys in fields.items():
        for _, entry in ctx.entries(section):
            for key in keys:
                value = entry.get(key)
                if isinstance(value, str):
                    yield value


def _playbook_text(playbook: str) -> str | None:
    """An ansible step's playbook, where Lima also looks for $PARAM_KEY (read from the
    current directory, as Lima does); None when it cannot be read from here."""
    try:
        with open(playbook, "rb") as fh:
            return fh.read(_PLAYBOOK_LIMIT).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None


_PLAYBOOK_LIMIT = 1 << 20


# -- files elsewhere, display -------------------------------------------------------------
@rule
def other_files(ctx: Ctx) -> None:
    archives = ctx.get("containerd", "archives")
    if isinstance(archives, list):
        for i, archive in enumerate(archives):
            if isinstance(archive, dict):
                check_file(ctx, ("containerd", "archives", i), archive, arch_required=False)
    firmware = ctx.get("firmware", "images")
    if isinstance(firmware, list):
        for i, image in enumerate(firmware):
            if isinstance(image, dict):
                check_file(ctx, ("firmware", "images", i), image, arch_required=False)
                check_enum(ctx, ("firmware", "images", i, "vmType"), image.get("vmType"),
                            VM_TYPES)


@rule
def experimental(ctx: Ctx) -> None:
    display = str_of(ctx.get("video", "display"))
    if display == "vnc":
        ctx.warn(("video", "display"), '"vnc" is experimental')
        vnc = str_of(ctx.get("video", "vnc", "display"))
        problem = vnc_display_problem(vnc) if vnc is not None else None  # no templates here
        if problem is not None:
            ctx.error(("video", "vnc", "display"), problem)
    elif display and "vnc" in display:
        # QEMU would take the text after "vnc=" as is: any address, no password.
        ctx.error(("video", "display"), f'"{display}" is not supported by limapy; use "vnc" '
                  "and set video.vnc.display (served on 127.0.0.1 with a password)")
    if ctx.get("upgradePackages") is True and ctx.get("vmOpts", "qemu",
                                                      "restrictNetwork") is True:
        ctx.error(("upgradePackages",), "needs the network, but vmOpts.qemu.restrictNetwork "
                  "is true (the guest reaches nothing): set one of them to false")
    device = str_of(ctx.get("audio", "device"))
    if device and device != "none":
        # Said, never silently dropped: limapy gives the guest no sound device yet.
        ctx.warn(("audio", "device"), f'"{device}" has no effect: limapy does not give the '
                 "guest a sound device yet")
    if ctx.get("nestedVirtualization") is True:
        # Lima's QEMU driver does not read it either: KVM's own nested setting decides.
        ctx.warn(("nestedVirtualization",), "has no effect with QEMU: nested virtualization "
                 "follows the host's KVM module (its `nested` parameter); under TCG there is "
                 "none")
    if ctx.get("vmOpts", "qemu", "minimumVersion") not in (None, ""):
        ctx.warn(("vmOpts", "qemu", "minimumVersion"), "is not checked by limapy yet: the "
                 "QEMU on this host is used whatever its version")


@rule
def driver_only_fields(ctx: Ctx) -> None:
    """limapy drives QEMU only: another vmType is refused (booting it with QEMU would
    ignore it in silence), and another driver's vmOpts are said to have no effect."""
    vm_type = str_of(ctx.data.get("vmType"))
    if vm_type not in (None, "", "default", "qemu") and vm_type in VM_TYPES:
        ctx.error(("vmType",), f'"{vm_type}" is not supported by limapy: it drives QEMU only'
                  ' (use "qemu", or leave vmType unset)')
    opts = ctx.data.get("vmOpts")
    if isinstance(opts, dict):
        for driver, values in opts.items():
            if driver != "qemu" and _has_value(values):
                ctx.warn(("vmOpts", driver), "has no effect: limapy drives QEMU only")


def _has_value(value: object) -> bool:
    """Anything set below a mapping (nulls and empty maps are "not set")."""
    if isinstance(value, dict):
        return any(_has_value(v) for v in value.values())
    return value is not None and value != [] and value != ""


@rule
def lima22_fields(ctx: Ctx) -> None:
    """The fields Lima 2.2 added: checked as Lima checks them, and refused where limapy
    cannot do what they ask (never accepted and ignored). A guest OS limapy does not run
    (`os: Windows`) is already refused in one line: its settings are not checked."""
    if ctx.data.get("os") not in (None, "", "default", *OSES):
        return
    if ctx.get("user", "passwordlessSudo") is False:
        ctx.error(("user", "passwordlessSudo"), "false is not supported by limapy (the guest "
                  "user always gets passwordless sudo; Lima 2.2 allows false only with "
                  "plain: true)")
    interface = ctx.get("audio", "interface")
    check_enum(ctx, ("audio", "interface"), interface, ("", "hda", "virtio"))
    if interface and str_of(ctx.get("audio", "device")) not in (None, "", "none"):
        ctx.warn(("audio", "interface"), "has no effect: limapy does not give the guest a "
                 "sound device yet")
    tpm = ctx.get("tpm")
    if tpm is True or (isinstance(tpm, dict) and tpm.get("enabled") is True):
        ctx.error(("tpm",), "is not supported by limapy: a TPM needs swtpm, which limapy "
                  "does not run")
    os_opts = ctx.get("osOpts")
    if isinstance(os_opts, dict) and os_opts:
        ctx.error(("osOpts",), f"is for Windows guests only (limapy runs Linux guests); "
                  f"got {', '.join(map(str, os_opts))}")
