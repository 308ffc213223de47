"""Instance verbs: create, list, delete, protect, unprotect.

Reached through `lima.cli`. Every NAME a user gives (or a file name implies) goes through
`lima.names` before anything is read or written, so no verb reaches outside
`$LIMA_HOME/NAME`. `delete` records its request (see lima.controller.lock), then drives the
instance to absent through the reconciler like every verb; its DeleteInstance removes only
what an instance directory is known to hold (`lima.drivers.store.delete_instance_dir`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from lima import paths
from lima.drivers import store
from lima.errors import LimaError, NotFoundError, SpecError
from lima.names import guest_hostname, validate_name

if TYPE_CHECKING:
    from lima.controller.driver import Driver
    from lima.states.actions import Action, Outcome
    from lima.states.model import DesiredState, ObservedState

# How long a delete waits for the instance lock (a converging apply gives up before its
# next pass once the delete's request is recorded), and for the whole delete.
DELETE_LOCK_WAIT = 120.0
DELETE_TIMEOUT = 300.0


def instance_name(name: str | None, locator: str) -> str:
    """`--name` when given (even empty: that is an error, not "use the default"), else the
    name the locator implies; checked either way."""
    if name is not None:
        validate_name(name)
        return name
    from lima import schemas

    derived = schemas.name_from_locator(locator)
    try:
        validate_name(derived)
    except SpecError as exc:
        raise SpecError(f"{exc} (the name comes from {locator!r}; pass --name NAME)") from None
    return derived


def _disk_preparer(spec: Any) -> Any:
    """The disk preparation step of `create` (basedisk, diffdisk, kernel, initrd)."""
    from lima.drivers.images import prepare_disks

    def prepare(tmp: Path) -> None:
        prepare_disks(spec, tmp)

    return prepare


def create_from_locator(
    locator: str, name: str | None, stdin: bytes | None, driver: Driver | None = None
) -> Path:
    """Resolve and validate, then drive the new instance to stopped through the reconciler
    (CreateInstance writes the directory atomically, with its disks). A failed create
    leaves nothing and is not retried: its error is the verb's. `driver` is for tests."""
    from lima import schemas
    from lima.commands.lifecycle import converge
    from lima.controller.lock import Request, write_request
    from lima.drivers.instance import QemuDriver

    name = instance_name(name, locator)
    if paths.instance_dir(name).exists():
        raise LimaError(f"instance {name!r} already exists ({paths.instance_dir(name)})")
    resolved = schemas.resolve(locator, name=name, stdin=stdin)
    for warning in resolved.warnings:
        click.echo(str(warning), err=True)
    text = schemas.dump_yaml(resolved.document.data)
    inst = paths.instance_dir(name)

    def recheck() -> None:
        # Under the lock: another create may have made it while this one resolved.
        if inst.exists():
            raise LimaError(f"instance {name!r} already exists ({inst})")
        # Under the lock, so a create never interrupts an apply of the same name that
        # holds it: it only records what was asked last.
        write_request(name, "stopped", "limactl create")

    req = Request("stopped", os.getpid(), "limactl create", time.time())  # written above
    try:
        converge(name, "stopped", spec=resolved.spec, generation=resolved.generation,
                 verb="create", request=req, before=recheck, wait_lock=False, document=text,
                 driver=_OneShot(driver or QemuDriver()))
    except _Ended as exc:
        raise exc.error from None
    return inst


@click.command()
@click.option("--name", default=None, help="Instance name (default: from the file or template).")
@click.option("--tty/--no-tty", default=False, hidden=True, help="Accepted for Lima compat.")
@click.argument("locator", default="template:default")
def create(name: str | None, tty: bool, locator: str) -> None:
    """Create an instance from FILE, template:NAME or - (stdin)."""
    from lima.schemas.templates import read_stdin

    instance_name(name, locator)  # a bad name is refused before stdin is read
    stdin = read_stdin() if locator == "-" else None
    inst = create_from_locator(locator, name, stdin)
    click.echo(f"Created instance {inst.name!r} in {inst}")
    click.echo(f"Run `limactl start {inst.name}` to start it.", err=True)


def _size(n: int) -> str:
    from lima.schemas.sizes import format_size

    return format_size(n)


def instance_record(name: str) -> dict[str, Any]:
    """One instance as Lima's `list --format json` shows it, from facts."""
    inst_dir = paths.instance_dir(name)
    ins = store.inspect_processes(name, inst_dir)
    rec: dict[str, Any] = {
        "name": name,
        "hostname": guest_hostname(name),
        "status": ins.status,
        "dir": str(inst_dir),
        "vmType": "",
        "arch": "",
        "cpuType": "",
        "cpus": 0,
        "memory": 0,
        "disk": 0,
        "sshLocalPort": 0,
        "sshConfigFile": str(inst_dir / paths.SSH_CONFIG),
        "sshAddress": "127.0.0.1",
        "hostAgentPID": ins.hostagent_pid,
        "driverPID": ins.driver_pid,
        "protected": ins.protected,
        "limaVersion": ins.lima_version,
        "errors": list(ins.errors),
    }
    if (inst_dir / paths.LIMA_YAML).is_file():
        from lima import schemas
        from lima.errors import SpecError

        try:
            spec = schemas.load_instance(name).spec
        except SpecError as exc:
            rec["status"] = store.STATUS_BROKEN
            rec["errors"].extend(str(p) for p in exc.problems)
        else:
            rec.update(
                vmType=spec.vm_type, arch=spec.arch, cpuType=spec.cpu_type, cpus=spec.cpus,
                memory=spec.memory, disk=spec.disk, sshLocalPort=spec.ssh.local_port,
                config=dict(spec.raw),
            )
            if spec.message:
                rec["message"] = spec.message  # rendered below, once the record is complete
    status_file = inst_dir / paths.STATUS_JSON
    if status_file.is_file():
        try:
            st = json.loads(status_file.read_text())
        except (OSError, ValueError):
            st = {}
        if isinstance(st, dict):
            rec["phase"] = st.get("phase", "")
            rec["conditions"] = st.get("conditions", [])
    if rec["status"] == store.STATUS_RUNNING:
        _live_readiness(inst_dir, rec)
        from lima.drivers.instance import read_cidata_meta

        port = read_cidata_meta(inst_dir).get("sshLocalPort")
        if isinstance(port, int) and port:
            rec["sshLocalPort"] = port
    from lima.controller import managed

    rec.update(managed.describe(name))  # managedBy, controllerPaused (limapy's own keys)
    if "conditions" in rec:
        # limapy's own keys, after Lima's (whose order stays as Lima prints it): a summary
        # for scripts that want "is it usable, and if not why" without walking conditions.
        rec["ready"], rec["reason"] = readiness(rec["conditions"])
        if rec["ready"] and rec["status"] != store.STATUS_RUNNING:
            # status.json is as old as the last pass; the pid files are now: a VM that
            # died or was killed since is not Ready, whatever the file still says.
            rec["ready"] = False
            rec["reason"] = f"NotReady (status.json says Ready but the VM is {rec['status']})"
    if rec.get("message"):
        from lima.drivers.message import render
        from lima.gotmpl import TemplateError

        try:
            rec["message"] = render(rec["message"], rec)
        except TemplateError as exc:
            rec["errors"].append(str(exc))  # Lima: the same words (and status Broken)
    # Lima omits these keys when they are zero or empty (`omitempty`).
    for key in ("cpus", "memory", "disk", "sshLocalPort", "hostAgentPID", "driverPID", "errors",
                "message"):
        if not rec.get(key):
            rec.pop(key, None)
    return rec


def _live_readiness(inst_dir: Path, rec: dict[str, Any]) -> None:
    """Ask the host agent, which checks the guest itself: status.json is only as fresh as
    the last command, and a guest that stopped answering since then is not Ready."""
    from lima.drivers.hostagent import hostagent_info

    info = hostagent_info(inst_dir, timeout=1.0)
    if info is None or info.get("responsive") is not False:
        return
    errs = [str(e) for e in info.get("errors") or [] if "does not answer" in str(e)]
    why = errs[0] if errs else "the guest does not answer"
    rec["errors"].append(why)
    conds = [c for c in rec.get("conditions", []) if c.get("type") != "Ready"]
    conds.append({"type": "Ready", "status": "False", "reason": "GuestUnresponsive",
                  "message": why})
    rec["conditions"] = conds


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


_COLUMNS = ("NAME", "STATUS", "SSH", "VMTYPE", "ARCH", "CPUS", "MEMORY", "DISK", "DIR")
# `--wide` only (limapy's own flag; kubectl's `-o wide` idea). Lima's table is parsed by
# scripts (`awk '$2 == "Running"'`, `tail -n +2 | cut`), so the default keeps Lima's columns
# and STATUS values exactly: "Running (Degraded)" would break `$2 == "Running"`, and Lima's
# `--all-fields` already means "hide no column on a narrow terminal", not "more columns".
# REASON is free text with spaces, so it comes last.
_WIDE_COLUMNS = ("READY", "MANAGED", "REASON")


def _table_row(rec: dict[str, Any]) -> list[str]:
    ssh = f"127.0.0.1:{rec.get('sshLocalPort', 0)}"
    home = str(Path.home())
    d = rec["dir"]
    if d.startswith(home + "/"):
        d = "~" + d[len(home):]
    return [
        rec["name"], rec["status"], ssh, rec["vmType"], rec["arch"], str(rec.get("cpus", 0)),
        _size(rec.get("memory", 0)) if rec.get("memory") else "0B",
        _size(rec.get("disk", 0)) if rec.get("disk") else "0B", d,
    ]


def _managed_cell(rec: dict[str, Any]) -> str:
    by = str(rec.get("managedBy", ""))
    if rec.get("controllerPaused"):
        return f"{by} (paused)" if by else "paused"
    return by or "-"


@click.command(name="list")
@click.argument("names", nargs=-1)
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json", "yaml"]),
              default="table", help="Output format.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--quiet", "-q", is_flag=True, help="Only show names.")
@click.option("--wide", "-w", is_flag=True,
              help="Add READY, MANAGED and REASON columns to the table (limapy's own).")
@click.option("--all-fields", is_flag=True,
              help="Accepted for Lima compat: no column is ever hidden here.")
def list_(names: tuple[str, ...], fmt: str, as_json: bool, quiet: bool, wide: bool,
          all_fields: bool) -> None:
    """List instances (`--wide`: also readiness and the reason when not Ready)."""
    if as_json:
        fmt = "json"
    for n in names:
        validate_name(n)
    existing = store.instance_names()
    wanted = list(names) or existing
    unknown = [n for n in wanted if n not in existing]
    wanted = [n for n in wanted if n in existing]
    if quiet:
        for n in wanted:
            click.echo(n)
    elif fmt == "json":
        for n in wanted:
            click.echo(json.dumps(instance_record(n)))
    elif fmt == "yaml":
        docs = [instance_record(n) for n in wanted]
        click.echo(yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True), nl=False)
    elif not wanted and not unknown:
        click.echo("No instance found. Run `limactl create` to create an instance.", err=True)
    elif wanted:
        recs = [instance_record(n) for n in wanted]
        cols = list(_COLUMNS)
        rows = [_table_row(rec) for rec in recs]
        if wide:
            cols.extend(_WIDE_COLUMNS)
            for row, rec in zip(rows, recs, strict=True):
                row.extend([_state_cell(rec), _managed_cell(rec), rec.get("reason") or "-"])
        elif any("managedBy" in rec or rec.get("controllerPaused") for rec in recs):
            # Only then: Lima's columns stay as they are for everyone else's scripts.
            cols.append("MANAGED")
            for row, rec in zip(rows, recs, strict=True):
                row.append(_managed_cell(rec))
        rows = [cols, *rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        for r in rows:
            click.echo("    ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if unknown:
        raise NotFoundError("unmatched instances: " + ", ".join(unknown))


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Stop the instance first if it is running.")
def delete(names: tuple[str, ...], force: bool) -> None:
    """Delete instances (what limactl put in their directory; other files are kept)."""
    for name in names:
        validate_name(name)
    for name in names:
        _delete_one(name, force)


def _running_pids(inst_dir: Path) -> str:
    """"host agent PID N, qemu PID M" for what of the instance runs, "" when nothing does."""
    ins = store.inspect_processes(inst_dir.name, inst_dir)
    parts = [f"host agent PID {ins.hostagent_pid}"] if ins.hostagent_pid else []
    parts += [f"qemu PID {ins.driver_pid}"] if ins.driver_pid else []
    return ", ".join(parts)


def _refuse_managed(name: str) -> None:
    """A controller would create a deleted managed instance again (with an empty disk)."""
    from lima.controller import managed

    managed.refuse_if_managed(
        name, undone_by="create it again",
        advice=f"run `limactl controller pause {name}` first, or remove its file from the"
        " folder (the controller prunes it by its --prune policy)")


class _Ended(Exception):
    """A create or delete that failed, carried out of the reconciler as it is: these
    one-shot verbs do not retry (as before), and a Stalled status would be written into
    a directory kept for the user."""

    def __init__(self, error: LimaError) -> None:
        super().__init__(str(error))
        self.error = error


class _OneShot:
    """`create`'s and `delete`'s driver: `inner` for every step, except that a failed
    CreateInstance, or the safe delete's refusal (entries limactl did not make, not an
    instance directory), ends the verb at once with its own message."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner

    def observe(self, name: str) -> ObservedState:
        return self.inner.observe(name)

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        from lima.states.actions import CreateInstance, DeleteInstance, Outcome

        if isinstance(action, CreateInstance):
            out = self.inner.execute(name, action, desired)
            if not out.ok:
                raise _Ended(LimaError(out.error or "the instance could not be created"))
            return out
        if not isinstance(action, DeleteInstance):
            return self.inner.execute(name, action, desired)
        try:
            from lima.drivers.postboot import remove_copies_inside

            remove_copies_inside(paths.instance_dir(name))  # copyToHost files are ours
            store.delete_instance_dir(paths.instance_dir(name))
        except LimaError as exc:
            raise _Ended(exc) from None
        except OSError as exc:
            raise _Ended(LimaError(f"instance {name!r} could not be deleted: {exc}")) from None
        from lima.controller import managed

        managed.remove_logs(name)  # a controller's decision lines go with the instance
        return Outcome.success()


def _delete_one(name: str, force: bool, driver: Driver | None = None) -> None:
    """Refuse what must not be deleted, then drive the instance to absent through the
    reconciler under the lock (per pass): StopInstance(force=True) when running (-f),
    then DeleteInstance (the safe delete). `driver` is for tests."""
    from lima.commands.lifecycle import FORCE_LOCK_WAIT
    from lima.controller.lock import write_request

    inst_dir = store.require_instance(name)
    _refuse_managed(name)
    store.require_deletable(inst_dir)
    if store.is_protected(inst_dir):
        raise LimaError(f"instance {name!r} is protected (run `limactl unprotect {name}` first)")
    if _running_pids(inst_dir) and not force:
        raise LimaError(f"instance {name!r} is running; stop it first or use `limactl delete -f`")
    # Recorded before the lock is awaited: an apply holding it gives up at its next pass.
    req = write_request(name, "absent", "limactl delete -f" if force else "limactl delete")

    def recheck() -> None:
        # Under the lock, before the first pass: what may have changed while we waited.
        inst = store.require_instance(name)
        if store.is_protected(inst):
            raise LimaError(f"instance {name!r} was protected meanwhile; not deleted")
        running = _running_pids(inst)
        if running and not force:
            raise LimaError(f"instance {name!r} is still running ({running}): it was started"
                            " meanwhile; nothing was deleted")

    drive_absent(name, timeout=DELETE_TIMEOUT, verb="delete", request=req, before=recheck,
                 lock_timeout=FORCE_LOCK_WAIT if force else DELETE_LOCK_WAIT, driver=driver)
    click.echo(f"Deleted {name!r} ({inst_dir})")


def drive_absent(name: str, *, timeout: float, verb: str, driver: Driver | None = None,
                 **kwargs: Any) -> None:
    """`lifecycle.converge(name, "absent")` with the one-shot driver: the safe delete's
    refusal (entries limactl did not make) ends the verb at once with its own message,
    never retried until the timeout. `kwargs` go to converge (request, before, ...)."""
    from lima.commands.lifecycle import converge
    from lima.drivers.instance import QemuDriver

    try:
        converge(name, "absent", spec=None, generation="", timeout=timeout, verb=verb,
                 driver=_OneShot(driver or QemuDriver()), **kwargs)
    except _Ended as exc:
        raise exc.error from None


def _set_protected(names: tuple[str, ...], protected: bool) -> None:
    for name in names:
        validate_name(name)
    for name in names:
        inst_dir = store.require_instance(name)
        marker = inst_dir / paths.PROTECTED
        if protected:
            marker.touch()
            click.echo(f"Protected {name!r}")
        else:
            marker.unlink(missing_ok=True)
            click.echo(f"Unprotected {name!r}")


@click.command()
@click.argument("names", nargs=-1, required=True)
def protect(names: tuple[str, ...]) -> None:
    """Protect instances from deletion."""
    _set_protected(names, True)


@click.command()
@click.argument("names", nargs=-1, required=True)
def unprotect(names: tuple[str, ...]) -> None:
    """Allow deleting instances again."""
    _set_protected(names, False)
