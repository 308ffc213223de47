"""Timing policy of the lifecycle: per-phase deadlines, step budgets and backoff. Pure.

`decide()` reads the deadlines and budgets; `advance` computes next-attempt times with
`step_backoff()` (a step failed; retry soon) and `crash_backoff()` (a boot attempt failed or
the VM crashed; back off like Kubernetes' CrashLoopBackOff: 10 s doubling to 5 min, reset
after 10 min of stable running). Jitter is deterministic (a hash of a seed and the attempt),
so the same inputs always give the same times and tests need no RNG.
"""

from __future__ import annotations

import hashlib

from lima.states.phases import Phase

# Readiness probes wait as long as Lima's host agent waits for a requirement
# (pkg/hostagent/requirements.go: up to 200 attempts, 3 s apart): about 10 min, which is also
# the default of `limactl start --timeout`.
PROBE_INTERVAL = 3.0
PROBE_ATTEMPTS = 200
PROBE_BUDGET = PROBE_INTERVAL * PROBE_ATTEMPTS
# The part of the provisioned phase the host agent does not spend on probes and ansible: it
# reports (Degraded, naming the probe and its hint) before the phase's deadline aborts and
# reboots the attempt.
REPORT_MARGIN = 60.0

# How long an instance may stay in a phase before the attempt is aborted (seconds).
PHASE_DEADLINES: dict[Phase, float] = {
    # Debian reaches ssh in about a minute under TCG, tiny in seconds; but cloud-init holds
    # sshd back until boot.sh has run, and on a loaded host that took over 5 minutes while
    # making steady progress. Rebooting a slow guest only starts it over: wait as long as
    # Lima's start timeout (10 min) before giving up on this boot.
    Phase.BOOTING: 600.0,
    Phase.SSH_READY: 600.0,  # provisioning scripts may install packages
    # mounts, probes (a full probe budget), copyToHost, ansible; then the report
    Phase.PROVISIONED: PROBE_BUDGET + 2 * REPORT_MARGIN,
    Phase.STOPPING: 90.0,  # then the stop is forced (kill)
    # Migrating RAM to a file takes seconds; then qemu quits. A suspend that hangs is
    # waited for no longer than a stop: the guest is then left as it is (running or saved).
    Phase.SUSPENDING: 120.0,
    Phase.RESUMING: 120.0,  # loading the state, cont, ssh login and the mounts again
}
# What the host agent may spend once the guest's boot scripts are done.
POSTBOOT_BUDGET = PHASE_DEADLINES[Phase.PROVISIONED] - REPORT_MARGIN


def probe_budget(elapsed: float, per_probe: float = PROBE_BUDGET) -> float:
    """Seconds one probe may be retried when `elapsed` seconds have passed since the boot
    scripts were done: Lima's budget (or `per_probe`), cut to what is left of
    POSTBOOT_BUDGET so the report comes before the provisioned phase's deadline."""
    return max(0.0, min(per_probe, POSTBOOT_BUDGET - elapsed))
# The longest one driver call may block (wait steps poll inside it, with tenacity).
STEP_BUDGET = 30.0
# After this many consecutive temporary failures of one step, the attempt is failed.
MAX_STEP_RETRIES = 8
STEP_BACKOFF_BASE = 1.0
STEP_BACKOFF_CAP = 30.0
CRASH_BACKOFF_BASE = 10.0
CRASH_BACKOFF_CAP = 300.0
# Running this long without a crash forgets earlier restarts.
STABLE_AFTER = 600.0
JITTER = 0.2  # +-20 %


def backoff(attempt: int, *, base: float, cap: float, seed: str = "") -> float:
    """base * 2**(attempt-1), +-JITTER by a hash of (seed, attempt), never above cap."""
    n = max(1, attempt)
    raw = base * (2.0 ** min(n - 1, 30))
    digest = hashlib.sha256(f"{seed}:{n}".encode()).digest()
    fraction = int.from_bytes(digest[:4], "big") / 2**32  # in [0, 1)
    jittered = raw * (1.0 - JITTER + 2 * JITTER * fraction)
    return min(cap, jittered)


def step_backoff(retries: int, seed: str = "") -> float:
    return backoff(retries, base=STEP_BACKOFF_BASE, cap=STEP_BACKOFF_CAP, seed=seed)


def crash_backoff(restarts: int, seed: str = "") -> float:
    return backoff(restarts, base=CRASH_BACKOFF_BASE, cap=CRASH_BACKOFF_CAP, seed=seed)
