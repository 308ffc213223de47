"""The pure helpers of benchmarks/boot.py: parsing apply's progress lines, the host agent's
events and logs, /proc/PID/stat, the baseline's probe output and argv comparison."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks import boot


def test_progress_line_parsed() -> None:
    assert boot.parse_progress_line("[tiny] ssh_ready        4.8 s\n") == ("tiny", "ssh_ready", 4.8)
    assert boot.parse_progress_line("[my-vm] running  123.4 s") == ("my-vm", "running", 123.4)


def test_other_lines_are_not_progress() -> None:
    for line in (
        "tiny: running",
        "/x/tiny.yaml:14: warning: user: local user is root",
        "[tiny] degraded: provisioning failed",
        "[tiny] running 4.x s",
        "[] running 1.0 s",
        "",
    ):
        assert boot.parse_progress_line(line) is None, line


def test_event_times_take_the_first_of_each_milestone() -> None:
    events: list[dict[str, Any]] = [
        {"time": "2026-01-01T00:00:00+00:00", "status": {"running": False}},
        {"time": "2026-01-01T00:00:04.5+00:00", "status": {"phase": "ssh_ready"}},
        {"time": "2026-01-01T00:00:05+00:00", "status": {"phase": "provisioned"}},
        {"time": "2026-01-01T00:00:05.25+00:00", "status": {"running": True}},
        {"time": "2026-01-01T00:00:09+00:00", "status": {"running": True}},
        {"time": "bogus-but-skipped", "status": "not a dict"},
    ]
    t = boot.event_times(events)
    base = t["started"]
    assert {k: round(v - base, 3) for k, v in t.items()} == {
        "started": 0.0, "ssh_ready": 4.5, "provisioned": 5.0, "running": 5.25}


def test_event_times_honour_the_offset() -> None:
    utc = boot.parse_time("2026-01-01T12:00:00+00:00")
    assert boot.parse_time("2026-01-01T14:00:00+02:00") == utc


def test_read_jsonl_skips_torn_and_foreign_lines() -> None:
    text = '{"a": 1}\n{"torn": \n[1, 2]\nimport time: 12 | 34 | x\n{"b": 2}\n'
    assert boot.read_jsonl(text) == [{"a": 1}, {"b": 2}]


def test_agent_stop_uses_the_last_shutdown() -> None:
    entries = [
        {"msg": "signal 15: shutting the guest down", "time": "2026-01-01T00:00:00+00:00"},
        {"msg": "qemu exited with status 0", "time": "2026-01-01T00:00:01+00:00"},
        {"msg": "host agent started: pid 1", "time": "2026-01-01T00:01:00+00:00"},
        {"msg": "signal 15: shutting the guest down", "time": "2026-01-01T00:02:00+00:00"},
        {"msg": "qemu exited with status 0", "time": "2026-01-01T00:02:00.25+00:00"},
        {"msg": "host agent exiting (0)", "time": "2026-01-01T00:02:00.5+00:00"},
    ]
    stop = boot.agent_stop(entries)
    assert stop.powerdown == 0.25
    assert stop.exiting is not None and stop.signal is not None
    assert stop.exiting - stop.signal == 0.5


def test_agent_stop_without_a_signal_has_no_powerdown() -> None:
    entries = [{"msg": "qemu exited with status 1", "time": "2026-01-01T00:00:00+00:00"}]
    assert boot.agent_stop(entries).powerdown is None


def test_stat_start_ticks_survives_spaces_and_parens_in_comm() -> None:
    fields = " ".join(["S"] + [str(i) for i in range(4, 22)] + ["987654", "0", "0"])
    assert boot.stat_start_ticks(f"1234 (qemu (x) y) {fields}") == 987654


def test_stat_start_ticks_on_this_process() -> None:
    with open("/proc/self/stat") as f:
        assert boot.stat_start_ticks(f.read()) > 0


def test_probe_result() -> None:
    assert boot.probe_result("iid-1|iid-1\n", "iid-1") == (True, True)
    assert boot.probe_result("iid-1|\n", "iid-1") == (True, False)
    assert boot.probe_result("iid-0|iid-0\n", "iid-1") == (False, False)
    assert boot.probe_result("", "iid-1") == (False, False)


def test_normalize_argv_hides_dir_port_and_mac() -> None:
    a = ["qemu", "-drive", "file=/tmp/h/tiny/diffdisk,if=virtio",
         "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:40000-:22,restrict=on",
         "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:00:00:01,romfile="]
    b = ["qemu", "-drive", "file=/tmp/h/bl/diffdisk,if=virtio",
         "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:41234-:22,restrict=on",
         "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:00:00:02,romfile="]
    na = boot.normalize_argv(a, "/tmp/h/tiny", 40000)
    nb = boot.normalize_argv(b, "/tmp/h/bl/", 41234)
    assert na == nb
    assert na[4] == "user,id=net0,hostfwd=tcp:127.0.0.1:PORT-:22,restrict=on"
    assert na[6] == "virtio-net-pci,netdev=net0,mac=MAC,romfile="


def test_normalize_argv_keeps_real_differences() -> None:
    a = boot.normalize_argv(["qemu", "-m", "256"], "/d", 1)
    b = boot.normalize_argv(["qemu", "-m", "512"], "/d", 1)
    assert a != b


def test_first_seen_counts_a_later_phase_for_a_skipped_line() -> None:
    run = boot.ApplyRun(ok=True, lines={"cidata_built": 0.3, "provisioned": 4.9,
                                        "reported": 5.0})
    assert run.ssh_ready == 4.9
    assert run.running == 5.0
    assert boot.ApplyRun(ok=True).running is None


def test_median_and_ratio_ignore_missing_values() -> None:
    assert boot.median([None, 3.0, 1.0, 2.0]) == 2.0
    assert boot.median([None]) is None
    assert boot.ratio(4.6, 4.0) == "1.15"
    assert boot.ratio(None, 4.0) == "-"
    assert boot.ratio(1.0, 0.0) == "-"


def test_probe_policy_overlaps_until_the_guest_closes_a_probe() -> None:
    policy = boot.ProbePolicy()
    assert (policy.limit, policy.lifetime) == (4, 3.0)
    policy.retired()  # a probe raced the NIC: later ones live longer, up to the cap
    assert policy.lifetime == 6.0
    for _ in range(10):
        policy.retired()
    assert policy.lifetime == boot.BANNER_MAX_LIFETIME
    fresh = boot.ProbePolicy()
    fresh.closed_by_guest()  # NIC up: one probe at a time, kept until the banner
    assert (fresh.limit, fresh.lifetime) == (1, boot.BANNER_MAX_LIFETIME)


def test_banner_state() -> None:
    assert boot.banner_state(b"SSH-2.0-OpenSSH_9.2p1\r\n") is True
    assert boot.banner_state(b"SS") is None
    assert boot.banner_state(b"") is None
    assert boot.banner_state(b"HTTP/1.1") is False
    assert boot.banner_state(b"X") is False


def test_probe_argv_shares_one_connection_and_bounds_the_login() -> None:
    argv = boot._probe_argv(Path("/tmp/x"), "default", timeout=10.0)
    assert argv[:3] == ["ssh", "-F", "/tmp/x/ssh.config"]
    assert "ControlMaster=auto" in argv and "ControlPath=/tmp/x/ssh.sock" in argv
    assert "ConnectTimeout=10" in argv
    assert argv[-2:] == ["lima-default", boot.PROBE_COMMAND]


def test_probe_command_starts_no_program_in_the_guest() -> None:
    # Every program a poll starts costs a booting TCG guest CPU; builtins only.
    assert "cat " not in boot.PROBE_COMMAND and "$(" not in boot.PROBE_COMMAND
    assert boot.SSH_READY_MARKER in boot.PROBE_COMMAND
    assert boot.BOOT_DONE_MARKER in boot.PROBE_COMMAND


def test_longest_probe_names_the_stalled_one() -> None:
    run = boot.BaselineRun(ok=True)
    assert run.longest_probe() == "-"
    run.banner_probes = [(0.0, 0.01, "closed"), (0.3, 21.3, "closed"), (25.0, 25.4, "banner")]
    assert run.longest_probe() == "0.3-21.3s closed"


def test_cpu_ticks_reads_steal_and_the_total_from_the_cpu_line() -> None:
    stat = ("cpu  100 5 20 800 10 1 2 30 7 0\n"
            "cpu0 50 2 10 400 5 0 1 15 3 0\n")
    # guest and guest_nice are already counted in user and nice: not added again.
    assert boot.cpu_ticks(stat) == (30, 100 + 5 + 20 + 800 + 10 + 1 + 2 + 30)
    assert boot.cpu_ticks("cpu  1 2 3 4\n") == (0, 10)  # a kernel without steal
    assert boot.cpu_ticks("intr 5\n") == (0, 0)


def test_stat_cpu_ticks_adds_utime_and_stime_after_a_comm_with_blanks() -> None:
    stat = "1234 (qemu system x) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 4 0 99 0 0\n"
    assert boot.stat_cpu_ticks(stat) == 290
    assert boot.process_cpu(None) is None
    assert boot.process_cpu(os.getpid()) is not None
