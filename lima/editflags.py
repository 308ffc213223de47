"""Lima's edit flags (`--cpus 4`, `--mount DIR:w`, `--set EXPR`, ...) as yq expressions.

`limactl create`, `start` and `edit` (lima.commands.instances, lima.commands.startform,
lima.commands.edit) take the flags of Lima's `RegisterCreate` / `RegisterEdit` through
`edit_options(create=...)` on a `click.command(cls=EditCommand)`; the command receives
their values as `edit_flags` (an `EditValues`). `flag_expressions()` turns them into the
expressions Lima generates, in Lima's order, with Lima's value parsing and error words;
`apply_to_document()` evaluates them (lima.yqeval) on a loaded document before it is
validated, keeping line marks and remembering which flag set which field, so that
`annotate()` can name the flag in a FILE:LINE problem. What limapy cannot honour
(`--rosetta`, a `--vm-type` other than qemu, `--network`) is refused, never dropped.
Pure: no I/O.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from lima import goparse
from lima.errors import LimaError, Problem, SpecError

if TYPE_CHECKING:
    from lima.schemas.templates import Document

log = logging.getLogger(__name__)


class Flag(NamedTuple):
    """One flag of Lima's RegisterEdit/RegisterCreate (a NamedTuple: cheap at start-up)."""

    name: str
    kind: str  # int | uint16 | float32 | string | bool | slice (CSV) | array | ips
    help: str
    create: bool = False  # only RegisterCreate has it
    new_only: bool = False  # Lima ignores it (with a warning) on an existing instance
    experimental: bool = False

    @property
    def dest(self) -> str:
        return "edit_" + self.name.replace("-", "_")


# Registration order (help), Lima's RegisterEdit then RegisterCreate.
FLAGS: tuple[Flag, ...] = (
    Flag("cpus", "int", "Number of CPUs"),
    Flag("dns", "ips", "Specify custom DNS (disable host resolver)"),
    Flag("memory", "float32", "Memory in GiB"),
    Flag("mount", "slice", "Directories to mount, suffix ':w' for writable (Do not specify "
         "directories that overlap with the existing mounts)"),
    Flag("mount-only", "slice", "Similar to --mount, but overrides the existing mounts"),
    Flag("mount-none", "bool", "Remove all mounts"),
    Flag("mount-type", "string", "Mount type (reverse-sshfs, 9p, virtiofs)"),
    Flag("mount-writable", "bool", "Make all mounts writable"),
    Flag("mount-inotify", "bool", "Enable inotify for mounts", experimental=True),
    Flag("network", "slice", 'Additional networks, e.g., "vzNAT" or "lima:shared" to assign '
         "vmnet IP (not supported by limapy)"),
    Flag("nested-virt", "bool", "Enable nested virtualization"),
    Flag("rosetta", "bool", "Enable Rosetta (for vz instances; not supported by limapy)"),
    Flag("set", "array", "Modify the template inplace, using yq syntax. Can be passed "
         "multiple times."),
    Flag("param", "array", "Set a template parameter, e.g. name=value. Can be passed "
         "multiple times."),
    Flag("ssh-port", "uint16", "SSH port (0 for random)"),
    Flag("video", "bool", "Enable video output (has negative performance impact for QEMU)"),
    Flag("disk", "float32", "Disk size in GiB"),
    Flag("vm-type", "string", "Virtual machine type (limapy: qemu)"),
    Flag("shell", "string", "User login shell in the guest (e.g. /bin/bash, /bin/zsh)"),
    Flag("arch", "string", "Machine architecture (x86_64, aarch64, riscv64, armv7l, s390x, "
         "ppc64le)", create=True, new_only=True),
    Flag("image-variant", "string", "Image variant", create=True, new_only=True),
    Flag("arch-variant", "string", 'Architecture variant (e.g. "v3" for x86-64-v3)',
         create=True, new_only=True),
    Flag("containerd", "string", "containerd mode (user, system, user+system, none)",
         create=True, new_only=True),
    Flag("plain", "bool", "Plain mode. Disables mounts, port forwarding, containerd, etc.",
         create=True, new_only=True),
    Flag("port-forward", "array", "Port forwards (host:guest), e.g., '8080:80' or "
         "'9090:9090,static=true' for static port-forwards", create=True),
    Flag("audio-device", "string", "Audio device backend (e.g., 'pa', 'coreaudio', 'none')",
         create=True, experimental=True),
    Flag("audio-interface", "string", "Audio virtual hardware interface ('hda' or 'virtio')",
         create=True, experimental=True),
)
BY_NAME = {f.name: f for f in FLAGS}
# The order Lima generates expressions in (YQExpressions' defs).
ORDER = ("cpus", "dns", "memory", "mount", "mount-only", "mount-none", "mount-type", "vm-type",
         "mount-inotify", "mount-writable", "network", "nested-virt", "rosetta", "set",
         "param", "video", "audio-device", "audio-interface", "ssh-port", "image-variant",
         "arch-variant", "arch", "containerd", "disk", "plain", "port-forward", "shell")
_BOOL_META = "lima.editflags.bools"


class EditValues:
    """The edit flags given on the command line (only those), by Lima's flag name:
    a str, a bool, or a tuple of str (repeatable flags, in order)."""

    __slots__ = ("values",)

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values: Mapping[str, Any] = dict(values or {})

    def __bool__(self) -> bool:
        return bool(self.values)

    def changed(self, name: str) -> bool:
        return name in self.values


class FlagExpr(NamedTuple):
    """One generated expression: Lima's text, and what libjq evaluates for it (the same
    text, except where jq and yq differ: ports as numbers, iterating a missing list)."""

    flag: str
    text: str
    jq: str = ""

    @property
    def program(self) -> str:
        return self.jq or self.text


class EditCommand(click.Command):
    """A click command that takes Go's `--flag=BOOL` form of the boolean edit flags
    (`--video=false`), as pflag does; click only knows the bare `--video`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        bools = {f"--{f.name}": f for f in FLAGS if f.kind == "bool"}
        own = {p.name for p in self.params}
        seen: dict[str, bool] = {}
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                out += args[i:]
                break
            head, eq, value = arg.partition("=")
            flag = bools.get(head)
            if flag is None or flag.dest not in own:
                out.append(arg)
                continue
            if eq:
                try:
                    seen[flag.name] = goparse.parse_bool(value)
                except ValueError as exc:
                    raise LimaError(f"invalid argument {goparse.quote(value)} for "
                                    f"{goparse.quote(head)} flag: {exc}") from None
            else:
                seen[flag.name] = True
        ctx.meta[_BOOL_META] = seen
        return super().parse_args(ctx, out)


def edit_options(create: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add Lima's edit flags (RegisterCreate's with `create`, else RegisterEdit's) to a
    command made with `cls=EditCommand`; it receives them as `edit_flags: EditValues`."""
    flags = [f for f in FLAGS if create or not f.create]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            bools: dict[str, bool] = ctx.meta.get(_BOOL_META, {})
            values: dict[str, Any] = {}
            for f in flags:
                value = kwargs.pop(f.dest)
                if f.kind == "bool":
                    if f.name in bools:
                        values[f.name] = bools[f.name]
                elif ctx.get_parameter_source(f.dest) == click.core.ParameterSource.COMMANDLINE:
                    values[f.name] = tuple(value) if isinstance(value, tuple | list) else value
            return func(*args, edit_flags=EditValues(values), **kwargs)

        for f in reversed(flags):
            if f.kind == "bool":
                option = click.option(f"--{f.name}", f.dest, is_flag=True, default=False,
                                      help=f.help)
            else:
                multiple = f.kind in ("slice", "array", "ips")
                option = click.option(f"--{f.name}", f.dest, multiple=multiple,
                                      metavar=_METAVAR[f.kind], help=f.help)
            wrapper = option(wrapper)
        return wrapper

    return decorate


_METAVAR = {"int": "INT", "uint16": "UINT16", "float32": "FLOAT32", "string": "STRING",
            "slice": "STRINGS", "array": "STRINGS", "ips": "IPS"}


# -- values, as pflag parses them ------------------------------------------------------------


def _invalid(flag: str, value: str, exc: Exception) -> LimaError:
    return LimaError(f"invalid argument {goparse.quote(value)} for {goparse.quote('--' + flag)}"
                     f" flag: {exc}")


def _csv(values: tuple[str, ...], flag: str) -> list[str]:
    """pflag's StringSlice: each value is a CSV record; an empty value adds nothing."""
    import csv  # only the repeatable flags need it

    out: list[str] = []
    for value in values:
        if value == "":
            continue
        try:
            out += next(csv.reader([value], strict=True))
        except (csv.Error, StopIteration) as exc:
            raise _invalid(flag, value, exc) from None
    return out


def _ips(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for value in values:
        cleaned = value.replace('"', "").replace("'", "").replace("`", "")
        for item in _csv((cleaned,), "dns"):
            try:
                out.append(goparse.parse_ip(item.strip()))
            except ValueError:
                raise _invalid("dns", value, ValueError(
                    f"invalid string being converted to IP address: {item}")) from None
    return out


def _parsed(values: EditValues) -> dict[str, Any]:
    """Every given value parsed as pflag would (errors in its words)."""
    out: dict[str, Any] = {}
    for f in FLAGS:
        if not values.changed(f.name):
            continue
        raw = values.values[f.name]
        try:
            if f.kind == "int":
                out[f.name] = goparse.parse_int(raw)
            elif f.kind == "uint16":
                out[f.name] = goparse.parse_uint(raw, 16)
            elif f.kind == "float32":
                out[f.name] = goparse.format_float32(goparse.parse_float32(raw))
            elif f.kind == "slice":
                out[f.name] = _csv(tuple(raw), f.name)
            elif f.kind == "ips":
                out[f.name] = _ips(tuple(raw))
            else:
                out[f.name] = raw
        except ValueError as exc:
            raise _invalid(f.name, str(raw), exc) from None
    return out


def _shown(value: Any) -> str:
    """pflag's Value.String() for the hint of a flag Lima ignores."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(value) + "]"
    return str(value)


# -- expressions ----------------------------------------------------------------------------


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def _mount_list(items: list[str]) -> str:
    entries = []
    for item in items:
        writable = item.endswith(":w")
        location = _expand(item[:-2] if writable else item)
        loc = goparse.quote(location)
        entries.append(f'{{"location": {loc}, "mountPoint": {loc}, "writable": '
                       f"{_go_bool(writable)}}}")
    return "[" + ",".join(entries) + "]"


def _expand(path: str) -> str:
    """Lima's localpathutil.Expand: `~` and `~/x` from $HOME, then an absolute path."""
    if path == "":
        raise ValueError("empty path")
    if path.startswith("~"):
        if path != "~" and not path.startswith("~/"):
            raise ValueError(f"unexpandable path {goparse.backquote(path)}")
        path = path.replace("~", os.path.expanduser("~"), 1)
    return os.path.normpath(os.path.abspath(path))


def parse_port_forward(spec: str) -> tuple[str, str, bool]:
    """Lima's ParsePortForward: `HOST:GUEST[,static=BOOL]` -> (host, guest, static)."""
    parts = spec.split(",")
    if len(parts) > 2:
        raise ValueError(f"invalid port forward format {goparse.backquote(spec)}, expected "
                         "HOST:GUEST or HOST:GUEST,static=true")
    ports = parts[0].strip().split(":")
    if len(ports) != 2:
        raise ValueError(f"invalid port forward format {goparse.backquote(parts[0])}, "
                         "expected HOST:GUEST")
    host, guest = ports[0].strip(), ports[1].strip()
    static = False
    if len(parts) == 2:
        extra = parts[1].strip()
        if not extra.startswith("static="):
            raise ValueError(f"invalid parameter {goparse.backquote(extra)}, expected "
                             "`static=` followed by a boolean value")
        try:
            static = goparse.parse_bool(extra[len("static="):])
        except ValueError:
            raise ValueError("invalid value for static parameter: "
                             f"{goparse.backquote(extra[len('static='):])}") from None
    return host, guest, static


def port_forward_expression(specs: list[str]) -> FlagExpr | None:
    """Lima's BuildPortForwardExpression; ports that are numbers are numbers for jq (Lima's
    YAML decoder reads the quoted "80" as a number; limapy's schema would not)."""
    if not specs:
        return None
    texts, jqs = [], []
    for spec in specs:
        host, guest, static = parse_port_forward(spec)
        texts.append(f'{{"guestPort": {goparse.quote(guest)}, "hostPort": '
                     f'{goparse.quote(host)}, "static": {_go_bool(static)}}}')
        jqs.append(f'{{"guestPort": {_number(guest)}, "hostPort": {_number(host)}, '
                   f'"static": {_go_bool(static)}}}')
    return FlagExpr("port-forward", f".portForwards += [{','.join(texts)}]",
                    f".portForwards += [{','.join(jqs)}]")


def _number(text: str) -> str:
    return text if text.isdigit() else goparse.quote(text)


def param_expressions(params: list[str], allowed: Mapping[str, Any] | None) -> list[str]:
    """Lima's BuildParamExpressions."""
    out = []
    for param in params:
        key, eq, value = param.partition("=")
        if not eq:
            raise ValueError(f"invalid parameter {goparse.backquote(param)}, expected "
                             "NAME=VALUE")
        if key not in (allowed or {}):
            raise ValueError(f"template does not define param {goparse.backquote(key)}")
        out.append(f".param[{goparse.quote(key)}] = {goparse.quote(value)}")
    return out


_CONTAINERD = {
    "user": ".containerd.user = true | .containerd.system = false",
    "system": ".containerd.user = false | .containerd.system = true",
    "user+system": ".containerd.user = true | .containerd.system = true",
    "system+user": ".containerd.user = true | .containerd.system = true",
    "none": ".containerd.user = false | .containerd.system = false",
}


def _expressions_of(name: str, value: Any, parsed: Mapping[str, Any],
                    params: Mapping[str, Any] | None) -> list[FlagExpr]:
    """The expressions of one flag (Lima's exprFunc); ValueError for Lima's own refusals."""
    v = parsed[name]

    def one(text: str, jq: str = "") -> list[FlagExpr]:
        return [FlagExpr(name, text, jq)]

    if name == "cpus":
        if v < 0:
            raise ValueError("invalid value for number of cpus, must be >= 0")
        return one(f".cpus = {v}")
    if name == "dns":
        ips = ",".join(f'"{ip}"' for ip in v)
        log.warning("Disabling HostResolver, as custom DNS addresses ([%s]) are specified",
                    " ".join(v))
        return one(f".dns += [{ips}] | .dns |= unique | .hostResolver.enabled=false")
    if name in ("memory", "disk"):
        sep = " = " if name == "memory" else "= "
        return one(f'.{name}{sep}"{v}GiB"')
    if name == "mount":
        if parsed.get("mount-only"):
            raise ValueError("flag `--mount` conflicts with `--mount-only`")
        return one(f".mounts = {_mount_list(list(reversed(v)))} + .mounts")
    if name == "mount-only":
        return one(f".mounts = {_mount_list(v)}")
    if name == "mount-none":
        for other in ("mount", "mount-only"):
            if parsed.get(other):
                raise ValueError(f"flag `--mount-none` conflicts with `{other}`")
        return one(".mounts = null")
    if name == "mount-type":
        return one(f".mountType = {goparse.quote(v)}")
    if name == "vm-type":
        if v not in ("qemu", "default", ""):
            raise ValueError(f"limapy runs QEMU only (vmType \"qemu\"), got {goparse.backquote(v)}")
        return one(f".vmType = {goparse.quote(v)}")
    if name in ("mount-inotify", "nested-virt", "plain"):
        key = {"mount-inotify": "mountInotify", "nested-virt": "nestedVirtualization",
               "plain": "plain"}[name]
        return one(f".{key} = {_go_bool(v)}")
    if name == "mount-writable":
        return one(f".mounts[].writable = {_go_bool(v)}",
                   f".mounts[]?.writable = {_go_bool(v)}")
    if name == "network":
        nets = []
        for s in v:
            if s == "vzNAT":
                nets.append('{"vzNAT": true}')
            elif s.startswith("lima:"):
                nets.append(f'{{"lima": {goparse.quote(s[len("lima:"):])}}}')
            else:
                raise ValueError(f"network name must be `vzNAT` or `lima:*`, got "
                                 f"{goparse.backquote(s)}")
        if v:
            raise ValueError("limapy has QEMU's user-mode network only: vzNAT and lima:* "
                             "networks (vmnet) are not supported")
        return one(f".networks += [{','.join(nets)}] | .networks |= unique_by(.lima)")
    if name == "rosetta":
        if v:
            raise ValueError("Rosetta needs vmType vz on macOS; limapy runs QEMU on Linux")
        b = _go_bool(v)
        return one(f".vmOpts.vz.rosetta.enabled = {b} | .vmOpts.vz.rosetta.binfmt = {b}")
    if name == "set":
        return [FlagExpr(name, expr) for expr in v]
    if name == "param":
        return [FlagExpr(name, e) for e in param_expressions(list(v), params)]
    if name == "video":
        return one(f'.video.display = "{"default" if v else "none"}"')
    if name == "audio-device":
        return one(f".audio.device = {goparse.quote(v)}")
    if name == "audio-interface":
        return one(f".audio.interface = {goparse.quote(v)}")
    if name == "ssh-port":
        return one(f".ssh.localPort = {v}")
    if name in ("image-variant", "arch-variant"):
        if v == "":
            raise ValueError(f"`--{name}` must not be empty")
        key = "variant" if name == "image-variant" else "archVariant"
        return one(f".images = [.images[] | select(.{key} == {goparse.quote(v)})]")
    if name == "arch":
        return one(f".arch = {goparse.quote(v)}")
    if name == "containerd":
        if v not in _CONTAINERD:
            raise ValueError("expected one of [`user`, `system`, `user+system`, `none`], got "
                             f"{goparse.backquote(v)}")
        return one(_CONTAINERD[v])
    if name == "port-forward":
        expr = port_forward_expression(list(v))
        return [expr] if expr is not None else []
    if name == "shell":
        return one(f".user.shell = {goparse.quote(v)}")
    raise AssertionError(name)


def flag_expressions(values: EditValues, *, new_instance: bool,
                     params: Mapping[str, Any] | None = None) -> list[FlagExpr]:
    """Lima's YQExpressions: the expressions of the given flags, in Lima's order. Raises
    LimaError with Lima's words (`error while processing flag `cpus`: ...`)."""
    parsed = _parsed(values)
    out: list[FlagExpr] = []
    for name in ORDER:
        if name not in parsed:
            continue
        flag = BY_NAME[name]
        if flag.experimental:
            log.warning("`--%s` is experimental", name)
        if flag.new_only and not new_instance:
            log.warning("`--%s` is not applicable to an existing instance (Hint: create a new "
                        "instance with `limactl create --%s=%s --name=NAME`)", name, name,
                        _shown(values.values[name]))
            continue
        try:
            out += _expressions_of(name, values.values[name], parsed, params)
        except ValueError as exc:
            raise LimaError(f"error while processing flag {goparse.backquote(name)}: {exc}"
                            ) from None
    return out


def expressions(values: EditValues, *, new_instance: bool = True,
                params: Mapping[str, Any] | None = None) -> list[str]:
    """The expressions' texts, as Lima's YQExpressions returns them."""
    return [e.text for e in flag_expressions(values, new_instance=new_instance, params=params)]


# -- evaluation -----------------------------------------------------------------------------


def apply_expressions(exprs: list[FlagExpr], data: dict[str, Any]
                      ) -> tuple[dict[str, Any], dict[tuple[str | int, ...], str]]:
    """Evaluate `exprs` in order on `data`; the new data, and the paths each changed
    (shallowest changed path -> the flag). A failed evaluation names its flag."""
    from lima.yqeval import evaluate

    origins: dict[tuple[str | int, ...], str] = {}
    for expr in exprs:
        try:
            new = evaluate(expr.program, data)
        except LimaError as exc:
            raise LimaError(f"error while processing flag {goparse.backquote(expr.flag)}: "
                            f"{exc}") from None
        if not isinstance(new, dict):
            raise LimaError(f"error while processing flag {goparse.backquote(expr.flag)}: "
                            f"the expression {expr.text!r} does not leave a YAML mapping")
        for path in changed_paths(data, new):
            origins[path] = expr.flag
        data = new
    return data, origins


def changed_paths(old: Any, new: Any, path: tuple[str | int, ...] = ()
                  ) -> list[tuple[str | int, ...]]:
    """The shallowest paths where `old` and `new` differ (a list changes as a whole)."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str | int, ...]] = []
        for key in list(old) + [k for k in new if k not in old]:
            out += changed_paths(old.get(key), new.get(key), (*path, key))
        return out
    return [path]


def annotate(error: SpecError, origins: Mapping[tuple[str | int, ...], str]) -> SpecError:
    """`error` with each problem under a path a flag set saying which flag set it."""
    from lima.schemas.lines import format_path

    if not origins:
        return error
    named = {format_path(p): flag for p, flag in origins.items()}
    problems = []
    for p in error.problems:
        flag = next((f for path, f in named.items()
                     if p.path == path or p.path.startswith((path + ".", path + "["))), None)
        if flag is not None and not p.warning:
            p = Problem(p.file, p.line, p.path, f"{p.message} (set by --{flag})", p.warning)
        problems.append(p)
    return SpecError(problems)


def apply_to_document(document: Document, exprs: list[FlagExpr]
                      ) -> tuple[Document, dict[tuple[str | int, ...], str]]:
    """`apply_expressions` on a loaded document: line marks under a changed path are
    dropped (a problem there points at the changed field's own line, or its parent's)."""
    from lima.schemas.templates import Document

    data, origins = apply_expressions(exprs, document.data)
    lines = {p: o for p, o in document.lines.items()
             if not any(len(p) > len(c) and p[:len(c)] == c for c in origins)}
    return Document(document.source, data, lines), origins
