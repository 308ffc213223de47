"""boot.sh, run unprivileged-style against a fake mounted seed under busybox ash and dash.

The markers, the order of the scripts, the user step and the failure contract are
checked; nothing outside tmp_path is touched (run dir, log, /etc/environment and the
run-as command are redirected by boot.sh's LIMA_BOOT_* overrides).
"""

from __future__ import annotations

import getpass
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from lima.drivers import cidata
from lima.drivers.identity import ensure_identity
from tests.unit.cidata_fixtures import Provision, extract_iso, make_spec

# boot.sh runs under the real dash and busybox sh: that is what it is tested against.
pytestmark = pytest.mark.processes

# What boot.sh would change on the machine it runs on, were a test to let it.
_HOST_FILES = (Path("/etc/hosts"), Path("/etc/resolv.conf"), Path("/etc/hostname"),
               Path("/etc/environment"))
_HOST_DIRS = (Path("/usr/local/bin"), Path("/etc/systemd/system"))


def _host_state() -> dict[str, object]:
    state: dict[str, object] = {}
    for f in _HOST_FILES:
        try:
            state[str(f)] = f.read_bytes()
        except OSError as exc:
            state[str(f)] = type(exc).__name__
    for d in _HOST_DIRS:
        try:
            state[str(d)] = sorted(os.listdir(d))
        except OSError as exc:
            state[str(d)] = type(exc).__name__
    return state


@pytest.fixture(autouse=True)
def _host_untouched() -> object:
    """boot.sh runs on this host here: it must leave the host as it was."""
    before = _host_state()
    yield
    after = _host_state()
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"boot.sh changed the host: {changed}"

BUSYBOX = shutil.which("busybox")
DASH = shutil.which("dash")
APPLETS = [
    "sh",
    "awk",
    "basename",
    "cat",
    "chmod",
    "chown",
    "cp",
    "date",
    "dirname",
    "grep",
    "head",
    "id",
    "mkdir",
    "mktemp",
    "mv",
    "rm",
    "sed",
    "sleep",
    "tee",
    "tr",
    "hostname",
    "printf",
    "su",
    "tail",
    "cut",
    "ln",
]

SHELLS = [
    pytest.param("busybox", marks=pytest.mark.skipif(not BUSYBOX, reason="no busybox")),
    pytest.param("dash", marks=pytest.mark.skipif(not DASH, reason="no dash")),
]


def _shell_env(kind: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """The interpreter and a PATH: busybox applets only, like the tiny guest, or the host's."""
    env = {"HOME": str(tmp), "LANG": "C"}
    if kind == "busybox":
        assert BUSYBOX
        bb = tmp / "bb"
        bb.mkdir(exist_ok=True)
        for applet in APPLETS:
            if not (bb / applet).is_symlink():
                (bb / applet).symlink_to(BUSYBOX)
        env["PATH"] = str(bb)
        return [BUSYBOX, "sh"], env
    assert DASH
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    return [DASH], env


def _run(kind: str, tmp: Path, seed: Path, *args: str, umask: int = 0o022,
         **extra: str) -> subprocess.CompletedProcess[str]:
    argv, env = _shell_env(kind, tmp)
    run_as = tmp / "run-as"
    run_as.write_text('#!/bin/sh\necho "$1" >>"$(dirname "$0")/run-as.log"\nshift\nexec "$@"\n')
    run_as.chmod(0o755)
    (tmp / "run").mkdir(exist_ok=True)
    env.update(
        LIMA_CIDATA_MNT=str(seed),
        LIMA_BOOT_RUN_DIR=str(tmp / "run"),
        LIMA_BOOT_LOG=str(tmp / "log" / "lima-init.log"),
        LIMA_BOOT_CONSOLE="/dev/null",
        LIMA_BOOT_ETC_ENVIRONMENT=str(tmp / "environment"),
        LIMA_BOOT_USER_TIMEOUT="2",
        LIMA_BOOT_SYSTEMD_USER_TIMEOUT="0",
        LIMA_BOOT_RUN_AS=str(run_as),
        LIMA_BOOT_CLOUD_INIT_RUN=str(tmp / "no-cloud-init"),
        # Never the host's systemd: the tests that want one give a fake systemd-run.
        LIMA_BOOT_SYSTEMD_DIR=str(tmp / "no-systemd"),
    )
    env.update(extra)
    return subprocess.run(
        [*argv, str(seed / "boot.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        umask=umask,
    )


def _script(path: Path, body: str, shebang: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("#!/bin/sh\n" if shebang else "") + body)
    path.chmod(0o755)


def _spies(kind: str, tmp: Path, *names: str) -> str:
    """A PATH on which each of `names` first appends "NAME ARGS" to tmp/spy.log, then runs
    the real program (the one the shell kind's own PATH has). Only dash looks them up:
    busybox sh runs its own applets (sleep, date) without a PATH search."""
    _, env = _shell_env(kind, tmp)
    spy = tmp / "spy"
    for name in names:
        _script(spy / name, f'echo "{name} $*" >>"{tmp}/spy.log"\n'
                f'PATH="{env["PATH"]}" exec {name} "$@"\n')
    return f"{spy}:{env['PATH']}"


def _spied(tmp: Path) -> list[str]:
    log = tmp / "spy.log"
    return log.read_text().splitlines() if log.exists() else []


def _functions(*names: str) -> str:
    """The definitions of boot.sh's functions `names`, to run them on their own."""
    text = (cidata.ASSETS / "boot.sh").read_text()
    found = [re.search(rf"^{name}\(\) {{\n.*?^}}[^\n]*\n", text, re.S | re.M)
             for name in names]
    assert all(found), names
    return "".join(m.group(0) for m in found if m)


ALL_SHELLS = [
    *SHELLS,
    pytest.param("bash", marks=pytest.mark.skipif(not shutil.which("bash"), reason="no bash")),
]


def _sh(kind: str) -> list[str]:
    """The interpreter of a shell kind, with the host's programs on PATH."""
    if kind == "busybox":
        assert BUSYBOX
        return [BUSYBOX, "sh"]
    found = shutil.which(kind)
    assert found
    return [found]


def _fake_seed(tmp: Path, user: str, *, fail_system: bool = False) -> Path:
    seed = tmp / "seed"
    seed.mkdir()
    shutil.copy(cidata.ASSETS / "boot.sh", seed / "boot.sh")
    order = tmp / "order"
    (seed / "lima.env").write_text(
        f"LIMA_CIDATA_NAME=demo\nLIMA_CIDATA_IID=iid-test\nLIMA_CIDATA_USER={user}\n"
        f"LIMA_CIDATA_HOME={tmp}\nLIMA_CIDATA_MNT=/mnt/lima-cidata\nLIMA_CIDATA_COMMENT='A B'\n"
    )
    (seed / "param.env").write_text(f"PARAM_ORDER={order}\nPARAM_WORD='two words'\n")
    (seed / "etc_environment").write_text('#LIMA-START\nFOO=bar\nQUOTED="x y"\n#LIMA-END\n')
    (seed / "meta-data").write_text("instance-id: iid-test\nlocal-hostname: lima-demo\n")
    rec = 'echo "$(basename "$(dirname "$0")")/$(basename "$0")" >>"$PARAM_ORDER"\n'
    _script(
        seed / "boot" / "10-first",
        rec + 'echo "mnt=$LIMA_CIDATA_MNT foo=$FOO q=$QUOTED '
        'c=$LIMA_CIDATA_COMMENT w=$PARAM_WORD" >"$PARAM_ORDER.env"\n',
    )
    _script(seed / "boot" / "50-provision-00000000", rec, shebang=False)
    _script(seed / "provision.dependency" / "00000001", rec)
    _script(seed / "provision.data" / "00000002.sh", rec)
    (seed / "provision.data" / "00000002").write_text("data, not a script\n")
    fail = 'echo "step one ok"\necho\necho "E: no such package" >&2\nexit 3\n'
    _script(seed / "provision.system" / "00000003", rec + (fail if fail_system else ""))
    (seed / "provision.labels").write_text(
        'provision.system/00000003\tprovision[3] (mode: system) "apt-get install x"\n')
    _script(seed / "provision.system" / "00000004", rec)
    _script(
        seed / "provision.user" / "00000005",
        'echo user-script >>"$PARAM_ORDER"\n'
        'echo "user=$USER home=$HOME w=$PARAM_WORD" >"$PARAM_ORDER.user"\n',
    )
    return seed


@pytest.mark.parametrize("kind", SHELLS)
def test_success_markers_order_and_env(kind: str, tmp_path: Path) -> None:
    user = getpass.getuser()
    seed = _fake_seed(tmp_path, user)
    (tmp_path / "environment").write_text("KEEP=1\n#LIMA-START\nOLD=1\n#LIMA-END\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "lima-boot-failed").write_text("iid-old\nstale\n")
    result = _run(kind, tmp_path, seed)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "run"
    assert (run / "lima-ssh-ready").read_text() == "iid-test\n"
    assert (run / "lima-boot-done").read_text() == "iid-test\n"
    assert not (run / "lima-boot-failed").exists()
    assert (tmp_path / "order").read_text().split() == [
        "boot/10-first",
        "boot/50-provision-00000000",
        "provision.dependency/00000001",
        "provision.data/00000002.sh",
        "provision.system/00000003",
        "provision.system/00000004",
        "user-script",
    ]
    assert (tmp_path / "order.env").read_text().strip() == (
        f"mnt={seed} foo=bar q=x y c=A B w=two words"
    )
    assert (tmp_path / "order.user").read_text().strip() == (
        f"user={user} home={tmp_path} w=two words"
    )
    assert (tmp_path / "run-as.log").read_text().split() == [user]
    assert (tmp_path / "environment").read_text() == (
        'KEEP=1\n#LIMA-START\nFOO=bar\nQUOTED="x y"\n#LIMA-END\n'
    )
    log = (tmp_path / "log" / "lima-init.log").read_text()
    assert "Executing" in log and "provision.system/00000004" in log


@pytest.mark.parametrize("kind", SHELLS)
def test_failure_is_recorded_and_the_rest_still_runs(kind: str, tmp_path: Path) -> None:
    seed = _fake_seed(tmp_path, getpass.getuser(), fail_system=True)
    result = _run(kind, tmp_path, seed)
    assert result.returncode != 0
    run = tmp_path / "run"
    assert (run / "lima-ssh-ready").read_text() == "iid-test\n"
    assert not (run / "lima-boot-done").exists()
    iid, failures = cidata.parse_boot_failed((run / "lima-boot-failed").read_text())
    assert iid == "iid-test"
    log = run / "lima-provision" / "provision.system_00000003.log"
    # Named as lima.yaml has it, with its exit status and the tail of its output.
    assert failures == [
        'provision[3] (mode: system) "apt-get install x": exit 3; last output: step one ok'
        f" | E: no such package (full output: {log})"]
    assert "E: no such package" in log.read_text()
    order = (tmp_path / "order").read_text().split()
    assert order[-2:] == ["provision.system/00000004", "user-script"]


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize(
    ("result_json", "done"),
    [('{"v1": {"datasource": "x", "errors": []}}', True),
     ('{"v1": {"datasource": "x", "errors": ["boom"]}}', False),
     (None, False)],
)
def test_waits_for_cloud_init_final_stage(
    kind: str, tmp_path: Path, result_json: str | None, done: bool
) -> None:
    seed = _fake_seed(tmp_path, getpass.getuser())
    ci = tmp_path / "cloud-init-run"
    ci.mkdir()
    if result_json is not None:
        (ci / "result.json").write_text(result_json)
    result = _run(kind, tmp_path, seed, LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                  LIMA_BOOT_CLOUD_INIT_TIMEOUT="1")
    run = tmp_path / "run"
    assert (run / "lima-boot-done").exists() == done
    assert (result.returncode == 0) == done
    if not done:
        _, failures = cidata.parse_boot_failed((run / "lima-boot-failed").read_text())
        assert failures == ['cloud-init reported errors: "boom" (cloud-init status --long)'
                            if result_json else "cloud-init did not finish within 1s"]


# What cloud-init writes (json.dumps, indent 1), and what else the old pipeline was given.
_RESULTS = [
    CI_DONE_TEXT := '{\n "v1": {\n  "datasource": "x",\n  "errors": []\n }\n}\n',
    '{\n "v1": {\n  "datasource": "DataSourceNoCloud [seed=/dev/vdb][dsmode=net]",\n'
    '  "errors": [\n   "(\'scripts_user\', RuntimeError(\'Runparts: 1 failures in 1 attempted'
    ' commands\'))"\n  ]\n }\n}\n',
    '{"v1": {"datasource": "x", "errors": []}}',
    '{"v1": {"datasource": "x", "errors": ["boom"]}}',
    '{"v1":{"errors" : [ ] }}',
    '{"v1":{"errors"  :  [\n\n   ]}}',
    '{"v1":{"errors":[\t]}}',
    '{"v1": {"errors": ["a    b", "c\td"]}}\r\n',
    '{"v1": {"errors": \n  \n  ["x"]}}',
    '{"v1": {"errors":  [ "' + "e" * 399 + '" ]}}',
    '{"v1": {"errors": ["' + "é" * 300 + '"]}}',
    '{"a": {"errors": ["x"]}, "b": {"errors": null}, "c": {"errors": "[y]"}}',
    '{"a": {"errors": ["x"]}, "b": {"errors": ["a]b", "c"]}}',
    '{"v1": {"errors": ["*?[x]*", "\\\\ \\n $HOME `id`"]}}',
    '{"v1": {"errors": [\n]', '', '\n\n', '   ', '"errors": [', '"errors":[]]',
]


def _fuzzed(n: int) -> list[str]:
    rnd = random.Random(20240611)
    parts = [" ", "  ", "\n", "\t", "\r", "a", '"errors"', ":", "[", "]", ",", '"', "*", "\\"]
    return ["".join(rnd.choice(parts) for _ in range(rnd.randrange(1, 40))) for _ in range(n)]


@pytest.mark.parametrize("kind", ALL_SHELLS)
def test_result_json_is_read_as_tr_grep_sed_and_cut_read_it(kind: str, tmp_path: Path) -> None:
    """result_errors (shell builtins) against the pipeline it replaced, on cloud-init's
    files and on odd ones: the same verdict, the same errors text."""
    samples = _RESULTS + _fuzzed(150)
    for i, text in enumerate(samples):
        (tmp_path / f"{i}.json").write_bytes(text.encode())
    wrapper = tmp_path / "check.sh"
    wrapper.write_text(_functions("result_errors") + r"""
for f in "$@"; do
	flat=$(tr -d '\n' 2>/dev/null <"$f" | tr -s ' ')
	if printf '%s' "$flat" | tr -d ' ' | grep -q '"errors":\[\]'; then
		old=none
	else
		old="errors: $(printf '%s' "$flat" |
			sed -n 's/.*"errors": *\[\([^]]*\)\].*/\1/p' | cut -c1-400)"
	fi
	errs=unset
	if result_errors "$f"; then new="errors: $errs"; else new=none; fi
	[ "$old" = "$new" ] || printf '%s: [%s] != [%s]\n' "$f" "$new" "$old"
done
""")
    files = [str(tmp_path / f"{i}.json") for i in range(len(samples))] + [str(tmp_path / "none")]
    out = subprocess.run([*_sh(kind), str(wrapper), *files], capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


CI_DONE = CI_DONE_TEXT


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("how", ["systemd-run", "systemd-run fails", "no systemd-run",
                                 "no systemd"])
def test_under_systemd_one_systemd_run_waits_for_cloud_final(
    kind: str, how: str, tmp_path: Path
) -> None:
    """Under systemd, one blocking systemd-run ordered after cloud-final.service instead of
    five `sleep`s a second; when it fails, is missing or systemd is not PID 1, the
    polling finds the result as before."""
    seed = _fake_seed(tmp_path, getpass.getuser())
    ci = tmp_path / "cloud-init-run"
    ci.mkdir()
    (tmp_path / "systemd").mkdir()
    (tmp_path / "result.json").write_text(CI_DONE)
    fake = tmp_path / "systemd-run"
    argv_log = tmp_path / "systemd-run.argv"
    if how == "systemd-run":  # cloud-final.service ends while systemd-run waits
        _script(fake, f'printf "%s\\n" "$@" >"{argv_log}"\nmv "{tmp_path}/result.json" "{ci}/"\n')
    else:  # the result comes a second later, whatever systemd-run did
        _script(fake, f'printf "%s\\n" "$@" >"{argv_log}"\nexit 1\n')
        _script(seed / "boot" / "20-cloud-final-later",
                f'( sleep 1; mv "{tmp_path}/result.json" "{ci}/" ) &\n')
    result = _run(
        kind, tmp_path, seed, PATH=_spies(kind, tmp_path, "sleep"),
        LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
        LIMA_BOOT_SYSTEMD_DIR=str(tmp_path / ("no-systemd" if how == "no systemd" else "systemd")),
        LIMA_BOOT_SYSTEMD_RUN=str(tmp_path / "nowhere" if how == "no systemd-run" else fake))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "run" / "lima-boot-done").exists()
    log = (tmp_path / "log" / "lima-init.log").read_text()
    assert log.count("Waiting for cloud-init to finish") == 1
    polled = [c for c in _spied(tmp_path) if c == "sleep 0.2"]
    if how == "systemd-run":
        assert argv_log.read_text().splitlines() == [
            "--wait", "--quiet", "--collect", "-p", "After=cloud-final.service",
            "-p", "DefaultDependencies=no", "--unit=lima-cloud-init-wait-iid-test", "/bin/true"]
        assert polled == []
    else:
        assert argv_log.exists() == (how == "systemd-run fails")
        assert polled or kind == "busybox"


@pytest.mark.parametrize("kind", SHELLS)
def test_after_systemd_run_polling_has_only_what_is_left_of_the_timeout(
    kind: str, tmp_path: Path
) -> None:
    """systemd-run ended by `timeout` (the timeout used up): no second timeout of
    polling, the failure at once."""
    seed = _fake_seed(tmp_path, getpass.getuser())
    ci = tmp_path / "cloud-init-run"
    ci.mkdir()
    (tmp_path / "systemd").mkdir()
    fake = tmp_path / "systemd-run"
    _script(fake, "sleep 2\nexit 1\n")
    started = time.monotonic()
    result = _run(kind, tmp_path, seed, PATH=_spies(kind, tmp_path, "sleep"),
                  LIMA_BOOT_CLOUD_INIT_RUN=str(ci), LIMA_BOOT_CLOUD_INIT_TIMEOUT="1",
                  LIMA_BOOT_SYSTEMD_DIR=str(tmp_path / "systemd"),
                  LIMA_BOOT_SYSTEMD_RUN=str(fake))
    took = time.monotonic() - started
    assert result.returncode != 0
    _, failures = cidata.parse_boot_failed((tmp_path / "run" / "lima-boot-failed").read_text())
    assert failures == ["cloud-init did not finish within 1s"]
    if kind == "dash":
        assert _spied(tmp_path) == ["sleep 2"]
    assert took < 4, took


def _epochs() -> list[int]:
    """Seconds around the edges of days, months, years and leap days, and random ones."""
    edges = [datetime(y, m, d, tzinfo=UTC) for y, m, d in (
        (1970, 1, 1), (1970, 3, 1), (1972, 2, 29), (1972, 3, 1), (1999, 12, 31), (2000, 1, 1),
        (2000, 2, 28), (2000, 2, 29), (2000, 3, 1), (2001, 3, 1), (2004, 2, 29), (2024, 2, 29),
        (2024, 12, 31), (2025, 1, 1), (2038, 1, 19), (2038, 1, 20), (2099, 12, 31),
        (2100, 2, 28), (2100, 3, 1), (2400, 2, 29), (2400, 3, 1))]
    edges += [datetime(2023, m, 1, tzinfo=UTC) for m in range(1, 13)]
    edges += [datetime(2024, m, 1, tzinfo=UTC) for m in range(1, 13)]
    out = []
    for e in edges:
        t = int(e.timestamp())
        out += [t - 1, t, t + 1, t + 86399]
    rnd = random.Random(7)
    out += [rnd.randrange(0, 2**33) for _ in range(100)]
    return sorted(t for t in set(out) if t >= 0)


@pytest.mark.parametrize("kind", ALL_SHELLS)
def test_log_times_are_converted_as_date_converts_them(kind: str, tmp_path: Path) -> None:
    """civil (shell arithmetic, days to a date) against `date -u -d @SECONDS`."""
    wrapper = tmp_path / "civil.sh"
    wrapper.write_text(_functions("civil") + r"""
for t in "$@"; do
	civil "$t"
	want=$(date -u -d "@$t" '+%Y-%m-%dT%H:%M:%S')
	[ "$STAMP" = "$want" ] || echo "$t: $STAMP != $want"
done
""")
    epochs = _epochs()
    out = subprocess.run([*_sh(kind), str(wrapper), *map(str, epochs)], capture_output=True,
                         text=True, timeout=60, check=False,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert len(epochs) > 200


_ZONES = ["UTC0", "IST-5:30", "NST+3:30", "CET-1CEST,M3.5.0,M10.5.0/3"]


@pytest.mark.parametrize("kind", ["dash", "bash"])
@pytest.mark.parametrize("tz", _ZONES)
def test_log_times_count_from_the_date_call(kind: str, tz: str, tmp_path: Path) -> None:
    """stamp with a `date` that answers for a set moment and an uptime the test moves on:
    each time is what `date` gives for that moment plus the uptime since, across midnight,
    a leap day and New Year, in zones east and west of UTC (by half hours) and in summer
    time. Not busybox: its sh runs its own date, not one on PATH."""
    if not shutil.which(kind):
        pytest.skip(f"no {kind}")
    spy = tmp_path / "spy"
    _script(spy / "date", f'echo date >>"{tmp_path}/dates"\n'
            'PATH="$REAL_PATH" exec date -d "@$FAKE_NOW" "$@"\n')
    uptime = tmp_path / "uptime"
    wrapper = tmp_path / "stamp.sh"
    wrapper.write_text(f"UPTIME={uptime}\nCLOCK_S=\n"
                       + _functions("uptime_cs", "clock_sync", "stamp", "civil") + r"""
for now in "$@"; do
	FAKE_NOW="$now.99" CLOCK_S=
	echo "1000.00 0.00" >"$UPTIME"
	export FAKE_NOW
	stamp
	echo "$STAMP"
	for cs in 1 2 50 101 3599 8641 90001 8640000; do
		echo "$((1000 + cs / 100)).$((cs % 100 / 10))$((cs % 10)) 0.00" >"$UPTIME"
		stamp
		echo "$STAMP"
	done
done
""")
    starts = [datetime(2024, 2, 28, 23, 59, 50, tzinfo=UTC), datetime(2023, 12, 31, 23, 59, 0,
              tzinfo=UTC), datetime(2024, 7, 14, 21, 59, 58, tzinfo=UTC)]
    real = os.environ.get("PATH", "/usr/bin:/bin")
    out = subprocess.run([*_sh(kind), str(wrapper), *(str(int(t.timestamp())) for t in starts)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={"PATH": f"{spy}:{real}", "REAL_PATH": real, "LANG": "C", "TZ": tz})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    want = subprocess.run(
        [*_sh(kind), "-c", 'for t; do date -d "@$t" "+%Y-%m-%dT%H:%M:%S"; done', "sh",
         *(str(int(t.timestamp()) + (99 + cs) // 100) for t in starts
           for cs in (0, 1, 2, 50, 101, 3599, 8641, 90001, 8640000))],
        capture_output=True, text=True, timeout=60, check=True,
        env={"PATH": real, "LANG": "C", "TZ": tz}).stdout
    assert out.stdout.splitlines() == want.splitlines()
    assert len((tmp_path / "dates").read_text().split()) == len(starts)


@pytest.mark.parametrize("kind", ["dash", "bash"])
@pytest.mark.parametrize("fraction", ["000000000", "008999999", "009000000", "080000000"])
def test_a_second_begun_with_zeros_is_no_octal_number(
    kind: str, fraction: str, tmp_path: Path
) -> None:
    """`date`'s %N with leading zeros (08 and 09 are no octal digits: an arithmetic error
    would end boot.sh's shell): the time counts on from the call all the same."""
    if not shutil.which(kind):
        pytest.skip(f"no {kind}")
    _script(tmp_path / "spy" / "date", f'echo "2026-12-01T13:07:18 1796130438 {fraction} +0000"\n')
    uptime = tmp_path / "uptime"
    uptime.write_text("1000.00 0.00\n")
    wrapper = tmp_path / "stamp.sh"
    wrapper.write_text(f"UPTIME={uptime}\nCLOCK_S=\n"
                       + _functions("uptime_cs", "clock_sync", "stamp", "civil") + f"""
stamp
echo "$STAMP"
echo "1002.50 0.00" >"{uptime}"
stamp
echo "$STAMP"
""")
    out = subprocess.run([*_sh(kind), str(wrapper)], capture_output=True, text=True,
                         timeout=60, check=False,
                         env={"PATH": f"{tmp_path / 'spy'}:/usr/bin:/bin", "LANG": "C"})
    assert (out.returncode, out.stderr) == (0, "")
    # 2.5 s of uptime on, from a second begun 0-80 ms before the call: 2 s later.
    assert out.stdout.split() == ["2026-12-01T13:07:18", "2026-12-01T13:07:20"]


@pytest.mark.parametrize("kind", ALL_SHELLS)
@pytest.mark.parametrize("tz", _ZONES)
def test_log_times_from_one_date_call_are_dates(kind: str, tz: str, tmp_path: Path) -> None:
    """stamp's times, counted from /proc/uptime since one `date` call, are those of `date`
    just before and after (within a second, for the centiseconds of uptime and the guess of
    when date read the clock); `date` is called once (busybox's, without %N, each time)."""
    spy = tmp_path / "spy"
    _script(spy / "date", f'echo date >>"{tmp_path}/dates"\nPATH="$REAL_PATH" exec date "$@"\n')
    wrapper = tmp_path / "stamp.sh"
    wrapper.write_text("UPTIME=/proc/uptime\nCLOCK_S=\n"
                       + _functions("uptime_cs", "clock_sync", "stamp", "civil") + r"""
i=0
while [ "$i" -lt 12 ]; do
	before=$(PATH="$REAL_PATH" date '+%Y-%m-%dT%H:%M:%S')
	stamp
	after=$(PATH="$REAL_PATH" date '+%Y-%m-%dT%H:%M:%S')
	echo "$before $STAMP $after"
	sleep 0.09
	i=$((i + 1))
done
""")
    real = os.environ.get("PATH", "/usr/bin:/bin")
    out = subprocess.run([*_sh(kind), str(wrapper)], capture_output=True, text=True,
                         timeout=60, check=False,
                         env={"PATH": f"{spy}:{real}", "REAL_PATH": real, "LANG": "C", "TZ": tz})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    second = timedelta(seconds=1)
    for line in out.stdout.splitlines():
        before, stamp, after = map(datetime.fromisoformat, line.split())
        assert before - second <= stamp <= after + second, line
    assert len(out.stdout.splitlines()) == 12
    if kind != "busybox":  # whose sh runs its own date, not the spy
        assert (tmp_path / "dates").read_text().split() == ["date"]


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("uptime", [True, False])
def test_boot_sh_calls_date_once_while_it_can_count_from_uptime(
    kind: str, uptime: bool, tmp_path: Path
) -> None:
    """A whole run logs with one `date` call (dash: busybox sh runs its own applet); with
    no /proc/uptime to count from, one a line as before. Either way the lines' times are
    the run's."""
    seed = _fake_seed(tmp_path, getpass.getuser())
    extra = {} if uptime else {"LIMA_BOOT_UPTIME": str(tmp_path / "no-uptime")}
    started = time.time()
    result = _run(kind, tmp_path, seed, PATH=_spies(kind, tmp_path, "date"), TZ="NST+3:30",
                  **extra)
    ended = time.time()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (tmp_path / "log" / "lima-init.log").read_text().splitlines()
    stamps = [line[5:24] for line in lines if line.startswith("LIMA ")]
    assert len(stamps) == 9
    zone = timezone(-timedelta(hours=3, minutes=30))
    first = datetime.fromtimestamp(int(started), zone).strftime("%Y-%m-%dT%H:%M:%S")
    last = datetime.fromtimestamp(int(ended) + 1, zone).strftime("%Y-%m-%dT%H:%M:%S")
    assert all(first <= s <= last for s in stamps), (first, stamps, last)
    assert stamps == sorted(stamps)
    if kind == "dash":
        assert len(_spied(tmp_path)) == (1 if uptime else len(stamps))


# What boot.sh may start: its own programs, and the ones its steps' helpers use.
_PROGRAMS = ("awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dirname", "grep",
             "head", "id", "ln", "mkdir", "mktemp", "mv", "rm", "sed", "sleep", "tail", "tee",
             "tr", "loginctl")


@pytest.mark.skipif(not DASH, reason="no dash")
@pytest.mark.parametrize("reboot", [False, True])
def test_the_programs_a_boot_starts(reboot: bool, tmp_path: Path) -> None:
    """A boot with nothing to run, cloud-init done (dash: busybox sh runs its applets
    without a PATH search): tee for the log, date twice (at the start, and after the wait
    for cloud-init), mv a marker, mkdir the steps' logs; on a reboot, sed for the old
    /etc/environment block. /etc/environment gets the seed's block byte for byte, the
    markers are world-readable whatever the umask."""
    seed = tmp_path / "seed"
    seed.mkdir()
    shutil.copy(cidata.ASSETS / "boot.sh", seed / "boot.sh")
    (seed / "lima.env").write_text("LIMA_CIDATA_IID=iid-test\n")
    (seed / "meta-data").write_text("instance-id: iid-test\n")
    block = '#LIMA-START\nA="x \\\\ y"\r\nB=$HOME\n#LIMA-END'  # no newline at its end
    (seed / "etc_environment").write_text(block)
    env_file = tmp_path / "environment"
    env_file.write_text("KEEP=1\n" + ("#LIMA-START\nOLD=1\n#LIMA-END\n" if reboot else ""))
    ci = tmp_path / "cloud-init-run"
    ci.mkdir()
    (ci / "result.json").write_text(CI_DONE)
    (tmp_path / "log").mkdir()  # /var/log is there
    result = _run("dash", tmp_path, seed, PATH=_spies("dash", tmp_path, *_PROGRAMS),
                  LIMA_BOOT_CLOUD_INIT_RUN=str(ci), umask=0o077)
    assert result.returncode == 0, result.stdout + result.stderr
    started = sorted(w[0] for w in map(str.split, _spied(tmp_path)) if w and w[0] in _PROGRAMS)
    assert started == sorted(["tee", "date", "date", "mv", "mv", "mkdir"]
                             + (["sed"] if reboot else []))
    assert env_file.read_bytes() == ("KEEP=1\n" + block).encode()
    for marker in ("lima-ssh-ready", "lima-boot-done"):
        assert (tmp_path / "run" / marker).read_text() == "iid-test\n"
        assert (tmp_path / "run" / marker).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "lima-boot-done", "lima-provision", "lima-shares-done", "lima-ssh-ready"]


@pytest.mark.parametrize("kind", SHELLS)
def test_the_log_directory_is_made_when_missing(kind: str, tmp_path: Path) -> None:
    seed = _fake_seed(tmp_path, getpass.getuser())
    log = tmp_path / "var" / "log" / "lima-init.log"
    result = _run(kind, tmp_path, seed, LIMA_BOOT_LOG=str(log))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "boot.sh finished" in log.read_text()


@pytest.mark.parametrize("kind", SHELLS)
def test_missing_user_is_a_bounded_failure(kind: str, tmp_path: Path) -> None:
    seed = _fake_seed(tmp_path, "no-such-user-limapy")
    result = _run(kind, tmp_path, seed, LIMA_BOOT_USER_TIMEOUT="1")
    assert result.returncode != 0
    iid, failures = cidata.parse_boot_failed((tmp_path / "run" / "lima-boot-failed").read_text())
    assert iid == "iid-test"
    assert len(failures) == 1 and "no-such-user-limapy" in failures[0]
    assert "user-script" not in (tmp_path / "order").read_text()


@pytest.mark.parametrize("kind", SHELLS)
def test_real_seed_runs_end_to_end(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ISO build_cidata writes, unpacked, runs under boot.sh: data, system and user steps."""
    monkeypatch.setenv("HOME", str(tmp_path))
    user = getpass.getuser()
    owner = f"{os.getuid()}:{os.getgid()}"
    out = tmp_path / "out"
    spec = make_spec(
        user=make_spec().user.__class__(
            name=user, uid=os.getuid(), comment="", home=str(tmp_path), shell="/bin/sh"
        ),
        param={"OUT": str(out), "Q": 'it\'s "quoted" $HOME'},
        env={"GREETING": "hi there"},
        provision=(
            Provision(
                mode="data",
                path=f"{out}/data.txt",
                content="{{.Param.OUT}}\n",
                owner=owner,
                permissions="600",
            ),
            Provision(mode="system", script='#!/bin/sh\necho "sys $GREETING" >"$PARAM_OUT/sys"\n'),
            Provision(
                mode="user", script='#!/bin/sh\necho "usr $PARAM_OUT $PARAM_Q" >"$PARAM_OUT/usr"\n'
            ),
        ),
    )
    iso = cidata.build_cidata(
        spec, tmp_path / "inst", iid="iid-e2e", identity=ensure_identity(), host_env={}
    )
    seed = tmp_path / "seed"
    extract_iso(iso, seed)
    # Our own boot scripts set up the machine they run on (host name, DNS and /etc/hosts,
    # data disks, the guest agent in /usr/local/bin): never this one. Only the provision
    # steps are kept; the guests' own tests run the rest.
    for script in (seed / "boot").iterdir():
        if not script.name.startswith("50-provision"):
            script.unlink()
    out.mkdir()
    result = _run(kind, tmp_path, seed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "run" / "lima-boot-done").read_text() == "iid-e2e\n"
    assert (out / "data.txt").read_text() == f"{out}\n"
    assert oct((out / "data.txt").stat().st_mode & 0o777) == "0o600"
    assert (out / "sys").read_text() == "sys hi there\n"
    assert (out / "usr").read_text() == f'usr {out} it\'s "quoted" $HOME\n'


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.parametrize("kind", SHELLS)
def test_real_user_switch(kind: str, tmp_path: Path) -> None:
    """Without the test hook: runuser (dash, host PATH) or busybox su (busybox-only PATH)."""
    seed = _fake_seed(tmp_path, "root")
    result = _run(kind, tmp_path, seed, LIMA_BOOT_RUN_AS="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "order").read_text().split()[-1] == "user-script"
    assert (tmp_path / "order.user").read_text().startswith("user=root ")
    assert not (tmp_path / "run-as.log").exists()


@pytest.mark.parametrize("kind", SHELLS)
def test_what_needs_cloud_init_or_python3_is_reported_not_skipped(
    kind: str, tmp_path: Path
) -> None:
    """A guest without cloud-init (build:tiny) cannot install caCerts or upgrade packages,
    and one without python3 cannot run yq steps: each is a failure by name."""
    seed = _fake_seed(tmp_path, getpass.getuser())
    with (seed / "lima.env").open("a") as env:
        env.write("LIMA_CIDATA_UPGRADE_PACKAGES=1\nLIMA_CIDATA_CA_CERTS=2\n"
                  "LIMA_CIDATA_YQ_PROVISION_00000006_PATH=/etc/x.json\n")
    (seed / "provision.yq").mkdir()
    (seed / "provision.yq" / "00000006").write_text(".a = 1")
    (seed / "provision.yq" / "00000006.json").write_text("[]")
    with (seed / "provision.labels").open("a") as labels:
        labels.write('provision.yq/00000006\tprovision[6] (mode: yq) "/etc/x.json"\n')
    extra = {}
    if kind == "dash":  # the host has python3: hide it as the tiny guest does
        bin_dir = tmp_path / "nopy"
        bin_dir.mkdir()
        for tool in APPLETS:
            found = shutil.which(tool)
            if found:
                (bin_dir / tool).symlink_to(found)
        extra["PATH"] = str(bin_dir)
    result = _run(kind, tmp_path, seed, **extra)
    assert result.returncode != 0
    _, failures = cidata.parse_boot_failed((tmp_path / "run" / "lima-boot-failed").read_text())
    assert failures == [
        'provision[6] (mode: yq) "/etc/x.json": not run: mode yq needs python3 in the guest, '
        "which has none",
        "upgradePackages: not done: this guest has no cloud-init to upgrade its packages",
        "caCerts: not installed: this guest has no cloud-init to install them",
    ]


@pytest.mark.parametrize("kind", SHELLS)
def test_timezone_without_cloud_init(kind: str, tmp_path: Path) -> None:
    """The zone is linked where the guest has its zoneinfo; else only a warning (the
    builtin is the host's zone, which a tiny guest cannot have)."""
    seed = _fake_seed(tmp_path, getpass.getuser())
    with (seed / "lima.env").open("a") as env:
        env.write("LIMA_CIDATA_TIMEZONE=Europe/Paris\n")
    zoneinfo = tmp_path / "zoneinfo"
    (zoneinfo / "Europe").mkdir(parents=True)
    (zoneinfo / "Europe" / "Paris").write_text("TZif")
    files = {"LIMA_BOOT_ZONEINFO": str(zoneinfo),
             "LIMA_BOOT_LOCALTIME": str(tmp_path / "localtime"),
             "LIMA_BOOT_TIMEZONE_FILE": str(tmp_path / "timezone")}
    result = _run(kind, tmp_path, seed, **files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.readlink(tmp_path / "localtime") == str(zoneinfo / "Europe" / "Paris")
    assert (tmp_path / "timezone").read_text() == "Europe/Paris\n"
    shutil.rmtree(zoneinfo)
    (tmp_path / "localtime").unlink()
    result = _run(kind, tmp_path, seed, **files)
    assert result.returncode == 0  # a warning, not a failure
    assert "timezone Europe/Paris not set" in (tmp_path / "log" / "lima-init.log").read_text()


def _seed_with_shares(tmp: Path, mount_type: str, points: list[str],
                      mounted: list[str]) -> tuple[Path, Path, Path]:
    """A fake seed whose lima.env lists `points` as shares of `mount_type`; a mount table
    with / and `mounted`; an (empty) cloud-init run directory. -> (seed, mounts, run dir)"""
    seed = _fake_seed(tmp, getpass.getuser())
    with (seed / "lima.env").open("a") as env:
        env.write(f"LIMA_CIDATA_MOUNTTYPE={mount_type}\nLIMA_CIDATA_MOUNTS={len(points)}\n")
        env.writelines(f"LIMA_CIDATA_MOUNTS_{i}_MOUNTPOINT={p}\n" for i, p in enumerate(points))
    mounts = tmp / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\n"
                      + "".join(f"share{i} {p} {mount_type} ro 0 0\n"
                                for i, p in enumerate(mounted)))
    ci = tmp / "cloud-init-run"
    ci.mkdir()
    return seed, mounts, ci


@pytest.mark.parametrize("kind", SHELLS)
def test_provisioning_waits_for_the_shares_unit_not_for_cloud_init(
    kind: str, tmp_path: Path
) -> None:
    """Beside the shares' unit, `mode: boot` steps run at once; provisioning steps once
    every 9p share is in the mount table, though cloud-init has long finished (nothing in
    cloud-init waits for that unit)."""
    seed, mounts, ci = _seed_with_shares(tmp_path, "9p", ["/home/me", "/tmp/lima"],
                                         ["/home/me"])
    (ci / "result.json").write_text('{"v1": {"errors": []}}')
    # The unit mounts the second share a moment later, then says it is done.
    _script(seed / "boot" / "20-mounts-later",
            f'( sleep 1; echo "share1 /tmp/lima 9p rw 0 0" >>"{mounts}";'
            f' echo iid-test >"{tmp_path}/run/lima-shares-done" ) &\n'
            f'grep -c . "{mounts}" >"{tmp_path}/seen-by-boot"\n')
    result = _run(kind, tmp_path, seed, LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                  LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_SHARES_UNIT="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "seen-by-boot").read_text().strip() == "2"
    assert (tmp_path / "run" / "lima-boot-done").exists()
    log = (tmp_path / "log" / "lima-init.log").read_text()
    assert "Waiting for the mounts" in log
    assert "not mounted" not in log
    # The provisioning steps ran after the mount: the log says so in order.
    assert log.index("Waiting for the mounts") < log.index("provision.dependency/00000001")


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize(("unit", "marker"), [
    ("", None),  # boot.sh mounted the shares itself: nothing more to wait for
    ("1", "iid-test"),  # the shares' unit of this boot has ended
    ("1", None),  # the unit never ends: the timeout
    ("1", "iid-old"),  # an earlier boot's marker does not count: the timeout
])
def test_a_share_that_never_mounts_is_a_warning(
    kind: str, tmp_path: Path, unit: str, marker: str | None
) -> None:
    seed, mounts, ci = _seed_with_shares(tmp_path, "virtiofs", ["/nowhere"], [])
    (ci / "result.json").write_text('{"v1": {"errors": []}}')
    if marker:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "lima-shares-done").write_text(f"{marker}\n")
    started = time.monotonic()
    result = _run(kind, tmp_path, seed, LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                  LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_SHARES_UNIT=unit,
                  LIMA_BOOT_MOUNT_TIMEOUT="1")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tmp_path / "log" / "lima-init.log").read_text()
    assert "/nowhere is not mounted" in log
    assert (tmp_path / "order").read_text().split()[-1] == "user-script"
    waited = unit == "1" and marker != "iid-test"
    assert ("Waiting for the mounts" in log) == waited
    if waited:
        assert took >= 1, took


@pytest.mark.parametrize("kind", SHELLS)
def test_shares_are_in_fstab_and_mounted_before_cloud_init_would(
    kind: str, tmp_path: Path
) -> None:
    """The seed's fstab lines go into fstab once and each share not mounted yet is mounted
    from there, so cloud-init's mounts module finds nothing to change (no daemon-reload)."""
    a, b = tmp_path / "share-a", tmp_path / "share-b"
    seed, mounts, ci = _seed_with_shares(tmp_path, "9p", [str(a), str(b)], [str(b)])
    line_a = f"tag-a\t{a}\t9p\tro,trans=virtio,comment=cloudconfig\t0\t0"
    line_b = f"tag-b\t{b}\t9p\trw,trans=virtio,comment=cloudconfig\t0\t0"
    (seed / "fstab").write_text(f"{line_a}\n{line_b}\n")
    root = "LABEL=lima-root\t/\text4\tdefaults\t0\t0"
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{root}\n{line_b}\n")  # b: written by cloud-init on an earlier boot
    # mount(8) given a mount point mounts it as fstab says: here it records the call and
    # adds the share to the mount table.
    _script(tmp_path / "mount",
            f'echo "$@" >>"{tmp_path}/mount.log"\necho "tag-a $1 9p ro 0 0" >>"{mounts}"\n')
    (ci / "result.json").write_text('{"v1": {"errors": []}}')
    for _ in range(2):  # a second boot.sh run (a reboot) adds and mounts nothing more
        result = _run(kind, tmp_path, seed, LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                      LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_FSTAB=str(fstab),
                      LIMA_BOOT_MOUNT=str(tmp_path / "mount"))
        assert result.returncode == 0, result.stdout + result.stderr
    assert fstab.read_text().splitlines() == [root, line_b, line_a]
    assert (tmp_path / "mount.log").read_text().split() == [str(a)]
    assert a.is_dir()
    log = (tmp_path / "log" / "lima-init.log").read_text()
    assert "Waiting for the mounts" not in log and "WARNING" not in log


def _one_share(tmp: Path) -> tuple[Path, Path, Path, Path, str, str, Path]:
    """A seed with one 9p share (not mounted) and its fstab line, and an fstab holding only
    /. -> (share, seed, mount table, cloud-init run dir, its line, /'s line, fstab)"""
    a = tmp / "share-a"
    seed, mounts, ci = _seed_with_shares(tmp, "9p", [str(a)], [])
    line_a = f"tag-a\t{a}\t9p\tro,trans=virtio,comment=cloudconfig\t0\t0"
    (seed / "fstab").write_text(f"{line_a}\n")
    root = "LABEL=lima-root\t/\text4\tdefaults\t0\t0"
    fstab = tmp / "fstab"
    fstab.write_text(f"{root}\n")
    return a, seed, mounts, ci, line_a, root, fstab


@pytest.mark.parametrize("kind", SHELLS)
def test_mounts_mode_only_puts_the_shares_in_fstab_and_mounts_them(
    kind: str, tmp_path: Path
) -> None:
    """`boot.sh --mounts` (a unit of its own, started by cloud-init's bootcmd): the
    seed's lines in fstab once and the shares mounted, then its end marker; nothing else
    run."""
    a, seed, mounts, ci, line_a, root, fstab = _one_share(tmp_path)
    _script(tmp_path / "mount",
            f'echo "$@" >>"{tmp_path}/mount.log"\necho "tag-a $1 9p ro 0 0" >>"{mounts}"\n')
    for _ in range(2):
        result = _run(kind, tmp_path, seed, "--mounts", LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                      LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_FSTAB=str(fstab),
                      LIMA_BOOT_MOUNT=str(tmp_path / "mount"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == ""
    assert fstab.read_text().splitlines() == [root, line_a]
    assert (tmp_path / "mount.log").read_text().split() == [str(a)]
    assert [m.name for m in (tmp_path / "run").glob("lima-*")] == ["lima-shares-done"]
    assert (tmp_path / "run" / "lima-shares-done").read_text() == "iid-test\n"
    assert not (tmp_path / "log" / "lima-init.log").exists()


@pytest.mark.parametrize("kind", SHELLS)
def test_stale_share_lines_go_and_every_other_line_stays(kind: str, tmp_path: Path) -> None:
    """cloud-init no longer rewrites fstab (user-data has no `mounts:`), so boot.sh drops
    the lines of shares removed from lima.yaml: cloud-init's comment, type 9p or virtiofs,
    not on the seed. A user's own 9p line, swap, other cloudconfig lines stay, in order.
    fstab is replaced whole (same mode), once; the next run leaves it as it is."""
    a, seed, mounts, ci, line_a, root, fstab = _one_share(tmp_path)
    user_9p = "mine\t/mnt/mine\t9p\ttrans=virtio,nofail\t0\t0"
    swap = "/swap.img\tnone\tswap\tsw,comment=cloudconfig\t0\t0"
    ephemeral = ("/dev/vdb1\t/mnt\tauto\tdefaults,nofail,comment=cloudconfig\t0\t2")
    stale_9p = "tag-old\t/mnt/old\t9p\tro,trans=virtio,nofail,comment=cloudconfig\t0\t0"
    stale_vfs = "tag-v\t/mnt/v\tvirtiofs\trw,nofail,comment=cloudconfig\t0\t0"
    comment = "# tag-c /mnt/c 9p comment=cloudconfig 0 0"
    fstab.write_text("\n".join([root, stale_9p, user_9p, comment, swap, stale_vfs,
                                ephemeral]) + "\n")
    fstab.chmod(0o640)
    _script(tmp_path / "mount",
            f'echo "$@" >>"{tmp_path}/mount.log"\necho "tag-a $1 9p ro 0 0" >>"{mounts}"\n')
    kept = [root, user_9p, comment, swap, ephemeral, line_a]
    inodes, outputs = [], []
    for _ in range(2):
        result = _run(kind, tmp_path, seed, "--mounts", LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                      LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_FSTAB=str(fstab),
                      LIMA_BOOT_MOUNT=str(tmp_path / "mount"))
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
        assert fstab.read_text().splitlines() == kept
        assert fstab.stat().st_mode & 0o777 == 0o640
        inodes.append(fstab.stat().st_ino)
        assert sorted(f.name for f in tmp_path.glob("fstab*")) == ["fstab"]  # no temp file
    first, second = outputs
    assert "/mnt/old" in first and "/mnt/v" in first  # the first run said what went
    assert second == ""
    assert inodes[0] == inodes[1]  # the second run did not rewrite it
    assert (tmp_path / "mount.log").read_text().split() == [str(a)]


@pytest.mark.parametrize("kind", SHELLS)
def test_with_no_share_left_every_share_line_goes(kind: str, tmp_path: Path) -> None:
    """lima.yaml lost its last share: the seed has no fstab, and the old shares' lines
    still go (nothing is mounted); a user's own 9p line stays."""
    _a, seed, mounts, ci, line_a, root, fstab = _one_share(tmp_path)
    (seed / "fstab").unlink()
    user_9p = "mine\t/mnt/mine\t9p\ttrans=virtio,nofail\t0\t0"
    fstab.write_text("\n".join([root, line_a, user_9p]) + "\n")
    _script(tmp_path / "mount", f'echo "$@" >>"{tmp_path}/mount.log"\n')
    result = _run(kind, tmp_path, seed, "--mounts", LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                  LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_FSTAB=str(fstab),
                  LIMA_BOOT_MOUNT=str(tmp_path / "mount"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert fstab.read_text().splitlines() == [root, user_9p]
    assert not (tmp_path / "mount.log").exists()
    assert (tmp_path / "run" / "lima-shares-done").read_text() == "iid-test\n"


@pytest.mark.parametrize("kind", SHELLS)
def test_without_stale_lines_fstab_is_only_appended_to(kind: str, tmp_path: Path) -> None:
    """Nothing to remove: fstab keeps its inode (appended to, not replaced); a last line
    without a newline stays a line of its own."""
    _a, seed, mounts, ci, line_a, root, fstab = _one_share(tmp_path)
    fstab.write_text(root)  # no final newline
    inode = fstab.stat().st_ino
    _script(tmp_path / "mount", f'echo "tag-a $1 9p ro 0 0" >>"{mounts}"\n')
    result = _run(kind, tmp_path, seed, "--mounts", LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                  LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_FSTAB=str(fstab),
                  LIMA_BOOT_MOUNT=str(tmp_path / "mount"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert fstab.read_text() == f"{root}\n{line_a}\n"
    assert fstab.stat().st_ino == inode


@pytest.mark.parametrize("kind", SHELLS)
def test_beside_the_mounts_unit_boot_sh_leaves_the_shares_to_it(
    kind: str, tmp_path: Path
) -> None:
    """Started with LIMA_BOOT_SHARES_UNIT (cloud-init's bootcmd also starts `boot.sh
    --mounts` as a unit), boot.sh neither writes fstab nor mounts: it waits for the
    shares that unit mounts, then provisions. Both mounting at once raced."""
    a, seed, mounts, ci, _line, root, fstab = _one_share(tmp_path)
    _script(tmp_path / "mount", f'echo "$@" >>"{tmp_path}/mount.log"\n')
    (tmp_path / "result.json").write_text('{"v1": {"errors": []}}')
    # Cloud-init's result, then, a second later, the unit's mount.
    _script(seed / "boot" / "20-unit-mounts-later",
            f'mv "{tmp_path}/result.json" "{ci}/"\n'
            f'( sleep 1; echo "tag-a {a} 9p ro 0 0" >>"{mounts}" ) &\n')
    result = _run(kind, tmp_path, seed, LIMA_BOOT_CLOUD_INIT_RUN=str(ci),
                  LIMA_BOOT_MOUNTS_FILE=str(mounts), LIMA_BOOT_FSTAB=str(fstab),
                  LIMA_BOOT_MOUNT=str(tmp_path / "mount"), LIMA_BOOT_CLOUD_INIT_TIMEOUT="10",
                  LIMA_BOOT_SHARES_UNIT="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert fstab.read_text() == f"{root}\n"
    assert not (tmp_path / "mount.log").exists()
    assert (tmp_path / "run" / "lima-boot-done").exists()
    log = (tmp_path / "log" / "lima-init.log").read_text()
    assert "Waiting for the mounts" in log and "not mounted" not in log
    assert log.index("Waiting for the mounts") < log.index("provision.dependency/00000001")


@pytest.mark.parametrize("kind", SHELLS)
def test_without_cloud_init_the_shares_are_left_to_the_host_agent(
    kind: str, tmp_path: Path
) -> None:
    a = tmp_path / "share-a"
    seed, mounts, _ = _seed_with_shares(tmp_path, "9p", [], [])
    (seed / "fstab").write_text(f"tag-a\t{a}\t9p\tro,comment=cloudconfig\t0\t0\n")
    fstab = tmp_path / "fstab"
    fstab.write_text("LABEL=lima-root\t/\text4\tdefaults\t0\t0\n")
    _script(tmp_path / "mount", f'echo "$@" >>"{tmp_path}/mount.log"\n')
    result = _run(kind, tmp_path, seed, LIMA_BOOT_MOUNTS_FILE=str(mounts),
                  LIMA_BOOT_FSTAB=str(fstab), LIMA_BOOT_MOUNT=str(tmp_path / "mount"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert fstab.read_text() == "LABEL=lima-root\t/\text4\tdefaults\t0\t0\n"
    assert not (tmp_path / "mount.log").exists() and not a.exists()


# -- boot/05-host-dns.sh -------------------------------------------------------------------

_HOST_DNS = cidata.ASSETS / "boot" / "05-host-dns.sh"
_ROOT = os.geteuid() == 0
_GATEWAY, _RESOLVER = "192.168.5.2", "192.168.5.4"


def _host_dns(kind: str, tmp: Path, *, umask: int = 0o022, user: int | None = None,
              **extra: str) -> subprocess.CompletedProcess[str]:
    """05-host-dns.sh on files under tmp (hosts, resolv.conf; no stub), as root unless
    `user`."""
    argv, env = _shell_env(kind, tmp)
    env.update(LIMA_BOOT_HOSTS=str(tmp / "hosts"), LIMA_BOOT_RESOLV_CONF=str(tmp / "resolv.conf"),
               LIMA_BOOT_RESOLVED_STUB=str(tmp / "no-stub"), LIMA_CIDATA_SLIRP_DNS="192.168.5.3",
               LIMA_CIDATA_SLIRP_GATEWAY=_GATEWAY, LIMA_CIDATA_HOST_RESOLVER=_RESOLVER)
    env.update(extra)
    return subprocess.run([*argv, str(_HOST_DNS)], env=env, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, check=False, umask=umask,
                          user=user)


def _hosts_as_grep_left_them(text: str) -> str:
    """What the script's earlier `$(grep -v "host\\.lima\\.internal")` and printf wrote."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    kept = "\n".join(line for line in lines if "host.lima.internal" not in line)
    return kept.rstrip("\n") + f"\n{_GATEWAY}\thost.lima.internal\n"


_HOSTS = [
    "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n",
    f"127.0.0.1 localhost\n{_GATEWAY}\thost.lima.internal\n\n# *.lima [x] ? \\n $HOME\n\n\n",
    "  10.0.0.1   spaced  \n\t10.0.0.2 tabbed\n10.0.0.9 old.host.lima.internal\nno-newline",
    "",
]


@pytest.mark.skipif(not _ROOT, reason="05-host-dns.sh does nothing but as root")
@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("hosts", range(len(_HOSTS)))
def test_host_dns_rewrites_hosts_in_place(kind: str, hosts: int, tmp_path: Path) -> None:
    """/etc/hosts gets host.lima.internal's line, every other line as grep -v left it, and
    keeps its inode and mode (written in place, as `cat >` did)."""
    text = _HOSTS[hosts]
    f = tmp_path / "hosts"
    f.write_text(text)
    f.chmod(0o604)
    inode = f.stat().st_ino
    for _ in range(2):  # a second run replaces the line, not adds one
        result = _host_dns(kind, tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        assert f.read_text() == _hosts_as_grep_left_them(text)
        assert (f.stat().st_ino, f.stat().st_mode & 0o777) == (inode, 0o604)


@pytest.mark.skipif(not _ROOT, reason="05-host-dns.sh does nothing but as root")
@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("before", ["symlink", "file", "dangling symlink", "none"])
def test_host_dns_replaces_resolv_conf_with_one_rename(
    kind: str, before: str, tmp_path: Path
) -> None:
    """resolv.conf, a symlink to systemd-resolved's stub or a file, is replaced by the
    script's own, mode 644 whatever the umask; the stub is not written through; no temp
    file is left."""
    conf = tmp_path / "resolv.conf"
    stub = tmp_path / "stub-resolv.conf"
    stub.write_text("nameserver 127.0.0.53\n")
    if before == "symlink":
        conf.symlink_to(stub)
    elif before == "dangling symlink":
        conf.symlink_to(tmp_path / "gone")
    elif before == "file":
        conf.write_text("nameserver 10.0.0.1\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    result = _host_dns(kind, tmp_path, umask=0o077)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not conf.is_symlink()
    assert conf.read_text() == (
        "# limapy hostResolver: the host agent's DNS server, over TCP (QEMU guestfwd)\n"
        f"nameserver {_RESOLVER}\noptions use-vc\n")
    assert conf.stat().st_mode & 0o777 == 0o644
    assert stub.read_text() == "nameserver 127.0.0.53\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "resolv" in p.name) == [
        "resolv.conf", "stub-resolv.conf"]


@pytest.mark.skipif(not _ROOT, reason="05-host-dns.sh does nothing but as root")
@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("stub", [True, False])
def test_host_dns_off_gives_the_system_its_resolv_conf_back(
    kind: str, stub: bool, tmp_path: Path
) -> None:
    """hostResolver off: the script's resolv.conf becomes the stub's symlink again (or,
    with no stub, the slirp DNS); anyone else's is left alone."""
    conf = tmp_path / "resolv.conf"
    if stub:
        (tmp_path / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    extra = {"LIMA_CIDATA_HOST_RESOLVER": ""}
    if stub:
        extra["LIMA_BOOT_RESOLVED_STUB"] = str(tmp_path / "stub-resolv.conf")
    conf.write_text("# mine\nnameserver 10.0.0.1\n")
    assert _host_dns(kind, tmp_path, **extra).returncode == 0
    assert conf.read_text() == "# mine\nnameserver 10.0.0.1\n"
    conf.write_text(f"# limapy hostResolver: ...\nnameserver {_RESOLVER}\noptions use-vc\n")
    assert _host_dns(kind, tmp_path, **extra).returncode == 0
    if stub:
        assert os.readlink(conf) == str(tmp_path / "stub-resolv.conf")
    else:
        assert conf.read_text() == "nameserver 192.168.5.3\n"
    assert (tmp_path / "hosts").read_text() == (
        f"127.0.0.1 localhost\n{_GATEWAY}\thost.lima.internal\n")


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("old_systemd", [False, True])
def test_guest_agent_unit_yields_the_cpu_while_the_system_starts(
    kind: str, old_systemd: bool, tmp_path: Path,
) -> None:
    """Under systemd the agent is a transient unit with a tenth of the default startup CPU
    weight (Running does not wait for it); a systemd that refuses the property gets the
    unit without it."""
    util, bindir, run = tmp_path / "util", tmp_path / "bin", tmp_path / "run"
    util.mkdir()
    bindir.mkdir()
    (run / "system").mkdir(parents=True)
    (util / "lima-guestagent").write_text("#!/usr/bin/python3\n")
    (util / "lima-guestagent.sh").write_text("#!/bin/sh\n")
    refuse = ('case "$*" in *StartupCPUWeight*) echo "Unknown assignment" >&2; exit 1;; esac\n'
              if old_systemd else "")
    spy = tmp_path / "spy"
    _script(spy / "systemd-run", f'echo "systemd-run $*" >>"{tmp_path}/spy.log"\n{refuse}')
    _script(spy / "systemctl", f'echo "systemctl $*" >>"{tmp_path}/spy.log"\n')
    argv, env = _shell_env(kind, tmp_path)
    env.update(PATH=f"{spy}:{env['PATH']}", LIMA_CIDATA_MNT=str(tmp_path),
               LIMA_BOOT_UID="0", LIMA_BOOT_BIN_DIR=str(bindir),
               LIMA_BOOT_SYSTEMD_RUN_DIR=str(run))
    result = subprocess.run([*argv, str(cidata.ASSETS / "boot" / "30-guestagent.sh")],
                            env=env, capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    agent = next(bindir.iterdir())
    assert agent.name in ("lima-guestagent", "lima-guestagent.sh")
    unit = f"--no-block --collect --unit=lima-guestagent -p Restart=always -p RestartSec=1 {agent}"
    weighted = unit.replace("-p Restart=always", "-p StartupCPUWeight=10 -p Restart=always")
    assert _spied(tmp_path) == [f"systemd-run {weighted}"] + (
        [f"systemd-run {unit}"] if old_systemd else [])


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may write to, under a path anyone may reach (pytest's tmp_path
    is under a directory only its owner can enter)."""
    d = Path(tempfile.mkdtemp(prefix="limapy-boot-", dir="/tmp"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("script", ["05-host-dns.sh", "10-hostname.sh", "20-disks.sh",
                                    "30-guestagent.sh"])
def test_boot_scripts_do_nothing_but_as_root(kind: str, script: str, open_dir: Path) -> None:
    """Not root (nobody, when the tests run as root): the script succeeds at once, starts
    no program (dash: busybox sh runs its applets itself) when boot.sh gave it its uid
    (LIMA_BOOT_UID), and touches nothing, though the files 05-host-dns.sh would write are
    writable. Run by hand (no LIMA_BOOT_UID), id(1) tells, and nothing is touched either."""
    hosts, conf = open_dir / "hosts", open_dir / "resolv.conf"
    hosts.write_text("127.0.0.1 localhost\n")
    conf.write_text("nameserver 10.0.0.1\n")
    for f in (hosts, conf):
        f.chmod(0o666)
    path = _spies(kind, open_dir, *_PROGRAMS, "hostname", "systemd-run", "findfs", "blkid")
    for f in open_dir.rglob("*"):
        f.chmod(0o777 if f.is_dir() or f.parent.name == "spy" else f.stat().st_mode | 0o666)
    before = sorted(str(f) for f in open_dir.rglob("*"))
    argv, env = _shell_env(kind, open_dir)
    env.update(PATH=path, LIMA_CIDATA_MNT=str(open_dir), LIMA_CIDATA_DISKS="1",
               LIMA_CIDATA_DISK_0_NAME="data", LIMA_CIDATA_DISK_0_DEVICE="nowhere",
               LIMA_BOOT_HOSTS=str(hosts), LIMA_BOOT_RESOLV_CONF=str(conf),
               LIMA_CIDATA_SLIRP_GATEWAY=_GATEWAY, LIMA_CIDATA_HOST_RESOLVER=_RESOLVER)
    for uid in (str(os.getuid() if not _ROOT else 65534), None):
        if uid is not None:
            env["LIMA_BOOT_UID"] = uid
        else:
            env.pop("LIMA_BOOT_UID", None)
        result = subprocess.run([*argv, str(cidata.ASSETS / "boot" / script)], env=env,
                                capture_output=True, text=True, timeout=30, check=False,
                                stdin=subprocess.DEVNULL, user=65534 if _ROOT else None)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        assert hosts.read_text() == "127.0.0.1 localhost\n"
        assert conf.read_text() == "nameserver 10.0.0.1\n"
        # (spy.log: the spied id's record)
        assert sorted(str(f) for f in open_dir.rglob("*") if f.name != "spy.log") == before
        if uid is not None:
            assert _spied(open_dir) == []


@pytest.mark.skipif(not _ROOT or not DASH, reason="as root, under dash (whose PATH the spies "
                    "are on)")
def test_hostname_already_set_starts_no_program(tmp_path: Path) -> None:
    """10-hostname.sh, with meta-data naming this machine as it is named: nothing to do,
    and neither id, sed nor hostname started to find that out (the names are read from
    /proc). The spied hostname fails, so that a wrong answer changes nothing here."""
    name = Path("/proc/sys/kernel/hostname").read_text().strip()
    (tmp_path / "meta-data").write_text(f"instance-id: iid-test\nlocal-hostname:  {name}\n")
    path = _spies("dash", tmp_path, *_PROGRAMS)
    _script(tmp_path / "spy" / "hostname", f'echo "hostname $*" >>"{tmp_path}/spy.log"\nexit 1\n')
    assert DASH
    result = subprocess.run([DASH, str(cidata.ASSETS / "boot" / "10-hostname.sh")],
                            env={"PATH": path, "LIMA_CIDATA_MNT": str(tmp_path),
                                 "LIMA_BOOT_UID": "0"},
                            capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert _spied(tmp_path) == []
