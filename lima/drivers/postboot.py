"""What the host agent does once the guest's boot scripts are done, in Lima's order:
readiness probes, copyToHost, then `mode: ansible` playbooks; and deleteOnStop at stop.

Called by the host agent's guest (lima.commands.hostagent: `after_boot` once
/run/lima-boot-done or -failed holds this boot's IID, `delete_on_stop` when it shuts
down) and by the driver's stop (lima.drivers.instance), for an agent that died. Every
problem comes back as one line for the instance's Degraded condition, naming the step.

Probes wait as long as Lima's host agent waits for a requirement: retried every
LIMAPY_PROBE_INTERVAL seconds (3) for up to LIMAPY_PROBE_TIMEOUT seconds (600: Lima's 200
attempts) each, all of them together within lima.states.policy.POSTBOOT_BUDGET from the
end of the boot scripts, so that the Degraded report (the probe's description and hint)
comes before the provisioned phase's deadline. After a failed provisioning each probe is
tried once, as the instance is Degraded anyway. Ansible gets what is left of that budget.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko

from lima import paths
from lima.drivers import runner
from lima.drivers.cloudconfig import provision_label
from lima.drivers.guest import BOOT_FAILED_MARKER
from lima.drivers.ssh import read_marker
from lima.errors import LimaError, TemporaryError
from lima.fsutil import atomic_write
from lima.schemas.spec import InstanceSpec, Probe
from lima.states.policy import POSTBOOT_BUDGET, PROBE_BUDGET, PROBE_INTERVAL, REPORT_MARGIN
from lima.states.policy import probe_budget as _probe_budget

log = logging.getLogger(__name__)

PROBE_TIMEOUT_ENV = "LIMAPY_PROBE_TIMEOUT"
PROBE_INTERVAL_ENV = "LIMAPY_PROBE_INTERVAL"
_TAIL = 5


def after_boot(
    client: paramiko.SSHClient, spec: InstanceSpec, inst_dir: Path, iid: str,
    stop: threading.Event | None = None, *, started: float | None = None,
    boot_failed: bool | None = None,
) -> list[str]:
    """Probes, copyToHost, ansible; the problems found (empty: all went well).

    `started`: time.monotonic() when the boot scripts were found done (default: now); the
    budgets count from it. `boot_failed`: what readiness read of boot.sh's outcome (None:
    read /run/lima-boot-failed again).
    """
    stop = stop or threading.Event()
    started = time.monotonic() if started is None else started
    failed = _boot_failed(client, iid) if boot_failed is None else boot_failed
    errors = run_probes(client, spec, stop, retry=not failed, started=started)
    errors += copy_to_host(client, spec)
    left = POSTBOOT_BUDGET - (time.monotonic() - started)
    errors += run_ansible(spec, inst_dir, timeout=max(REPORT_MARGIN / 2, left))
    return errors


def _boot_failed(client: paramiko.SSHClient, iid: str) -> bool:
    try:
        text = read_marker(client, BOOT_FAILED_MARKER)
    except TemporaryError:
        return False
    return text is not None and text.splitlines()[:1] == [iid]


def _env_float(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def output_tail(text: str, lines: int = _TAIL) -> str:
    """The last non-empty lines of `text` on one line ("a | b"), each cut to 160 chars."""
    kept = [line.strip()[:160] for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


# --- probes ---------------------------------------------------------------------------


def script_command(params: Mapping[str, str]) -> str:
    """The guest command that runs a script sent on stdin, with PARAM_* set, by its `#!`
    line (the kernel reads it): a temporary file, removed afterwards."""
    env = " ".join(f"PARAM_{k}={shlex.quote(v)}" for k, v in sorted(params.items()))
    return ('f=$(mktemp) && cat >"$f" && chmod 700 "$f" && '
            f'env {env} "$f"; rc=$?; rm -f "$f"; exit $rc').replace("env  ", "env ")


def probe_timeout(started: float, now: float, *, retry: bool = True) -> float:
    """How long the next probe may be retried: LIMAPY_PROBE_TIMEOUT (Lima's 600 s), cut
    to what is left of the post-boot budget counted from `started` (monotonic seconds)."""
    if not retry:
        return 0.0
    return _probe_budget(now - started, _env_float(PROBE_TIMEOUT_ENV, PROBE_BUDGET))


def run_probes(
    client: paramiko.SSHClient, spec: InstanceSpec, stop: threading.Event, *,
    retry: bool = True, started: float | None = None,
) -> list[str]:
    started = time.monotonic() if started is None else started
    interval = _env_float(PROBE_INTERVAL_ENV, PROBE_INTERVAL)
    errors = []
    for i, probe in enumerate(spec.probes):
        timeout = probe_timeout(started, time.monotonic(), retry=retry)
        error = _probe(client, spec, probe, i, timeout, interval, stop)
        if error:
            errors.append(error)
    return errors


def _probe(
    client: paramiko.SSHClient, spec: InstanceSpec, probe: Probe, index: int,
    timeout: float, interval: float, stop: threading.Event,
) -> str | None:
    deadline = time.monotonic() + timeout
    what = f"probe {index + 1} of {len(spec.probes)} ({probe.description!r})"
    log.info("waiting for %s", what)
    attempts = 0
    while True:
        attempts += 1
        try:
            rc, out, err = _exec(client, script_command(spec.param), probe.script.encode(),
                                 timeout=max(10.0, min(120.0, deadline - time.monotonic())))
            detail = output_tail(err.decode(errors="replace") or out.decode(errors="replace"))
        except TemporaryError as exc:
            rc, detail = -1, str(exc)
        if rc == 0:
            log.info("%s passed", what)
            return None
        if stop.is_set() or time.monotonic() + interval > deadline:
            break
        stop.wait(interval)
    hint = " ".join(probe.hint.split())
    status = f"exit {rc}" if rc >= 0 else "not run"
    msg = f"{what} failed ({status}, {attempts} attempt{'s' if attempts > 1 else ''})"
    if hint:
        msg += f": hint: {hint}"
    if detail:
        msg += f"; last output: {detail}"
    log.warning("%s", msg)
    return msg


def _exec(
    client: paramiko.SSHClient, command: str, stdin: bytes = b"", *, timeout: float
) -> tuple[int, bytes, bytes]:
    """Run `command` in the guest with `stdin`: (status, stdout, stderr) as bytes."""
    from lima.drivers.ssh import run_bytes

    return run_bytes(client, command, timeout=timeout, input=stdin or None)


# --- copyToHost -----------------------------------------------------------------------


def copy_rules(spec: InstanceSpec) -> list[dict[str, Any]]:
    rules = spec.raw.get("copyToHost")
    return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []


def copy_to_host(client: paramiko.SSHClient, spec: InstanceSpec) -> list[str]:
    """Copy each copyToHost guest file to its host path (0600, in a 0700 directory made
    when missing; a symlink at the destination is replaced, never followed)."""
    errors = []
    for i, rule in enumerate(copy_rules(spec)):
        guest, host = str(rule.get("guest") or ""), str(rule.get("host") or "")
        where = f"copyToHost[{i}] ({guest} -> {host})"
        try:
            rc, data, err = _exec(client, f"cat -- {shlex.quote(guest)}", timeout=60)
            if rc != 0 and "Permission denied" in err.decode(errors="replace"):
                rc, data, err = _exec(client, f"sudo cat -- {shlex.quote(guest)}", timeout=60)
        except TemporaryError as exc:
            errors.append(f"{where}: {exc}")
            continue
        message = output_tail(err.decode(errors="replace"), 2)
        if rc != 0:
            if "No such file" in message and rule.get("skipIfMissing"):
                log.info("%s: the guest file is missing; skipped", where)
                continue
            errors.append(f"{where}: cannot read the guest file: {message or f'exit {rc}'}")
            continue
        try:
            _write_host_file(Path(host), data)
        except OSError as exc:
            errors.append(f"{where}: cannot write the host file: {exc.strerror or exc}")
            continue
        log.info("copied %s to %s", guest, host)
    return errors


def _write_host_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, data, mode=0o600)  # a rename: a symlink there is replaced, not followed


def delete_on_stop(spec: InstanceSpec) -> list[str]:
    """Remove the host copies of the rules with deleteOnStop; the problems found."""
    errors = []
    for i, rule in enumerate(copy_rules(spec)):
        host = str(rule.get("host") or "")
        if not rule.get("deleteOnStop") or not host:
            continue
        path = Path(host)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            log.info("deleted %s (copyToHost[%d].deleteOnStop)", host, i)
        except OSError as exc:
            errors.append(f"copyToHost[{i}]: cannot delete {host}: {exc.strerror or exc}")
    return errors


def remove_copies_inside(inst: Path) -> None:
    """copyToHost files limactl wrote inside the instance directory ({{.Dir}}/..., as
    Lima's k3s template does), and the directories left empty by that: they are limactl's,
    so a delete removes them rather than keeping the directory for them."""
    from lima.schemas import load_instance

    try:
        spec = load_instance(inst.name).spec
    except LimaError:
        return
    root = inst.resolve()
    for rule in copy_rules(spec):
        given = Path(str(rule.get("host") or ""))
        if not given.is_absolute():
            continue
        host = Path(os.path.realpath(given.parent)) / given.name
        if root not in host.parents or host.is_dir():
            continue
        host.unlink(missing_ok=True)
        for parent in host.parents:
            if parent == root:
                break
            try:
                parent.rmdir()
            except OSError:
                break


# --- ansible (deprecated in Lima, still run) ---------------------------------------------


def run_ansible(spec: InstanceSpec, inst_dir: Path, *, timeout: float = POSTBOOT_BUDGET
                ) -> list[str]:
    """ansible-playbook -i <inst>/ansible-inventory.yaml PLAYBOOK for each ansible step,
    with PARAM_* in its environment (as Lima). Not installed: a clear error per step.
    All steps together get `timeout` seconds."""
    steps = [(i, p) for i, p in enumerate(spec.provision) if p.mode == "ansible"]
    if not steps:
        return []
    errors = []
    env = {f"PARAM_{k}": v for k, v in spec.param.items()}
    deadline = time.monotonic() + timeout
    for i, p in steps:
        label = provision_label(p, i)
        if shutil.which("ansible-playbook") is None:
            errors.append(f"{label}: not run: ansible-playbook is not installed on the host "
                          "(Debian package ansible-core)")
            continue
        log.info("running %s", label)
        argv = ["ansible-playbook", "-i", str(inst_dir / paths.ANSIBLE_INVENTORY),
                str(p.playbook)]
        try:
            res = runner.run(argv, check=False, env=env,
                             timeout=max(1.0, deadline - time.monotonic()))
        except runner.CommandError as exc:
            errors.append(f"{label}: {exc}")
            continue
        if res.returncode != 0:
            tail = ansible_failure(res.stdout, res.stderr)
            errors.append(f"{label}: exit {res.returncode}" + (f"; last output: {tail}"
                                                               if tail else ""))
    return errors


def ansible_failure(stdout: str, stderr: str) -> str:
    """What ansible-playbook said about its failure: its `fatal:`/`failed:`/`ERROR!` lines
    (the failing task's result, the playbook it could not read), else its last lines."""
    text = stdout + "\n" + stderr
    said = [line for line in text.splitlines()
            if line.strip().startswith(("fatal:", "failed:", "ERROR!"))]
    return output_tail("\n".join(said) if said else text, 3)
