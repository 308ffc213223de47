"""Pick QEMU's accelerator: KVM only when it really runs a guest here, else TCG.

The host agent calls `detect_accel(arch)` before `qemu_argv(...)`. "/dev/kvm exists" is
not enough (nested virtualization: QEMU may abort with "failed to set MSR 0x10a", or a
guest may hang with "KVM internal error"), so the answer comes from a real probe: QEMU
boots a 64 KiB firmware we generate, which writes "R" to the serial port in real mode,
"P" after switching to protected mode and "L" in long mode, then exits through
isa-debug-exit. KVM works iff "RPL" arrives before a 3 s deadline; the probe is killed
by its PID at the deadline, so this never hangs. The answer is cached per host in
cache_dir()/accel.json; LIMA_QEMU_ACCEL=kvm|tcg (or `force`) skips the probe.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lima.drivers import runner
from lima.drivers.qemu import binary_accel, qemu_arch, qemu_binary
from lima.errors import PermanentError
from lima.fsutil import atomic_write
from lima.paths import cache_dir
from lima.schemas.arch import host_arch

log = logging.getLogger(__name__)

ENV_FORCE = "LIMA_QEMU_ACCEL"
ACCELS = ("kvm", "tcg")
KVM_DEVICE = Path("/dev/kvm")
PROBE_DEADLINE = 3.0  # seconds; a working KVM answers in well under 0.1 s
_CACHE_FILE = "accel.json"

# (qemu binary argv, cpu model) -> (KVM works, reason)
ProbeFn = Callable[[Sequence[str], str], tuple[bool, str]]


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" | "tcg"
    reason: str  # why: "forced by ...", "KVM probe passed", "failed to set MSR 0x10a", ...
    cached: bool = False


def _host_arch() -> str:  # a seam: tests pretend to run on another host
    return host_arch()


def _kvm_device_problem() -> str | None:
    """Why /dev/kvm cannot be used at all, or None when it exists and is read-write."""
    if not KVM_DEVICE.exists():
        return f"{KVM_DEVICE} does not exist"
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return f"no read-write access to {KVM_DEVICE} (join the kvm group)"
    return None


def detect_accel(
    arch: str,
    *,
    force: str | None = None,
    binary: Sequence[str] | None = None,
    cpu: str = "host",
    probe: ProbeFn | None = None,
) -> Accel:
    """The accelerator to run `arch` guests with on this host.

    Order: `force` (e.g. from vmOpts) > $LIMA_QEMU_ACCEL > an accelerator in the
    QEMU_SYSTEM_* extra arguments > TCG for a foreign arch or an unusable /dev/kvm >
    the cached probe result > a fresh probe (with `cpu`, the model the driver will use).
    """
    for value, origin in ((force, "the instance settings"), (os.environ.get(ENV_FORCE), ENV_FORCE)):
        if value:
            name = value.strip().lower()
            if name not in ACCELS:
                raise PermanentError(f"{origin}: accelerator must be kvm or tcg, not {value!r}")
            return Accel(name, f"forced by {origin}")
    if binary is None:
        binary = qemu_binary(arch)
    forced = binary_accel(binary)
    if forced is not None:
        return Accel(forced, f"forced by $QEMU_SYSTEM_{qemu_arch(arch).upper()}")
    if arch != _host_arch():
        return Accel("tcg", f"{arch} guest on a {_host_arch()} host")
    problem = _kvm_device_problem()
    if problem is not None:
        return _fallback(Accel("tcg", problem))
    if arch != "x86_64":
        # The probe firmware is x86 code; other hosts have no probe yet.
        return _fallback(Accel("tcg", f"no KVM probe for {arch} hosts yet"))

    key = cache_key(arch, binary, cpu)
    hit = _cache_get(key)
    if hit is not None:
        return _fallback(hit) if hit.name == "tcg" else hit
    run_probe = probe if probe is not None else probe_kvm
    works, reason = run_probe(binary, cpu)
    result = Accel("kvm" if works else "tcg", reason)
    _cache_put(key, result)
    return _fallback(result) if not works else result


def _fallback(accel: Accel) -> Accel:
    log.warning(
        "KVM is not usable here (%s); using TCG (slow). Set %s=kvm to force KVM, or %s=tcg "
        "to skip this check",
        accel.reason,
        ENV_FORCE,
        ENV_FORCE,
    )
    return accel


# ---- the cache ---------------------------------------------------------------------------


def cache_path() -> Path:
    return cache_dir() / _CACHE_FILE


def _binary_identity(exe: str) -> str:
    """The QEMU build, without running it: a package upgrade changes size or mtime."""
    real = os.path.realpath(exe)
    try:
        st = os.stat(real)
    except OSError:
        return real
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(arch: str, binary: Sequence[str], cpu: str) -> str:
    """Host name + kernel release + QEMU build + arch + cpu model: what the answer depends on."""
    parts = (socket.gethostname(), platform.release(), _binary_identity(binary[0]), arch, cpu)
    return "|".join(parts)


def _cache_load() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _cache_get(key: str) -> Accel | None:
    entry = _cache_load().get(key)
    if not isinstance(entry, dict):
        return None
    name, reason = entry.get("accel"), entry.get("reason")
    if name not in ACCELS or not isinstance(reason, str):
        return None
    return Accel(str(name), reason, cached=True)


def _cache_put(key: str, accel: Accel) -> None:
    entries = _cache_load()
    entries[key] = {"accel": accel.name, "reason": accel.reason, "probedAt": int(time.time())}
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"entries": entries}, indent=2, sort_keys=True) + "\n"
        atomic_write(path, text, sync=False)  # a lost cache costs one probe
    except OSError as exc:
        # A cache we cannot write only costs another probe next time.
        log.debug("cannot write %s: %s", path, exc)



# ---- the probe ---------------------------------------------------------------------------

# The probe firmware, hand-assembled (GNU as, `.code16`, linked at 0, mapped at 0xF0000):
#   start16: mov $0x3f8,%dx; mov $'R',%al; out %al,%dx; cli; lgdtl %cs:gdt_desc
#            mov %cr0,%eax; or $1,%eax; mov %eax,%cr0; ljmpl $0x08,$0xF0000+pm32
#   pm32:    load 0x10 into ds/es/ss; mov $'P',%al; out %al,%dx
#            zero 0x1000-0x3fff; PML4[0]=0x2003; PDPT[0]=0x3003; PD[0]=0x83 (2 MiB page)
#            cr3=0x1000; cr4|=PAE; EFER|=LME (wrmsr 0xC0000080); cr0|=PG
#            ljmp $0x18,$0xF0000+lm64
#   lm64:    mov $'L',%al; out %al,%dx; mov $0,%al; out %al,$0xf4 (isa-debug-exit); hlt loop
#   gdt:     null, code32 0x00CF9A000000FFFF, data 0x00CF92000000FFFF, code64 0x00AF9A000000FFFF
#   0xFFF0:  ljmp $0xF000,$start16   (the reset vector)
_PROBE_CODE = bytes.fromhex(
    "baf803b052eefa2e660f0116b8000f20c06683c8010f22c066ea20000f00080066b810008ed88ec08e"
    "d0b050eebf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000c705"
    "0030000083000000b8001000000f22d80f20e083c8200f22e0b9800000c00f320d000100000f300f"
    "20c00d000000800f22c0ea8a000f00180066baf803b04ceeb000e6f4f4ebfd0000000000000000ff"
    "ff0000009acf00ffff00000092cf00ffff0000009aaf001f0098000f00"
)
_RESET_VECTOR = bytes.fromhex("ea000000f0")
_QEMU_PREFIX = re.compile(r"^\S*qemu[^\s:]*: ")
_HANG_WHERE = {
    "": "before its first instruction",
    "R": "switching to protected mode",
    "RP": "switching to long mode",
}


def probe_firmware() -> bytes:
    """The 64 KiB flat BIOS image the probe boots."""
    image = bytearray(b"\xf4" * 0x10000)  # hlt everywhere else
    image[: len(_PROBE_CODE)] = _PROBE_CODE
    image[0xFFF0 : 0xFFF0 + len(_RESET_VECTOR)] = _RESET_VECTOR
    return bytes(image)


def probe_argv(exe: str, firmware: Path, cpu: str) -> list[str]:
    return [
        exe, "-accel", "kvm", "-cpu", cpu, "-machine", "q35",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-m", "16",
        "-bios", str(firmware), "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]  # fmt: skip


def probe_kvm(
    binary: Sequence[str], cpu: str = "host", *, deadline: float = PROBE_DEADLINE
) -> tuple[bool, str]:
    """Boot the probe firmware under KVM; (True, ...) iff it reaches long mode in time."""
    with tempfile.TemporaryDirectory(prefix="lima-kvm-probe-") as tmp:
        firmware = Path(tmp) / "probe.bin"
        firmware.write_bytes(probe_firmware())
        argv = probe_argv(binary[0], firmware, cpu)
        started = time.monotonic()
        try:
            proc = runner.spawn(argv, stdout=runner.PIPE, stderr=runner.PIPE)
        except runner.CommandError as exc:
            return False, str(exc)
        hung = False
        try:
            out, err = proc.communicate(timeout=deadline)
        except runner.TimeoutExpired:
            hung = True
            proc.kill()  # SIGKILL to this probe's own PID
            out, err = proc.communicate()
        elapsed = time.monotonic() - started
    text_out = out.decode(errors="replace")
    text_err = err.decode(errors="replace")
    log.debug("KVM probe (%s) took %.2f s: out=%r err=%r", cpu, elapsed, text_out, text_err)
    if "RPL" in text_out:
        return True, f"KVM probe passed with -cpu {cpu}"
    return False, _failure_reason(text_out, text_err, hung, deadline, proc.returncode)


def _failure_reason(out: str, err: str, hung: bool, deadline: float, code: int | None) -> str:
    # Drop the "qemu-system-x86_64: " prefix only; messages have colons of their own.
    lines = [_QEMU_PREFIX.sub("", ln).strip() for ln in err.splitlines() if ln.strip()]
    for needle in ("KVM internal error", "failed to set MSR", "error", "requires KVM"):
        found = next((ln for ln in lines if needle.lower() in ln.lower()), None)
        if found:
            return found.removeprefix("error: ")
    if hung:
        where = _HANG_WHERE.get(out, f"after printing {out!r}")
        return f"the KVM probe guest hung {where} (no progress in {deadline:g} s)"
    return f"the KVM probe exited with status {code} after printing {out!r}"
