"""`limactl watch [NAME...] [--json] [--history] [--verbose]`: follow instances' events.

Reached through `lima.cli` (VERBS). As Lima's `watch`: each instance's ha.stdout.log (the
host agent's events, Lima's shape) is followed and every event printed as it arrives, as
`{"instance": NAME, "event": {...}}` with `--json`, else `YYYY-MM-DD HH:MM:SS NAME | running`;
without NAME every instance is followed, including ones created while watching; only events
from after the start unless `--history`; `--verbose` also passes the host agent's
ha.stderr.log lines to stderr. limapy adds (its own top-level keys, so a script reading
Lima's `.event` can `select(.event)`):
- `lifecycle`: status.json changed phase, a condition (Ready, Degraded, RestartRequired,
  Stalled) or its retry record (retries, restarts, nextAttempt, lastError); this is where
  the reconciler's and the folder controller's progress and backoff show;
- `controller`: the instance became managed or unmanaged, paused or resumed
  (`{"managedBy": ..., "paused": ...}`), or a folder controller decided something about it:
  its decision line from `$LIMA_HOME/_controller/NAME.log` (lima.controller.folder
  .DecisionLog), as it was logged (`{"event": "plan", "verdict": ..., "changes": [...]}`,
  `{"event": "pass", "decision": "Wait", ...}`, ...) without the instance key.

A cheap poll (POLL: four wake-ups a second at most) rather than inotify: a few stat()s per
instance per tick, no thread per file, and no event lost to the truncation a start does
to ha.stdout.log (a rewritten file is noticed by its first bytes changing).
A NAME that does not exist yet is waited for (Lima warns and drops it), so
`limactl watch t` can be started before `limactl apply t.yaml` creates it.
Ctrl-C or SIGTERM ends it with exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import click

from lima import paths
from lima.names import validate_name

POLL = 0.25  # seconds between ticks: at most 4 wake-ups a second, even when idle
# status.json's record of failures and backoff (lima.states.model.Status): how a verb's or
# the controller's retries show (the controller's own lines come from _controller/NAME.log).
RETRY_KEYS = ("retries", "restarts", "nextAttempt", "lastError")
HEAD = 128  # bytes of a followed file remembered to notice that it was rewritten
MAX_READ = 4 << 20  # per file per tick: a huge log is caught up over a few ticks


def _now() -> datetime:
    return datetime.now().astimezone()


@dataclass
class Tail:
    """Complete lines appended to one file since the last call, from its start at first."""

    path: Path
    offset: int = 0
    head: bytes = b""
    partial: bytes = b""

    sig: tuple[int, int, int] | None = None

    def lines(self) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            self.offset, self.head, self.partial, self.sig = 0, b"", b"", None
            return []
        size, sig = st.st_size, (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self.sig:
            return []  # untouched since the last read: no open() on an idle tick
        if self.sig is not None and sig[0] != self.sig[0]:
            self.offset, self.head, self.partial = 0, b"", b""  # replaced (a rotated log)
        self.sig = sig
        try:
            with self.path.open("rb") as f:
                head = f.read(HEAD)
                if size < self.offset or not head.startswith(self.head[: len(head)]):
                    self.offset, self.partial = 0, b""  # truncated or rewritten: start over
                self.head = head
                f.seek(self.offset)
                data = f.read(MAX_READ)
        except OSError:
            return []
        self.offset += len(data)
        *done, self.partial = (self.partial + data).split(b"\n")
        return [ln.decode(errors="replace") for ln in done if ln.strip()]


def _parse_time(text: Any) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.astimezone()


def _conditions(status: Any) -> dict[str, tuple[str, str, str]]:
    conds = status.get("conditions") if isinstance(status, dict) else None
    out: dict[str, tuple[str, str, str]] = {}
    for c in conds if isinstance(conds, list) else []:
        if isinstance(c, dict) and isinstance(c.get("type"), str):
            out[c["type"]] = (str(c.get("status", "")), str(c.get("reason", "")),
                              str(c.get("message", "")))
    return out


@dataclass
class Follower:
    """One instance: its host agent log, status.json and controller markers."""

    name: str
    begin: datetime | None  # events older than this are skipped (None: --history)
    verbose: bool = False
    stdout: Tail = field(init=False)
    stderr: Tail = field(init=False)
    decisions: Tail = field(init=False)
    dir: Path = field(init=False)
    status_path: Path = field(init=False)
    ctl_paths: tuple[Path, ...] = field(init=False)
    status_sig: tuple[int, int, int] | None = None
    phase: str = ""
    conds: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    retry: dict[str, Any] = field(default_factory=dict)
    ctl_sig: tuple[Any, ...] | None = None
    ctl: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from lima.controller import managed

        # Paths built once: a tick is a few stat()s per instance and nothing else.
        self.dir = paths.instance_dir(self.name)
        self.stdout = Tail(self.dir / paths.HA_STDOUT)
        self.stderr = Tail(self.dir / paths.HA_STDERR)
        self.status_path = self.dir / paths.STATUS_JSON
        base = managed.control_dir() / self.name
        self.decisions = Tail(base.with_name(base.name + managed.LOG_SUFFIX))
        self.ctl_paths = tuple(base.with_name(base.name + suffix)
                               for suffix in (managed.OWNER_SUFFIX, managed.PAUSED_SUFFIX))

    def prime(self) -> None:
        """Take status.json and the controller markers as they are now, silently: only
        changes from here on are events (with --history the current state is one)."""
        if self.begin is not None:
            self._status_events()
            self._controller_events()

    def poll(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(records to print, host agent stderr lines for --verbose)."""
        records: list[dict[str, Any]] = []
        for line in self.stdout.lines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a foreign or torn line: Lima skips them too
            if not isinstance(ev, dict) or not isinstance(ev.get("status"), dict):
                continue
            when = _parse_time(ev.get("time"))
            if self.begin is not None and when is not None and when < self.begin:
                continue
            records.append({"instance": self.name, "event": ev})
        records += self._status_events() + self._controller_events()
        records += self._decision_events()
        errs = [ln for ln in self.stderr.lines() if self._recent(ln)] if self.verbose else []
        return records, errs

    def _recent(self, line: str) -> bool:
        """A host agent log line (JSON with a time, as Lima's) from after the start; lines
        without a readable time are shown."""
        if self.begin is None:
            return True
        try:
            entry = json.loads(line)
        except ValueError:
            return True
        when = _parse_time(entry.get("time")) if isinstance(entry, dict) else None
        return when is None or when >= self.begin

    def _status_events(self) -> list[dict[str, Any]]:
        p = self.status_path
        try:
            st = os.stat(p)
        except OSError:
            st = None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None
        if sig == self.status_sig:
            return []
        self.status_sig = sig
        try:
            data = json.loads(p.read_bytes()) if st is not None else {}
        except (OSError, ValueError):
            return []  # being replaced (writes are atomic renames) or damaged: next tick
        phase = str(data.get("phase", "")) if isinstance(data, dict) else ""
        conds = _conditions(data)
        if st is None and not self.phase:
            return []
        changed = [{"type": t, "status": s, "reason": r, "message": m}
                   for t, (s, r, m) in conds.items() if self.conds.get(t) != (s, r, m)]
        ev: dict[str, Any] = {"time": _now().isoformat()}
        if phase != self.phase:
            ev.update(phase=phase or "absent", previousPhase=self.phase or None)
        if changed:
            ev["conditions"] = changed
        retry = {k: data.get(k) for k in RETRY_KEYS} if isinstance(data, dict) else {}
        if retry != self.retry and (any(retry.values()) or any(self.retry.values())):
            ev["retry"] = retry  # the whole set: "what is the backoff now" in one record
        self.phase, self.conds, self.retry = phase, conds, retry
        return [{"instance": self.name, "lifecycle": ev}] if len(ev) > 1 else []

    def _controller_events(self) -> list[dict[str, Any]]:
        from lima.controller import managed

        sig = tuple(_sig(p) for p in self.ctl_paths)
        if sig == self.ctl_sig:
            return []
        self.ctl_sig = sig
        now = managed.describe(self.name)
        state = {"managedBy": now.get("managedBy", ""), "paused": bool(now.get("controllerPaused"))}
        before = self.ctl or {"managedBy": "", "paused": False}
        self.ctl = state
        if state == before:
            return []
        return [{"instance": self.name, "controller": {"time": _now().isoformat(), **state}}]


    def _decision_events(self) -> list[dict[str, Any]]:
        """The folder controller's decision lines about this instance since the last tick
        (a rotated log is read from the start of the new file)."""
        out: list[dict[str, Any]] = []
        for line in self.decisions.lines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("event"), str):
                continue
            when = _parse_time(rec.get("time"))
            if self.begin is not None and when is not None and when < self.begin:
                continue
            rec.pop("instance", None)
            out.append({"instance": self.name, "controller": rec})
        return out


def _sig(p: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _exists(name: str) -> bool:
    d = paths.lima_home() / name
    return paths.is_instance_dir(d) and (d / paths.LIMA_YAML).is_file()


class Watcher:
    """What one tick finds: the records to print, in order, and notes for stderr."""

    def __init__(self, names: list[str], *, history: bool = False, verbose: bool = False,
                 begin: datetime | None = None) -> None:
        self.all = not names
        self.begin = None if history else (begin or _now())
        self.verbose = verbose
        self.wanted = names
        self.followers: dict[str, Follower] = {}
        self.notes: list[str] = []
        self._started = False

    def _candidates(self) -> list[str]:
        if not self.all:
            return self.wanted
        home = paths.lima_home()
        try:
            return sorted(p.name for p in home.iterdir() if not p.name.startswith("_"))
        except OSError:
            return []

    def tick(self) -> tuple[list[dict[str, Any]], list[str]]:
        for name in self._candidates():
            if name in self.followers or not _exists(name):
                continue
            f = Follower(name, self.begin, self.verbose)
            if self._started:
                self.notes.append(f"New instance detected: {name}")
            else:
                f.prime()
            self.followers[name] = f
        if not self._started and not self.all:
            self.notes += [f"Waiting for instance {n!r} to be created"
                           for n in self.wanted if n not in self.followers]
        elif not self._started and not self.followers:
            self.notes.append("No instances found")
        self._started = True
        records: list[dict[str, Any]] = []
        errs: list[str] = []
        for name in list(self.followers):
            recs, lines = self.followers[name].poll()
            records += recs
            errs += [f"{name}: {ln}" for ln in lines]
            if not os.path.isdir(self.followers[name].dir):
                # Deleted: followed afresh (from its first event) if created again.
                del self.followers[name]
        notes, self.notes = self.notes + errs, []
        return records, notes


def _stamp(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def human_lines(rec: dict[str, Any]) -> list[str]:
    """Lima's human-readable lines for a host agent event, and ours in the same form."""
    name = rec["instance"]
    msgs: list[str] = []
    if "event" in rec:
        ev = rec["event"]
        when = _parse_time(ev.get("time")) or _now()
        s = ev.get("status") or {}
        if s.get("running"):
            msgs.append("running (degraded)" if s.get("degraded") else "running")
        if s.get("exiting"):
            msgs.append("exiting")
        if s.get("sshLocalPort"):
            msgs.append(f"ssh available on port {s['sshLocalPort']}")
        msgs += [f"error: {e}" for e in s.get("errors") or []]
        if s.get("phase"):  # limapy's boot progress (ssh_ready, provisioned)
            msgs.append(f"boot: {s['phase']}")
    elif "lifecycle" in rec:
        ev = rec["lifecycle"]
        when = _parse_time(ev.get("time")) or _now()
        if "phase" in ev:
            prev = ev.get("previousPhase")
            msgs.append(f"phase: {prev} -> {ev['phase']}" if prev else f"phase: {ev['phase']}")
        for c in ev.get("conditions", []):
            why = f" ({c['reason']})" if c.get("reason") else ""
            msgs.append(f"{c['type']}={c['status']}{why}"
                        + (f": {c['message']}" if c.get("message") else ""))
        if "retry" in ev:
            r = ev["retry"]
            nxt = _parse_time(r.get("nextAttempt")) if r.get("nextAttempt") else None
            msgs.append(f"retries {r.get('retries') or 0}, restarts {r.get('restarts') or 0}"
                        + (f", next attempt at {_stamp(nxt)}" if nxt else "")
                        + (f": {r['lastError']}" if r.get("lastError") else ""))
    else:
        ev = rec["controller"]
        when = _parse_time(ev.get("time")) or _now()
        if "event" in ev:
            msgs.append(f"controller: {decision_text(ev)}")
        elif ev.get("managedBy"):
            msgs.append(f"managed by {ev['managedBy']}" + (" (paused)" if ev.get("paused")
                                                            else ""))
        else:
            msgs.append("not managed by a controller" + (" (paused)" if ev.get("paused")
                                                          else ""))
    return [f"{_stamp(when)} {name} | {m}" for m in msgs]


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def decision_text(ev: dict[str, Any]) -> str:
    """One controller decision in a line: its event, then the plan's changed fields
    (`path old -> new (class)`), a validation problem's file:line field, and the rest as
    key=value; `time` is in the line's date already."""
    parts = [str(ev.get("event"))]
    if ev.get("event") == "pass" and ev.get("decision"):
        parts.append(str(ev["decision"]))
    skip = {"time", "event", "changes", "problems", "action", "reason", "error"}
    skip |= {"decision"} if ev.get("event") == "pass" else set()
    parts += [f"{k}={_short(v)}" for k, v in ev.items() if k not in skip]
    text = " ".join(parts)
    changes = [c for c in ev.get("changes") or [] if isinstance(c, dict)]
    if changes:
        text += ": " + "; ".join(f"{c.get('path')} {_short(c.get('old'))} -> "
                                 f"{_short(c.get('new'))} ({c.get('class')})" for c in changes)
    problems = [p for p in ev.get("problems") or [] if isinstance(p, dict)]
    if problems:
        text += ": " + "; ".join(f"{p.get('file')}:{p.get('line')} {p.get('field')}: "
                                 f"{p.get('message')}" for p in problems)
    for key in ("reason", "error", "action"):
        if ev.get(key):
            text += f"; {key}: {ev[key]}"
    return text


def run(watcher: Watcher, out: TextIO, err: TextIO, as_json: bool,
        stop: threading.Event, poll: float = POLL) -> None:
    """Tick until `stop` is set; print records on `out` and notes on `err`.

    "Watching for events..." comes after the first tick, as Lima prints it after it has
    started following every instance: a caller that waits for it knows that anything
    written from then on is shown."""
    first = True
    while True:
        # After Ctrl-C one more tick: what was written before it is still shown.
        last = stop.is_set()
        records, notes = watcher.tick()
        for note in notes:
            err.write(f"{_stamp(_now())} {note}\n")
        if first:
            err.write(f"{_stamp(_now())} Watching for events...\n")
            first = False
        err.flush()
        for rec in records:
            if as_json:
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")
            else:
                out.writelines(line + "\n" for line in human_lines(rec))
        out.flush()
        if last:
            return
        stop.wait(poll)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Output events as newline-delimited JSON.")
@click.option("--history", is_flag=True, help="Include events from before watch started.")
@click.option("--verbose", is_flag=True, help="Also show the host agents' logs (stderr).")
def watch(names: tuple[str, ...], as_json: bool, history: bool, verbose: bool) -> None:
    """Watch events from instances (all of them, and new ones, without NAME)."""
    for n in names:
        validate_name(n)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Ctrl-C and SIGTERM end the watch cleanly (exit 0): nothing is left half done.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    watcher = Watcher(list(dict.fromkeys(names)), history=history, verbose=verbose)
    run(watcher, sys.stdout, sys.stderr, as_json, stop)
