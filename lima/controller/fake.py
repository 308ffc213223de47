"""FakeDriver: an in-memory instance for component tests of the reconciler.

It implements the Driver protocol on a FakeClock: a boot takes `ssh_delay` then
`provision_delay` fake seconds, wait steps "block" by advancing the clock, and failures are
injected by setting attributes (ssh flakes or never comes up, qemu dies, provisioning fails,
a disk digest mismatch). Suspend saves the VM as `saved_generation` (the generation the
boot was built from), resume brings the same boot back in `resume_delay` seconds, and
`saved_stale` makes the saved state unusable, as a changed qemu or disk would. The only
thing it puts on disk is the empty instance directory under $LIMA_HOME, so the real
StatusStore can keep status.json there.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from lima import paths
from lima.controller.clock import FakeClock
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


@dataclass
class FakeVM:
    created: bool = False
    cidata_iid: str | None = None
    qemu_alive: bool = False
    agent_alive: bool = False
    booted_iid: str | None = None
    boot_started: float = 0.0
    boots: int = 0
    attaches: int = 0  # host agents started for a qemu that kept running
    generation: str | None = None  # of the spec the current boot was built from
    saved_generation: str | None = None  # a complete saved state (suspended)
    resumes: int = 0
    resumed_at: float = 0.0  # when the resumed guest answers again


@dataclass
class FakeDriver:
    clock: FakeClock
    ssh_delay: float = 5.0  # qemu start -> /run/lima-ssh-ready
    provision_delay: float = 10.0  # ssh ready -> /run/lima-boot-done
    stop_delay: float = 1.5  # QMP system_powerdown -> qemu gone
    # Failure injection.
    ssh_flakes: int = 0  # the next N WaitSSH calls fail with "connection refused"
    ssh_never: bool = False  # sshd never comes up
    provision_error: str | None = None  # boot.sh reports this failure
    digest_mismatch: bool = False  # CreateInstance fails permanently
    qemu_dies_after: float | None = None  # qemu exits this long after each boot starts
    agent_errors: tuple[str, ...] = ()
    suspend_delay: float = 0.5  # QMP stop + migrate to the file + quit
    resume_delay: float = 1.0  # qemu -incoming + load + cont -> ssh answers
    saved_stale: str = ""  # the saved state no longer matches qemu or the disks
    vms: dict[str, FakeVM] = field(default_factory=dict)
    executed: list[Action] = field(default_factory=list)

    # --- test helpers -----------------------------------------------------------------
    def vm(self, name: str) -> FakeVM:
        return self.vms.setdefault(name, FakeVM())

    def kill_qemu(self, name: str, *, agent_too: bool = True) -> None:
        """As if qemu were killed -9 (the host agent notices and exits, unless agent_too=False)."""
        vm = self.vm(name)
        vm.qemu_alive = False
        if agent_too:
            vm.agent_alive = False

    def kill_agent(self, name: str) -> None:
        """As if the host agent were killed -9: qemu keeps running, unwatched."""
        self.vm(name).agent_alive = False

    # --- Driver -------------------------------------------------------------------------
    def observe(self, name: str) -> ObservedState:
        if not paths.instance_dir(name).is_dir():
            return ObservedState()  # as the real driver: no directory, no other facts
        vm = self.vm(name)
        self._tick(vm)
        ssh_at, done_at = self._ready_times(vm)
        now = self.clock.now()
        # As the real driver: the guest's markers are known only through its live host
        # agent (it holds the ssh session); without one they read as absent.
        alive = vm.qemu_alive and vm.agent_alive
        resuming = alive and vm.resumes > 0 and now < vm.resumed_at
        ssh_ready = alive and not self.ssh_never and now >= ssh_at and not resuming
        boot_done = ssh_ready and now >= done_at
        return ObservedState(
            dir_exists=True,
            has_lima_yaml=vm.created,
            disks_ready=vm.created,
            cidata_iid=vm.cidata_iid,
            hostagent_pid_alive=vm.agent_alive,
            qemu_pid_alive=vm.qemu_alive,
            markers_read=vm.agent_alive,
            # As the real driver: the markers are read for the IID of the current cidata
            # (the host agent was started with it); decide() never rebuilds cidata under a
            # live qemu, so this is the booted IID whenever it matters.
            ssh_ready_iid=vm.cidata_iid if ssh_ready else None,
            boot_done_iid=vm.cidata_iid if boot_done else None,
            # As the real host agent: errors are reported once the boot runs (a failed
            # provisioning script among them), and only by a live agent.
            agent_errors=self._running_errors() if boot_done else (),
            saved_generation=vm.saved_generation,
            saved_stale=self.saved_stale if vm.saved_generation is not None else "",
            resuming=resuming,
        )

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        self.executed.append(action)
        vm = self.vm(name)
        self._tick(vm)
        match action:
            case CreateInstance():
                if self.digest_mismatch:
                    return Outcome.failure("basedisk: sha256 digest mismatch (image changed?)")
                inst = paths.instance_dir(name)
                inst.mkdir(parents=True, exist_ok=True)
                if desired.document is not None and not (inst / paths.LIMA_YAML).exists():
                    (inst / paths.LIMA_YAML).write_text(desired.document)  # as QemuDriver
                vm.created = True
                return Outcome.success()
            case BuildCidata(iid=iid):
                vm.cidata_iid, vm.generation = iid, desired.generation
                return Outcome.success()
            case SuspendInstance():
                if not vm.qemu_alive:
                    return Outcome.failure("the instance is not running")
                self.clock.sleep(self.suspend_delay)
                vm.qemu_alive = vm.agent_alive = False
                vm.saved_generation = vm.generation or ""
                return Outcome.success()
            case ResumeInstance():
                if vm.saved_generation is None:
                    return Outcome.temporary("there is no saved state to resume")
                vm.qemu_alive = vm.agent_alive = True
                vm.saved_generation = None
                vm.resumes += 1
                # The same boot, back: its markers are there once the guest answers.
                ready_at = self.clock.now() + self.resume_delay
                vm.boot_started = ready_at - self.ssh_delay - self.provision_delay
                vm.boot_started = max(vm.boot_started, 0.0)
                vm.resumed_at = ready_at
                return Outcome.success()
            case WaitResumed(budget=budget):
                wait = vm.resumed_at - self.clock.now()
                if wait > budget:
                    self.clock.sleep(budget)
                    return Outcome.temporary("not resumed yet", retry_after=0.0)
                self.clock.sleep(max(0.0, wait))
                return Outcome.success()
            case DiscardSavedState():
                vm.saved_generation = None
                return Outcome.success()
            case StartHostAgent(attach=True):
                if not vm.qemu_alive:
                    return Outcome.temporary("the qemu to attach to is gone", retry_after=0)
                vm.agent_alive = True
                vm.attaches += 1
                return Outcome.success()
            case StartHostAgent():
                if vm.qemu_alive:
                    return Outcome.temporary("qemu is already running")
                vm.qemu_alive = vm.agent_alive = True
                vm.booted_iid, vm.boot_started = vm.cidata_iid, self.clock.now()
                vm.boots += 1
                return Outcome.success()
            case WaitSSH(iid=iid, budget=budget):
                if self.ssh_flakes > 0:
                    self.ssh_flakes -= 1
                    self.clock.sleep(min(budget, 1.0))
                    return Outcome.temporary("ssh: connection refused")
                return self._wait_until(vm, iid, budget, self._ready_times(vm)[0], "ssh")
            case WaitProvisioned(iid=iid, budget=budget):
                return self._wait_until(vm, iid, budget, self._ready_times(vm)[1], "boot-done")
            case MarkRunning():
                return Outcome.success(errors=list(self._running_errors()))
            case StopInstance(force=force):
                if vm.qemu_alive and not force:
                    self.clock.sleep(self.stop_delay)
                vm.qemu_alive = vm.agent_alive = False
                return Outcome.success()
            case Abort():
                vm.qemu_alive = vm.agent_alive = False
                return Outcome.success()
            case DeleteInstance():
                shutil.rmtree(paths.instance_dir(name), ignore_errors=True)
                self.vms.pop(name, None)
                return Outcome.success()
        raise AssertionError(f"FakeDriver: unknown action {action!r}")  # pragma: no cover

    # --- internals ----------------------------------------------------------------------
    def _running_errors(self) -> tuple[str, ...]:
        """What the real host agent reports once running: "provisioning failed: ..." for
        a guest that wrote /run/lima-boot-failed, then its other errors."""
        failed = (f"provisioning failed: {self.provision_error}",) if self.provision_error else ()
        return failed + self.agent_errors

    def _ready_times(self, vm: FakeVM) -> tuple[float, float]:
        ssh_at = vm.boot_started + self.ssh_delay
        return ssh_at, ssh_at + self.provision_delay

    def _tick(self, vm: FakeVM) -> None:
        """Let scheduled deaths happen."""
        if (
            vm.qemu_alive
            and self.qemu_dies_after is not None
            and self.clock.now() >= vm.boot_started + self.qemu_dies_after
        ):
            vm.qemu_alive = vm.agent_alive = False

    def _wait_until(self, vm: FakeVM, iid: str, budget: float, at: float, what: str) -> Outcome:
        if not vm.qemu_alive:
            return Outcome.temporary(f"{what}: qemu is not running")
        if vm.booted_iid != iid:
            return Outcome.temporary(f"{what}: the guest runs {vm.booted_iid}, not {iid}")
        never = self.ssh_never
        if not never:
            death = (
                vm.boot_started + self.qemu_dies_after
                if self.qemu_dies_after is not None
                else float("inf")
            )
            wake = min(at, death)
            if wake - self.clock.now() <= budget:
                self.clock.sleep(wake - self.clock.now())
                self._tick(vm)
                if vm.qemu_alive:
                    return Outcome.success()
                return Outcome.temporary(f"{what}: qemu exited")
        self.clock.sleep(budget)
        self._tick(vm)
        if not vm.qemu_alive:
            return Outcome.temporary(f"{what}: qemu exited")
        return Outcome.temporary(f"{what}: not up yet after {budget:.0f} s", retry_after=0.0)
