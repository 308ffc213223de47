"""`limactl list` (alias `ls`), as Lima 2.2 prints it.

Reached through `lima.cli`; `instance_record` is also used by lima.commands.lifecycle (the
`message` shown after a start). One instance is one JSON object (JSON Lines) with Lima's
keys in Lima's order (pkg/limatype.Instance, then store.FormatData's HostOS, HostArch,
LimaHome, IdentityFile), zero values left out where Lima's `omitempty` leaves them out and
empty maps dropped (Lima pipes its JSON through yq for that); limapy's own keys (phase,
conditions, ready, reason, managedBy, controllerPaused) come after all of Lima's.
`--format '{{...}}'` is a Go template over Lima's Go field names (lima.gotmpl, with
Lima's json/yaml/indent/missing functions). Start-up matters here (scripts call `list`
in loops): this module imports no click (the verb's options are in lima.commands.listcmd,
and lima.clifast runs plain `limactl list` without click), and other modules are
imported only by the paths that need them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lima import paths
from lima.drivers import store
from lima.errors import LimaError
from lima.logfmt import warn
from lima.names import guest_hostname, validate_name
from lima.units import bytes_size

# Lima's Instance fields: Go name -> JSON key, in Lima's order, and their zero value.
FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("Name", "name", ""), ("Hostname", "hostname", ""), ("Status", "status", ""),
    ("Dir", "dir", ""), ("VMType", "vmType", ""), ("Arch", "arch", ""), ("CPUs", "cpus", 0),
    ("Memory", "memory", 0), ("Disk", "disk", 0), ("Message", "message", ""),
    ("AdditionalDisks", "additionalDisks", []), ("Networks", "network", []),
    ("SSHLocalPort", "sshLocalPort", 0), ("SSHConfigFile", "sshConfigFile", ""),
    ("HostAgentPID", "hostAgentPID", 0), ("DriverPID", "driverPID", 0),
    ("Errors", "errors", []), ("Config", "config", None), ("SSHAddress", "sshAddress", ""),
    ("Protected", "protected", False), ("LimaVersion", "limaVersion", ""),
    ("Param", "param", {}), ("AutoStartedIdentifier", "autoStartedIdentifier", ""),
)
# Printed even when zero (no `omitempty` in Lima's struct tags).
_ALWAYS = frozenset(("name", "hostname", "status", "dir", "vmType", "arch", "protected",
                     "limaVersion"))
# store.FormatData's host fields: deprecated (not in --list-fields) but printed and usable.
HOST_FIELDS = ("HostOS", "HostArch", "LimaHome", "IdentityFile")

NO_INSTANCE = "No instance found. Run `limactl create` to create an instance."


def _host_arch() -> str:
    from lima.commands.listcache import host_arch

    return host_arch()


def _spec_facts(name: str, yaml_file: Path, cached: bool) -> dict[str, Any]:
    if cached:
        from lima.commands import listcache

        return listcache.spec_facts(name, yaml_file)
    from lima import schemas
    from lima.errors import SpecError

    try:
        spec = schemas.load_instance(name).spec
    except SpecError as exc:
        return {"problems": [str(p) for p in exc.problems]}
    return {"spec": {"vmType": spec.vm_type, "arch": spec.arch, "cpus": spec.cpus,
                     "memory": spec.memory, "disk": spec.disk,
                     "sshLocalPort": spec.ssh.local_port, "message": spec.message,
                     "config": dict(spec.raw)}}


def instance_record(name: str, cached: bool = False) -> dict[str, Any]:
    """One instance as Lima's `list --format json` shows it, from facts. `cached`: what
    lima.yaml holds may come from lima.commands.listcache (the list verb)."""
    inst_dir = paths.instance_dir(name)
    ins = store.inspect_processes(name, inst_dir)
    has_yaml = (inst_dir / paths.LIMA_YAML).is_file()
    vals: dict[str, Any] = {
        "name": name, "status": ins.status, "dir": str(inst_dir),
        "hostAgentPID": ins.hostagent_pid, "driverPID": ins.driver_pid,
        "errors": list(ins.errors), "protected": ins.protected,
        "limaVersion": ins.lima_version,
    }
    if has_yaml:  # Lima's broken instance (no lima.yaml) has only name, dir, status, errors
        vals.update(hostname=guest_hostname(name), sshAddress="127.0.0.1",
                    sshConfigFile=str(inst_dir / paths.SSH_CONFIG))
        facts = _spec_facts(name, inst_dir / paths.LIMA_YAML, cached)
        if "problems" in facts:
            vals["status"] = store.STATUS_BROKEN
            vals["errors"].extend(facts["problems"])
        else:
            vals.update(facts["spec"])
            raw = vals["config"]
            vals.update(additionalDisks=raw.get("additionalDisks") or [],
                        network=raw.get("networks") or [], param=raw.get("param") or {})
            # (a message is rendered below, once the record is complete)
    extras: dict[str, Any] = {}
    status_file = inst_dir / paths.STATUS_JSON
    if status_file.is_file():
        try:
            st = json.loads(status_file.read_text())
        except (OSError, ValueError):
            st = {}
        if isinstance(st, dict):
            extras["phase"] = st.get("phase", "")
            extras["conditions"] = st.get("conditions", [])
    if vals["status"] == store.STATUS_RUNNING:
        _live_readiness(inst_dir, vals, extras)
        from lima.drivers.instance import read_cidata_meta

        port = read_cidata_meta(inst_dir).get("sshLocalPort")
        if isinstance(port, int) and port:
            vals["sshLocalPort"] = port
    from lima.controller import managed

    extras.update(managed.describe(name))  # managedBy, controllerPaused
    if "conditions" in extras:
        # A summary for scripts that want "is it usable, and if not why" without walking
        # the conditions.
        extras["ready"], extras["reason"] = readiness(extras["conditions"])
        if extras["ready"] and vals["status"] != store.STATUS_RUNNING:
            # status.json is as old as the last pass; the pid files are now: a VM that
            # died or was killed since is not Ready, whatever the file still says.
            extras["ready"] = False
            extras["reason"] = f"NotReady (status.json says Ready but the VM is {vals['status']})"
    rec = _ordered(vals)
    if vals.get("message"):
        from lima.drivers.message import render
        from lima.gotmpl import TemplateError

        try:
            rec["message"] = render(vals["message"], rec)
        except TemplateError as exc:
            rec["errors"] = [*rec.get("errors", []), str(exc)]  # Lima: the same words
            rec = _ordered(rec)
    out: dict[str, Any] = _drop_empty_maps({**rec, **extras})
    return out


def _ordered(vals: dict[str, Any]) -> dict[str, Any]:
    """Lima's keys in Lima's order, zero values left out where Lima omits them."""
    rec = {key: vals.get(key, zero) for _, key, zero in FIELDS
           if key in _ALWAYS or vals.get(key)}
    rec.update(HostOS="linux", HostArch=_host_arch(), LimaHome=str(paths.lima_home()),
               IdentityFile=str(paths.user_identity()))
    return rec


def _drop_empty_maps(value: Any) -> Any:
    """What Lima's `del(.. | select(tag == "!!map" and length == 0))` (until nothing
    changes) leaves: no empty map anywhere below the top. (Scalars are not descended
    into: `list` walks every instance's config.)"""
    if type(value) is dict:
        out = {}
        for k, v in value.items():
            if type(v) is dict or type(v) is list:
                v = _drop_empty_maps(v)
                if v == {}:
                    continue
            out[k] = v
        return out
    if type(value) is list:
        kept = []
        for v in value:
            if type(v) is dict or type(v) is list:
                v = _drop_empty_maps(v)
                if v == {}:
                    continue
            kept.append(v)
        return kept
    return value


def go_data(rec: dict[str, Any]) -> Any:
    """Lima's store.FormatData for a template: Go field names, zero values where the JSON
    leaves a key out; `Config` with lima.yaml's Go names (lima.drivers.message)."""
    from lima.gotmpl import Struct

    fields: dict[str, object] = {go: rec.get(key, zero) for go, key, zero in FIELDS}
    if isinstance(rec.get("config"), dict):
        from lima.drivers.message import go_names

        fields["Config"] = go_names(rec["config"])
    fields["Message"] = str(fields["Message"]).removesuffix("\n")
    fields.update({k: rec[k] for k in HOST_FIELDS})
    return Struct(fields, "store.FormatData", rec)


def _live_readiness(inst_dir: Any, vals: dict[str, Any], extras: dict[str, Any]) -> None:
    """Ask the host agent, which checks the guest itself: status.json is only as fresh as
    the last command, and a guest that stopped answering since then is not Ready."""
    from lima.drivers.hostagent import hostagent_info

    info = hostagent_info(inst_dir, timeout=1.0)
    if info is None or info.get("responsive") is not False:
        return
    errs = [str(e) for e in info.get("errors") or [] if "does not answer" in str(e)]
    why = errs[0] if errs else "the guest does not answer"
    vals["errors"].append(why)
    conds = [c for c in extras.get("conditions", []) if c.get("type") != "Ready"]
    conds.append({"type": "Ready", "status": "False", "reason": "GuestUnresponsive",
                  "message": why})
    extras["conditions"] = conds


# Conditions that say something is wrong or pending, most urgent first (Ready is the
# summary of the others and of the phase, so it is not listed here).
_PROBLEMS = ("Stalled", "Degraded", "RestartRequired")


def _true_conditions(conditions: Any) -> list[dict[str, Any]]:
    conds = [c for c in conditions if isinstance(c, dict)] if isinstance(conditions, list) else []
    return [c for t in _PROBLEMS for c in conds if c.get("type") == t and c.get("status") == "True"]


def _why(cond: dict[str, Any]) -> str:
    reason, message = str(cond.get("reason") or ""), str(cond.get("message") or "")
    return f"{reason}: {message}" if reason and message else reason or message


def readiness(conditions: Any) -> tuple[bool, str]:
    """(ready, reason) from status.json's conditions: ready is the Ready condition being
    True; reason names each problem condition that holds, with its reason and message
    ("Degraded (MountFailed: ...); RestartRequired (...)"), else why it is not Ready,
    else ""."""
    conds = [c for c in conditions if isinstance(c, dict)] if isinstance(conditions, list) else []
    ready_cond = next((c for c in conds if c.get("type") == "Ready"), None)
    ready = ready_cond is not None and ready_cond.get("status") == "True"
    parts = [f"{c['type']} ({_why(c)})" if _why(c) else str(c["type"])
             for c in _true_conditions(conds)]
    if not parts and ready_cond is not None and not ready:
        parts = [f"NotReady ({_why(ready_cond)})" if _why(ready_cond) else "NotReady"]
    return ready, "; ".join(parts)


def _state_cell(rec: dict[str, Any]) -> str:
    """READY column of `list --wide`: Ready, or the problem conditions that hold
    (Stalled,Degraded,RestartRequired: RestartRequired can hold while Ready), or NotReady;
    "-" when there is no status.json (an instance no limapy verb has driven)."""
    if "conditions" not in rec:
        return "-"
    names = [str(c["type"]) for c in _true_conditions(rec["conditions"])]
    if rec.get("ready"):
        return ",".join(["Ready", *names])
    return ",".join(names) or "NotReady"


def _managed_cell(rec: dict[str, Any]) -> str:
    by = str(rec.get("managedBy", ""))
    if rec.get("controllerPaused"):
        return f"{by} (paused)" if by else "paused"
    return by or "-"


def _output_is_tty() -> bool:
    """Lima's uiutil.OutputIsTTY (stdout is a terminal, or $_LIMA_OUTPUT_IS_TTY is set)."""
    return bool(os.environ.get("_LIMA_OUTPUT_IS_TTY")) or sys.stdout.isatty()


def _terminal_width() -> int:
    """0 when stdout is not a terminal: Lima then hides no column."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else 0
    except (OSError, ValueError):
        return 0


def table(recs: list[dict[str, Any]], all_fields: bool, wide: bool, width: int) -> list[str]:
    """Lima's table: NAME STATUS SSH VMTYPE ARCH CPUS MEMORY DISK DIR, where on a narrow
    terminal (and without --all-fields) VMTYPE is hidden when all instances share one,
    ARCH when all are the host's, and DIR; then limapy's MANAGED (only when an instance is
    managed) or, with --wide, READY MANAGED REASON."""
    cols = 1 + 2 + 2
    narrow = width != 0 and not all_fields
    hide_type = narrow and (cols + 7) * 8 > width and len({r["vmType"] for r in recs}) == 1
    cols += 0 if hide_type else 1
    hide_arch = (narrow and (cols + 6) * 8 > width
                 and {r["arch"] for r in recs} == {_host_arch()})
    cols += (0 if hide_arch else 1) + 3
    hide_dir = narrow and (cols + 2) * 8 > width

    home = os.path.expanduser("~")
    rows = []
    for r in recs:
        d = r["dir"].replace(home, "~", 1) if r["dir"].startswith(home) else r["dir"]
        cells = {"NAME": r["name"], "STATUS": r["status"],
                 "SSH": f"{r.get('sshAddress', '')}:{r.get('sshLocalPort', 0)}",
                 "VMTYPE": r["vmType"], "ARCH": r["arch"], "CPUS": str(r.get("cpus", 0)),
                 "MEMORY": bytes_size(r.get("memory", 0)),
                 "DISK": bytes_size(r.get("disk", 0)),
                 "DIR": d, "READY": _state_cell(r), "MANAGED": _managed_cell(r),
                 "REASON": r.get("reason") or "-"}
        rows.append(cells)
    names = ["NAME", "STATUS", "SSH", *([] if hide_type else ["VMTYPE"]),
             *([] if hide_arch else ["ARCH"]), "CPUS", "MEMORY", "DISK",
             *([] if hide_dir else ["DIR"])]
    if wide:
        # limapy's own flag (kubectl's `-o wide` idea): Lima's columns and STATUS values
        # stay as they are for scripts (`awk '$2 == "Running"'`); REASON is free text last.
        names += ["READY", "MANAGED", "REASON"]
    elif any("managedBy" in r or r.get("controllerPaused") for r in recs):
        names.append("MANAGED")
    grid = [names, *[[row[n] for n in names] for row in rows]]
    # Go's tabwriter (minwidth 4, padding 4): every cell but the last padded to its column.
    widths = [max(4, *(len(g[i]) + 4 for g in grid)) for i in range(len(names) - 1)]
    return ["".join(c.ljust(w) for c, w in zip(g, widths, strict=False)) + g[-1] for g in grid]


def field_names() -> list[str]:
    """`--list-fields`: Lima's Instance fields, sorted (its deprecated host fields left out)."""
    return sorted(go for go, _, _ in FIELDS)


def run_list(names: tuple[str, ...] | list[str], fmt: str | None = None,
             list_fields: bool = False, as_json: bool = False, quiet: bool = False,
             all_fields: bool = False, yq: tuple[str, ...] = (), filters: tuple[str, ...] = (),
             wide: bool = False, out: Callable[[str], None] | None = None) -> None:
    """`limactl list` with its flags: the verb (lima.commands.listcmd, through click) and
    lima.clifast (plain `limactl list`, without click) both run this. `out` writes to
    stdout (click.echo for the first, sys.stdout for the other)."""
    echo = out or _write
    fmt_given = fmt is not None
    if as_json and fmt_given:
        raise LimaError("option --json conflicts with option --format")
    if list_fields and fmt_given:
        raise LimaError("option --list-fields conflicts with option --format")
    fmt = "json" if as_json else (fmt or "table")
    if yq:
        if fmt_given and fmt not in ("json", "yaml"):
            raise LimaError("option --yq only works with --format json or yaml")
        if list_fields:
            raise LimaError("option --list-fields conflicts with option --yq")
    if filters and list_fields:
        raise LimaError("option --list-fields conflicts with option --filter")
    if quiet and fmt != "table":
        raise LimaError("option --quiet can only be used with '--format table'")
    if wide and (fmt != "table" or yq):
        raise LimaError("option --wide can only be used with '--format table'")
    if list_fields:
        echo("\n".join(field_names()) + "\n")
        return
    for n in names:
        validate_name(n)
    existing = store.instance_names()
    if not names and not existing:
        warn(NO_INSTANCE)
        return
    wanted = list(names) or existing
    unmatched = [n for n in wanted if n not in existing]
    for n in unmatched:
        warn(f"No instance matching {n} found.")
    wanted = [n for n in wanted if n in existing]
    if quiet and not yq and not filters:
        echo("".join(f"{n}\n" for n in wanted))
    else:
        if yq and not fmt_given:
            fmt = "json"  # --yq implies --format json
        _print(echo, wanted, fmt, all_fields, wide, list(filters),
               [*yq, *([".name"] if quiet else [])], quiet)
    if unmatched:
        raise LimaError("unmatched instances")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _print(echo: Callable[[str], None], wanted: list[str], fmt: str, all_fields: bool,
           wide: bool, filters: list[str], yq: list[str], quiet: bool) -> None:
    template = None
    if fmt not in ("json", "yaml", "table"):
        from lima.gotmpl import TemplateError, parse, run

        try:
            template = parse.parse(fmt, run.LIMA_FUNCS)  # refused before anything is read
        except TemplateError as exc:
            raise LimaError(f"invalid go template: {exc}") from None
    from lima.commands import listcache

    listcache.reset()
    recs = [instance_record(n, cached=True) for n in wanted]
    listcache.save(store.instance_names())
    if filters:
        from lima.commands.listyq import keep

        recs = [r for r in recs if keep(r, filters)]
        if quiet and not yq:
            echo("".join(f"{r['name']}\n" for r in recs))
            return
    for r in recs:
        if r.get("errors"):
            warn(f"instance `{r['name']}` has errors",
                 text=f"instance `{r['name']}` has errors: " + "; ".join(r["errors"]),
                 errors=r["errors"])
    tty = fmt == "json" and _output_is_tty()
    if yq:
        from lima.commands.listyq import apply

        echo(apply(recs, " | ".join(yq), fmt, tty))
    elif tty:  # Lima: indented by 4 and coloured on a terminal, JSON Lines elsewhere
        from lima.jsoncolor import pretty

        echo("".join(pretty(r) + "\n" for r in recs))
    elif fmt == "json":
        echo("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                     for r in recs))
    elif fmt == "yaml":
        import yaml

        for r in recs:
            echo("---\n" + yaml.safe_dump(r, sort_keys=False, allow_unicode=True))
    elif fmt == "table":
        if recs:
            echo("\n".join(table(recs, all_fields, wide, _terminal_width())) + "\n")
    else:
        assert template is not None
        _print_template(echo, template, fmt, recs)


def _print_template(echo: Callable[[str], None], template: Any, fmt: str,
                    recs: list[dict[str, Any]]) -> None:
    from lima.gotmpl import TemplateError, run

    for r in recs:
        out: list[str] = []
        data = go_data(r)
        try:
            run.run(template, data, data, out)
        except TemplateError as exc:
            raise LimaError(f'template: format: executing "format": {exc}') from None
        echo("".join(out) + "\n")
