"""The host agent's side of boot templates (lima.drivers.boottemplate): start qemu for a
boot that may pause, loading or saving its template; let the guest go on after each later
pause (a reboot inside it); and, for an agent that attaches, settle a qemu its killed
predecessor left paused or loading."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from lima.drivers import boottemplate, procs, runner, suspend
from lima.drivers.hostagent.events import QEMU_STDERR
from lima.drivers.hostagent.qemuproc import QemuProcess
from lima.errors import LimaError

log = logging.getLogger(__name__)

Start = Callable[[list[str]], runner.Popen[bytes]]


def boot(inst_dir: Path, argv: Sequence[str], start: Start, *,
         resume: bool = False) -> runner.Popen[bytes]:
    """Start qemu with `start`. A boot told to pause loads its boot template when there is
    one, and otherwise boots, the template saved at the pause by a thread that then lets
    the guest go on. A boot that cannot have a template does not pause."""
    argv = list(argv)
    if resume or not boottemplate.pause_boot(argv):
        proc = start(argv)
        if resume and boottemplate.pause_boot(argv):
            # A guest saved after an early pause pauses again when it reboots.
            answer_reboots(inst_dir, argv, lambda: proc.poll() is None)
        return proc
    tpl = boottemplate.plan(argv, inst_dir)
    if tpl is None:  # nothing to save or load: no pause
        return start(boottemplate.without_pause(argv))
    what, kind = ("boot", "early boot template") if tpl.early else (
        "first boot", "boot template")
    if tpl.exists():
        proc = start([*argv, "-incoming", "defer"])
        try:
            took = boottemplate.restore(inst_dir, tpl, lambda: proc.poll() is None)
        except (LimaError, OSError) as exc:
            refused = isinstance(exc, boottemplate.TemplateRefused)
            log.warning("the %s %s could not be loaded (%s)%s; the guest boots", kind,
                        tpl.key, exc, ": it is removed" if refused else "")
            proc.kill()
            proc.wait()
            with contextlib.suppress(OSError):
                if text := (inst_dir / QEMU_STDERR).read_text(errors="replace").strip():
                    log.warning("qemu said: %s", text[-2000:])
            if refused:
                boottemplate.discard(tpl)
            # The guest may have gone on and written to its disk: no pause, no save.
            return start(boottemplate.without_pause(argv))
        log.info("%s loaded from the %s %s in %.2f s", what, kind, tpl.key, took)
        answer_reboots(inst_dir, argv, lambda: proc.poll() is None)
        return proc
    proc = start(argv)

    def pause() -> None:
        # Even when a stop is asked meanwhile: a guest let go shuts down as any other.
        def alive() -> bool:
            return proc.poll() is None

        try:
            said = boottemplate.capture(inst_dir, boottemplate.mac_of(argv), tpl, alive)
        except Exception:  # the boot goes on (the guest's own timeout), unsaved
            log.exception("%s: the %s's capture failed", what, kind)
            return
        log.info("%s: %s", what, said.replace("boot template", kind))
        answer_reboots(inst_dir, argv, alive)

    threading.Thread(target=pause, name="boot-template", daemon=True).start()
    return proc


def answer_reboots(inst_dir: Path, argv: Sequence[str], alive: Callable[[], bool]) -> None:
    """A thread that lets the guest go on after each reboot inside it (its initramfs
    pauses again: boottemplate.answer_reboots)."""
    mac = boottemplate.mac_of(argv)

    def answer() -> None:
        try:
            boottemplate.answer_reboots(inst_dir, mac, alive)
        except Exception:  # a reboot then waits out the guest's own timeout
            log.exception("the thread answering the guest's reboots failed")

    threading.Thread(target=answer, name="boot-template-reboots", daemon=True).start()


def settle_attached(inst_dir: Path, qemu: QemuProcess) -> str:
    """For an agent attaching to `qemu`: continue a guest its killed predecessor left
    paused (a suspend or a template's save cut short), and answer the guest's later
    pauses. Returns an error ("" when none): the qemu never ran the guest (it was still
    loading a template), so it was ended and the next start boots afresh."""
    argv = procs.cmdline(qemu.pid)
    try:
        if suspend.continue_interrupted(inst_dir, pause_boot=boottemplate.pause_boot(argv)):
            log.warning("a suspend was cut short (its host agent was killed): the guest "
                        "goes on running")
    except suspend.LoadCutShort as exc:
        msg = f"the running qemu cannot be attached to: {exc}; it was ended"
        log.error("%s", msg)
        qemu.kill()
        return msg
    except (LimaError, OSError) as exc:
        log.warning("could not check for a suspend cut short: %s", exc)
    if boottemplate.pause_boot(argv):
        answer_reboots(inst_dir, argv, lambda: qemu.poll() is None)
    return ""
