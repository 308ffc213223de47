"""The real Driver: observes an instance from facts and carries out lifecycle Actions.

`lima.controller.reconcile` calls `observe()` and `execute()`; this module wires the
drivers together: the instance store and images (create), cidata + identity + ssh.config
(build cidata), the host agent (boot, which owns qemu and watches ssh and the guest's IID
markers) and its event log (ssh ready, provisioned, running), stop and delete.
The guest's progress is read from the host agent's events: the agent holds the ssh
session that reads /run/lima-ssh-ready and /run/lima-boot-done, so a pass costs no ssh
round-trip.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lima import paths
from lima.drivers import disks, hostagent, procs, store, virtiofs
from lima.drivers.disklayout import disks_present
from lima.drivers.display import hostagent_args as display_hostagent_args
from lima.drivers.display import remove_vnc_files
from lima.drivers.qemu import qemu_command
from lima.errors import LimaError, NotFoundError, PermanentError, SpecError, TemporaryError
from lima.states.actions import (
    Abort,
    Action,
    BuildCidata,
    CreateInstance,
    DeleteInstance,
    DiscardSavedState,
    MarkRunning,
    Outcome,
    ResumeInstance,
    StartHostAgent,
    StopInstance,
    SuspendInstance,
    WaitProvisioned,
    WaitResumed,
    WaitSSH,
)
from lima.states.model import DesiredState, ObservedState

if TYPE_CHECKING:
    from lima.schemas.spec import InstanceSpec

log = logging.getLogger(__name__)

_POLL = 0.05  # reading ha.stdout.log is cheap; progress shows with little lag
_LONG_POLL = 2.0  # the longest one long poll of the host agent waits for a change
QEMU_START_TIMEOUT = 30.0
STOP_TIMEOUT = 90.0
ABORT_TIMEOUT = 20.0  # a failed boot's guest gets this long to power down before a kill


@dataclass(frozen=True)
class AgentProgress:
    """What the host agent's events say about the current boot."""

    alive: bool = False
    ssh_ready: bool = False
    provisioned: bool = False
    running: bool = False
    exited: bool = False
    errors: tuple[str, ...] = ()
    responsive: bool = True
    suspending: bool = False  # the agent saves the guest's state
    resuming: bool = False  # the agent loads a saved state; the guest has not answered yet
    version: int | None = None  # the agent's view's version (for a long poll), if it told


def agent_progress(inst_dir: Path, *, after: int | None = None, wait: float = 0.0
                   ) -> AgentProgress:
    """The boot's progress as the running host agent knows it (`GET /v1/info`: its own view
    from ssh and the guest's IID markers), else folded from ha.stdout.log. With `after` (a
    `version` from before) the agent answers once its view changed, or after `wait` s.

    The agent's answer wins over the log: the log is a file that can be truncated or
    garbled, and a healthy guest must never be rebooted because of that.
    """
    info = hostagent.hostagent_info(inst_dir, timeout=2.0, after=after, wait=wait)
    if info is not None and isinstance(info.get("phase"), str):
        phase = info["phase"]
        running = bool(info.get("running"))
        provisioned = running or phase == "provisioned"
        errs = info.get("errors")
        return AgentProgress(
            alive=True,
            ssh_ready=provisioned or phase == "ssh_ready",
            provisioned=provisioned,
            running=running,
            exited=phase == "exiting",
            errors=tuple(str(e) for e in errs) if isinstance(errs, list) else (),
            responsive=info.get("responsive") is not False,
            suspending=phase == "suspending",
            resuming=phase == "resuming",
            version=version if isinstance(version := info.get("version"), int) else None,
        )
    return events_progress(inst_dir)


def events_progress(inst_dir: Path) -> AgentProgress:
    """Fold ha.stdout.log (truncated at each agent start) into the boot's progress."""
    ssh_ready = provisioned = running = exited = False
    errors: list[str] = []
    for event in hostagent.read_events(inst_dir):
        st = event.get("status", {})
        if not isinstance(st, dict):
            continue
        phase = st.get("phase")
        if phase == "ssh_ready":
            ssh_ready = True
        elif phase == "provisioned":
            ssh_ready = provisioned = True
        if st.get("running"):
            ssh_ready = provisioned = running = True
        if st.get("exiting"):
            exited = True
        errs = st.get("errors")
        # The latest event tells the current errors; the bare `exiting` event that ends
        # every run does not clear why it ended (e.g. qemu's refusal just before it).
        if isinstance(errs, list) and (errs or not st.get("exiting")):
            errors = [str(e) for e in errs]
    return AgentProgress(True, ssh_ready, provisioned, running, exited, tuple(errors))


# qemu prefixes its errors with its program name, or with plain "qemu:" on some paths
# (e.g. "qemu: linux kernel too old to load a ram disk" for a bad -kernel).
_QEMU_REFUSED = re.compile(
    r"qemu exited with status [1-9][0-9]*: .*\bqemu(-system-[\w-]+)?: ")
# Refusals that another attempt can get past: a forwarded port taken between picking it
# and qemu binding it, or a disk still locked by a qemu that is going away.
_QEMU_TRANSIENT = re.compile(r"host forwarding rule|Address already in use|Failed to get .* lock")


def qemu_refused(errors: tuple[str, ...]) -> bool:
    """qemu exited on its own with an error about its configuration (a missing disk, a bad
    option): booting again cannot help, so it is permanent rather than a crash to retry."""
    return any(_QEMU_REFUSED.search(e) and not _QEMU_TRANSIENT.search(e) for e in errors)


def read_cidata_meta(inst_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((inst_dir / paths.CIDATA_META).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pause_word(inst: Path, spec: InstanceSpec, attach: bool,
                data_disks: Sequence[object]) -> str:
    """How this boot may pause for a boot template (lima.drivers.boottemplate): "" not at
    all (attaching, a virtiofs share: QEMU cannot migrate a vhost-user device, templates
    turned off); after cloud-init's import for a first boot (the diffdisk still the
    image's bytes) with no other disk; else early, before any disk is read."""
    from lima.drivers import boottemplate

    virtiofs_shares = spec.mount_type == "virtiofs" and bool(spec.mounts)
    if attach or virtiofs_shares or not boottemplate.enabled():
        return ""
    if not data_disks and boottemplate.pristine(inst / paths.DIFFDISK):
        return boottemplate.PAUSE_WORD
    return boottemplate.EARLY_WORD


def _hostagent_alive(inst_dir: Path) -> bool:
    return procs.hostagent_pid(inst_dir) is not None


def failure_context(inst_dir: Path) -> str:
    """The last lines of serial.log and ha.stderr.log, for a failure message."""
    parts = []
    for name in (paths.SERIAL_LOG, paths.HA_STDERR, hostagent.QEMU_STDERR):
        tail = hostagent.tail_lines(inst_dir / name, 8)
        if tail.strip():
            parts.append(f"--- last lines of {inst_dir / name}:\n{tail}")
    return "\n".join(parts)


def grow_diffdisk(inst: Path, size: int) -> bool:
    """Grow diffdisk to `size` bytes before qemu opens it (`disk:` was raised by apply);
    the guest's cloud-init (growpart, resizefs) grows the root file system at boot. Never
    shrinks: apply refuses that before anything stops. True when it grew."""
    from lima.drivers import runner
    from lima.drivers.disklayout import boot_disk
    from lima.drivers.images.imagecheck import qemu_img_info

    disk = boot_disk(inst)
    if not disk.is_file():
        return False
    info = qemu_img_info(disk)
    current = int(info.get("virtual-size", 0))
    if current <= 0 or size <= current:
        return False
    log.info("%s: growing %s from %d to %d bytes", inst.name, disk, current, size)
    try:
        fmt = str(info.get("format") or "qcow2")  # Lima 2's disk may be raw
        runner.run(["qemu-img", "resize", "-f", fmt, disk.absolute(), str(size)])
    except runner.CommandError as exc:
        raise PermanentError(f"cannot grow {disk} to {size} bytes: {exc}") from exc
    return True


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


class QemuDriver:
    """Driver over real QEMU guests. The lima.yaml text CreateInstance writes comes with
    the desired state (`DesiredState.document`: apply and create know it; other verbs
    never create)."""

    # --- observe ----------------------------------------------------------------------

    def observe(self, name: str) -> ObservedState:
        inst = paths.instance_dir(name)
        if not inst.is_dir():
            return ObservedState()
        meta = read_cidata_meta(inst)
        iid = meta.get("iid") if isinstance(meta.get("iid"), str) else None
        ha_alive = _hostagent_alive(inst)
        qemu_alive = procs.qemu_pid(inst) is not None
        prog = agent_progress(inst) if ha_alive else AgentProgress()
        from lima.drivers import suspend

        saved = suspend.read_saved(inst)
        return ObservedState(
            dir_exists=True,
            has_lima_yaml=(inst / paths.LIMA_YAML).is_file(),
            disks_ready=disks_present(inst),
            cidata_iid=iid,
            hostagent_pid_alive=ha_alive,
            qemu_pid_alive=qemu_alive,
            markers_read=ha_alive,
            ssh_ready_iid=iid if prog.ssh_ready else None,
            boot_done_iid=iid if prog.provisioned else None,
            agent_errors=prog.errors if prog.running else (),
            guest_responsive=prog.responsive,
            saved_generation=str(saved["generation"]) if saved is not None else None,
            # Checked only when it matters: nothing of this instance runs.
            saved_stale=suspend.stale_reason(inst, saved)
            if saved is not None and not (ha_alive or qemu_alive) else "",
            suspending=prog.suspending,
            resuming=prog.resuming,
        )

    # --- execute ----------------------------------------------------------------------

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        try:
            return self._execute(name, action, desired)
        except TemporaryError as exc:
            return Outcome.temporary(str(exc), exc.delay)
        except (PermanentError, SpecError, NotFoundError) as exc:
            return Outcome.failure(str(exc))
        except LimaError as exc:
            return Outcome.temporary(str(exc))

    def _execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        inst = paths.instance_dir(name)
        match action:
            case CreateInstance():
                return self._create(name, desired)
            case BuildCidata(iid=iid):
                return self._build_cidata(name, inst, desired, iid)
            case StartHostAgent(iid=iid, attach=attach):
                return self._start(name, inst, desired, iid, attach=attach)
            case WaitSSH(budget=budget):
                return self._wait(inst, budget, lambda p: p.ssh_ready, "ssh")
            case WaitProvisioned(budget=budget):
                return self._wait(inst, budget, lambda p: p.provisioned, "provisioning")
            case MarkRunning(budget=budget):
                out = self._wait(inst, budget, lambda p: p.running, "the host agent")
                if not out.ok:
                    return out
                return Outcome.success(errors=list(agent_progress(inst).errors))
            case StopInstance(force=force):
                return self._stop(inst, force)
            case SuspendInstance():
                from lima.drivers.suspendop import suspend_instance

                return suspend_instance(inst)
            case ResumeInstance(iid=iid):
                from lima.drivers.suspendop import resume_instance

                spec = desired.spec if desired.spec is not None else _stored_spec(name)
                return resume_instance(name, inst, spec, iid)
            case WaitResumed(budget=budget):
                return self._wait(inst, budget, lambda p: p.provisioned, "the resumed guest")
            case DiscardSavedState(reason=reason):
                from lima.drivers import suspend

                log.warning("%s: %s: the saved state is removed; the instance boots afresh",
                            name, reason)
                suspend.discard(inst)
                return Outcome.success()
            case Abort(reason=reason):
                log.warning("%s: aborting this boot: %s", name, reason)
                # Still a power-down first: a guest is killed only when it does not obey.
                return self._stop(inst, False, timeout=ABORT_TIMEOUT)
            case DeleteInstance():
                if inst.exists():
                    from lima.drivers.postboot import remove_copies_inside

                    remove_copies_inside(inst)
                    store.delete_instance_dir(inst)
                _free_disks(inst)
                return Outcome.success()
        raise PermanentError(f"unknown action {action!r}")

    def _spec(self, desired: DesiredState) -> InstanceSpec:
        if desired.spec is None:
            raise PermanentError("no spec to act on (a bug: the verb must pass it)")
        return desired.spec

    def _create(self, name: str, desired: DesiredState) -> Outcome:
        from lima.drivers.images import prepare_disks
        from lima.drivers.images.repair import repair_disks

        inst = paths.instance_dir(name)
        if (inst / paths.LIMA_YAML).is_file():
            # Disks that went missing are made again only when no data is lost by it; else
            # a PermanentError says what is gone (never a blank disk without a word).
            repair_disks(self._spec(desired), inst)
            return Outcome.success()
        if inst.exists() or inst.is_symlink():
            # Not ours to fill in or replace, and retrying will not change that.
            return Outcome.failure(
                f"{inst} exists but holds no {paths.LIMA_YAML} file, so it is no instance "
                f"limactl can use; look inside, move it away, then apply again")
        text = desired.document
        if text is None:
            return Outcome.failure(f"instance {name!r} does not exist; create it first")
        spec = self._spec(desired)
        store.create_instance(name, text, lambda tmp: prepare_disks(spec, tmp))
        return Outcome.success()

    def _build_cidata(self, name: str, inst: Path, desired: DesiredState, iid: str) -> Outcome:
        from lima.drivers import suspend
        from lima.drivers.cidata import build_cidata
        from lima.drivers.identity import ensure_identity
        from lima.drivers.sshconfig import write_ansible_inventory, write_ssh_config

        spec = self._spec(desired)
        suspend.remove_temp(inst)  # a cold boot: a suspend cut short left it
        identity = ensure_identity()
        build_cidata(spec, inst, iid=iid, identity=identity)
        port = hostagent.pick_ssh_port(spec.ssh.local_port)
        write_ssh_config(spec, inst, port=port, identity=identity)
        write_ansible_inventory(spec, inst)
        meta = {"iid": iid, "sshLocalPort": port}
        store.atomic_write(inst / paths.CIDATA_META, json.dumps(meta))
        if desired.generation:
            # This boot is bound to this spec from here on: it is what `apply` diffs against.
            from lima.drivers.applied import write_applied

            write_applied(inst, desired.generation, dict(spec.raw),
                          document=_read_text(inst / paths.LIMA_YAML))
        return Outcome.success()

    def _start(
        self, name: str, inst: Path, desired: DesiredState, iid: str, *, attach: bool = False
    ) -> Outcome:
        from lima.drivers.images import check_instance_disks

        spec = self._spec(desired)
        if not attach:
            # A damaged or swapped basedisk fails here, permanently, naming the file with
            # qemu-img's words, rather than as a qemu that exits at once and is retried.
            check_instance_disks(inst)
            grow_diffdisk(inst, spec.disk)
        meta = read_cidata_meta(inst)
        port = meta.get("sshLocalPort")
        if meta.get("iid") != iid or not isinstance(port, int):
            return Outcome.temporary("cidata is not built for this boot", retry_after=0)
        if attach and procs.qemu_pid(inst) is None:
            return Outcome.temporary("the qemu to attach to is gone", retry_after=0)
        if not _hostagent_alive(inst):
            (inst / paths.HA_PID).unlink(missing_ok=True)
            if attach:
                log.warning("%s: the host agent is gone while qemu runs; starting one that "
                            "attaches to it (the guest is not rebooted)", name)
            else:
                (inst / paths.QEMU_PID).unlink(missing_ok=True)
            # additionalDisks: locked for this instance (a disk another one holds is
            # refused, naming it) before qemu is given them; freed when the guest is gone.
            data_disks = disks.attach_for_start([d.name for d in spec.additional_disks], inst)
            try:
                # mountType virtiofs: no virtiofsd installed fails here, permanently.
                daemons = [] if attach else virtiofs.daemon_commands(spec, inst)
                hostagent.start_hostagent(
                    name, iid=iid, ssh_port=port, stop_timeout=STOP_TIMEOUT / 2,
                    # The agent need not load the spec before it starts qemu.
                    qemu_argv=qemu_command(spec, inst, port, data_disks,
                                           pause=_pause_word(inst, spec, attach, data_disks)),
                    extra_args=("--ssh-user", spec.user.name, *_resolver_args(spec),
                                *display_hostagent_args(spec)),
                    attach=attach, virtiofsd=daemons,
                )
            except BaseException:
                if procs.qemu_pid(inst) is None:
                    _free_disks(inst)
                raise
        failed = await_qemu(inst)
        if failed is not None:
            return failed
        log.debug("%s: qemu is up (ssh port %d, spec cpus %d)", name, port, spec.cpus)
        return Outcome.success()

    def _wait(
        self, inst: Path, budget: float, done: Callable[[AgentProgress], bool], what: str
    ) -> Outcome:
        deadline = time.monotonic() + max(0.0, budget)
        version: int | None = None
        while True:
            alive = _hostagent_alive(inst)
            # After the first answer, a long poll: the agent answers when its view changes
            # (within _LONG_POLL, so a dead agent's pid is looked at again), and neither
            # side spends the guest's CPU on answers that say nothing new.
            wait = min(_LONG_POLL, max(0.0, deadline - time.monotonic()))
            prog = agent_progress(inst, after=version, wait=wait)
            if done(prog):
                return Outcome.success()
            if not alive or prog.exited:
                why = "; ".join(prog.errors) or "the host agent exited"
                msg = f"{why}\n{failure_context(inst)}"
                if qemu_refused(prog.errors):
                    return Outcome.failure(msg)
                return Outcome.temporary(msg)
            if time.monotonic() >= deadline:
                return Outcome.temporary(f"still waiting for {what}", retry_after=0)
            if prog.version is None or version is None:
                time.sleep(_POLL)  # no long poll yet (or an agent without one)
            version = prog.version

    def _stop(self, inst: Path, force: bool, *, timeout: float = STOP_TIMEOUT) -> Outcome:
        if not inst.is_dir():
            return Outcome.success()
        hostagent.stop_hostagent(inst, timeout=timeout, force=force)
        if procs.qemu_pid(inst) is not None:
            procs.kill_qemu(inst, force=True)
        if _hostagent_alive(inst) or procs.qemu_pid(inst) is not None:
            return Outcome.temporary("the VM is still running after stop")
        _free_disks(inst)
        from lima.drivers import suspend

        suspend.remove_temp(inst)  # a suspend cut short (its qemu killed) left it
        _delete_copies(inst.name)
        remove_vnc_files(inst)  # the host agent does it, unless it was killed
        return Outcome.success()


def _stored_spec(name: str) -> InstanceSpec:
    from lima.schemas import load_instance

    return load_instance(name).spec


def resolver_args(spec: InstanceSpec) -> tuple[str, ...]:
    return _resolver_args(spec)


def await_qemu(inst: Path) -> Outcome | None:
    """Wait for the host agent just started to start qemu: None once qemu.pid is alive,
    else the failure (the agent is killed then)."""
    deadline = time.monotonic() + QEMU_START_TIMEOUT
    while procs.qemu_pid(inst) is None:
        if not _hostagent_alive(inst) or time.monotonic() > deadline:
            prog = agent_progress(inst)
            why = "; ".join(prog.errors) or "qemu did not start"
            hostagent.stop_hostagent(inst, force=True)
            msg = f"{why}\n{failure_context(inst)}"
            if ("qemu-system" in why and "not found" in why) or qemu_refused(prog.errors):
                return Outcome.failure(msg)
            return Outcome.temporary(msg)
        time.sleep(0.05)
    return None


def _resolver_args(spec: InstanceSpec) -> tuple[str, ...]:
    """The host agent's `--host-resolver JSON` when the guest resolves through it."""
    from lima.drivers.hostagent.dns import ResolverConfig
    from lima.drivers.qemu import uses_host_resolver

    if not uses_host_resolver(spec):
        return ()
    config = ResolverConfig(instance=spec.name, hosts=dict(spec.host_resolver_hosts),
                            ipv6=spec.host_resolver_ipv6,
                            forward=not spec.qemu.restrict_network)
    return ("--host-resolver", json.dumps(config.to_json()))


def _free_disks(inst: Path) -> None:
    """Unlock the additionalDisks the stopped (or deleted) instance held."""
    for name in disks.unlock_instance_disks(inst):
        log.info("Unmounting disk `%s`", name)


def _delete_copies(name: str) -> None:
    """copyToHost's deleteOnStop, again: the host agent does it when it shuts down, but one
    that was killed could not. A stored lima.yaml that does not load has nothing to say."""
    from lima.drivers.postboot import delete_on_stop
    from lima.schemas import load_instance

    try:
        spec = load_instance(name).spec
    except LimaError:
        return
    for problem in delete_on_stop(spec):
        log.warning("%s: %s", name, problem)
