"""The host agent's port forwarder: lima.yaml `portForwards` applied to the guest's listeners.

The daemon (lima.drivers.hostagent.daemon) starts one `Forwarder` when qemu runs and stops
it before qemu is stopped. At start it binds the static forwards and the guestSocket
forwards (they do not wait for the guest agent); then it reads the guest agent's reports
from ga.sock (QEMU's end of the virtio port io.lima-vm.guest_agent.0; the protocol is
documented in lima/assets/cidata/util/lima-guestagent) and, for every listener added or
removed, asks lima.drivers.portrules where it goes. A forward is a listening socket on the
rule's hostIP (or hostSocket) only; each connection accepted there is carried to the
guest through a `Dialer` (ssh channels, lima.drivers.hostagent.tunnel). A listener on a
wildcard guest address (reachable on the guest's NIC) is instead handed to QEMU as a
`hostfwd` when a `SlirpForwards` is given (lima.drivers.hostagent.slirpfwd): no ssh
encryption on that path, which is what limits throughput in a TCG guest.

UDP listeners (and static UDP forwards) go to QEMU's `hostfwd=udp:` when the listener is on
a wildcard address and the network is not restrict=on, else through a datagram relay over
an ssh exec channel (lima.drivers.hostagent.udprelay), which needs python3 in the guest: a
guest whose agent is the shell one (no python3) gets a `failed` event saying so. `reverse`
rules run `ssh -N -R` children (lima.drivers.hostagent.reversefwd) for as long as the
forwarder runs.

Every decision becomes one of Lima's `portForward` events in ha.stdout.log, through the
`emit` callback: forwarding, not-forwarding, stopping, failed (a host port already taken
names its holder). A lost ga.sock connection is re-established and the agent's next report
re-syncs the forwards; a lost ssh connection is re-established by the dialer on the next
forwarded connection.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from lima.drivers import portrules
from lima.drivers.hostagent.reversefwd import ReverseForward
from lima.drivers.hostagent.slirpfwd import SlirpForward, SlirpForwards, established_on
from lima.drivers.hostagent.tunnel import Dialer, GuestEnd, splice
from lima.drivers.hostagent.udprelay import NO_PYTHON, UDPRelay
from lima.drivers.portrules import HostTarget, Listener, Rule
from lima.drivers.ports import port_holders
from lima.errors import LimaError

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]  # one PortForwardEvent (Lima's field names)

RECONNECT = 0.5  # seconds between attempts to reach ga.sock
UDP_TO_SOCKET = "a UDP port cannot be forwarded to a unix socket"
_ACCEPT_POLL = 0.5
REMOVE_WAIT = 5.0  # seconds stop() waits for a reverse forward's guest socket removal


def parse_report(line: bytes | str) -> set[Listener] | None:
    """The listeners of one guest agent line ("ports"), or None when it is not a report."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("ports"), list):
        return None
    found: set[Listener] = set()
    for entry in doc["ports"]:
        if not isinstance(entry, dict):
            continue
        proto, ip, port = entry.get("proto"), entry.get("ip"), entry.get("port")
        if proto not in ("tcp", "udp") or not isinstance(ip, str) or not isinstance(port, int):
            continue
        try:
            found.add(Listener(proto, portrules.normalize_ip(ip), port))
        except ValueError:
            continue
    return found


def agent_of(line: bytes | str) -> str:
    """Which guest agent wrote a report line: "py" (python3 is there), "sh", or ""."""
    try:
        doc = json.loads(line)
    except ValueError:
        return ""
    agent = doc.get("agent") if isinstance(doc, dict) else None
    return agent if isinstance(agent, str) else ""


def guest_end(listener: Listener) -> GuestEnd:
    """Where to connect in the guest: a wildcard listener is reached on loopback."""
    ip = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listener.ip, listener.ip)
    return GuestEnd(ip=ip, port=listener.port)


def bind_problem(target: HostTarget, exc: OSError) -> str:
    """Why a host address cannot be bound, naming who holds a busy TCP port."""
    where = target.text()
    if exc.errno == errno.EADDRINUSE and target.port:
        holders = port_holders(target.port)
        who = ", ".join(h.describe() for h in holders[:3]) or "another socket"
        return f"{where} is already in use by {who}"
    if exc.errno == errno.EACCES and target.port:
        return f"{where}: binding it needs privileges this user does not have"
    return f"{where}: {exc.strerror or exc}"


class Forward(Protocol):
    target: HostTarget
    proto: str

    def close(self) -> None: ...


class OpenCount:
    """How many forwarded connections are open now (the controller's idle check reads it
    through the host agent's `/v1/info`, as `openConnections`). Shared by every listener
    of a forwarder, so a reload that replaces the listeners keeps counting the
    connections they still carry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class HostListener:
    """One forward: a socket listening on the host; each connection goes to `end`."""

    proto = "tcp"

    def __init__(self, target: HostTarget, end: GuestEnd, dialer: Dialer,
                 count: OpenCount | None = None) -> None:
        self.target, self.end, self.dialer = target, end, dialer
        self.count = count or OpenCount()
        self._stop = threading.Event()
        self.sock = self._bind()
        threading.Thread(target=self._accept, name=f"portfwd {target.text()}",
                         daemon=True).start()

    def _bind(self) -> socket.socket:
        t = self.target
        if t.socket:
            Path(t.socket).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if Path(t.socket).is_socket():
                    os.unlink(t.socket)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = t.socket
        else:
            family = socket.AF_INET6 if ":" in t.ip else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            address = (t.ip, t.port)
        try:
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.settimeout(_ACCEPT_POLL)
        return sock

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            conn.settimeout(None)
            if not self.target.socket:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._carry, args=(conn,), name="portfwd-dial",
                             daemon=True).start()

    def _carry(self, conn: socket.socket) -> None:
        self.count.add(1)
        try:
            remote = self.dialer.open(self.end)
        except Exception as exc:  # any failure only drops this one connection
            self.count.add(-1)
            log.warning("port forward %s -> %s: %s", self.target.text(), self.end.text(), exc)
            conn.close()
            return
        splice(conn, remote, on_done=lambda: self.count.add(-1))

    def close(self) -> None:
        self._stop.set()
        # shutdown() stops the listening at once; a close() alone waits for the accept()
        # blocked in the other thread, and the port could not be bound again meanwhile.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.target.socket:
            with contextlib.suppress(OSError):
                os.unlink(self.target.socket)


class _Reverse:
    """A reverse forward in the forwarder's list of forwards."""

    proto = "reverse"

    def __init__(self, fwd: ReverseForward) -> None:
        self.fwd = fwd
        self.target = HostTarget(socket=fwd.host_socket)

    def close(self) -> None:
        self.fwd.close()


class Forwarder:
    """Applies `rules` (portrules.build_rules) to the guest agent's reports on `ga_path`."""

    def __init__(self, rules: Sequence[Rule], dialer: Dialer, emit: Emit, ga_path: Path, *,
                 ignore_tcp: bool = False, ignore_udp: bool = False,
                 slirp: SlirpForwards | None = None,
                 reverse_ssh: Sequence[str] | None = None) -> None:
        self.rules = list(rules)
        self.dialer = dialer
        self.slirp = slirp
        self.reverse_ssh = list(reverse_ssh) if reverse_ssh else None  # ssh ... alias
        self.agent = ""  # the guest agent's kind, from its reports ("sh": no python3)
        self.emit = emit
        self.ga_path = ga_path
        self.ignore_tcp, self.ignore_udp = ignore_tcp, ignore_udp
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._known: set[Listener] = set()
        self._forwards: dict[Listener, Forward] = {}
        self._fixed: list[Forward] = []  # static and socket forwards: live until stop
        self._reverse_started = False  # reverse forwards wait for the first ssh login
        self._may_log_in = threading.Event()  # guest_running(): the login ahead may start
        self._reader: socket.socket | None = None
        self.reports = 0  # guest agent lines applied (tests and the benchmark read it)
        self.open = OpenCount()  # connections carried now, over every listener

    # --- start / stop ---------------------------------------------------------------------

    def start(self) -> None:
        if self.slirp is not None:
            self.slirp.remove_stale()
        self._bind_fixed(reverse=False)
        threading.Thread(target=self._read_agent, name="guest-agent", daemon=True).start()
        # The ssh login (about a second of a TCG guest's CPU) happens ahead of the first
        # forwarded connection, once the host agent says the guest is Running (the boot
        # no longer needs that CPU); it waits for the guest's sshd on its own. A forward
        # over ssh asked for earlier logs in itself. The reverse forwards start once the
        # login worked (their ssh gives up on a guest still booting): with any, the login
        # happens now, as their sockets are wanted by the time the guest is Running.
        if portrules.reverse_rules(self.rules):
            self._may_log_in.set()
        threading.Thread(target=self._login, name="portfwd-login", daemon=True).start()

    def guest_running(self) -> None:
        """The guest is Running: the login ahead may start."""
        self._may_log_in.set()

    def _login(self) -> None:
        while not self._may_log_in.wait(0.5):
            if self._stop.is_set():
                return
        self.dialer.warm()
        with self._lock:
            if not self._stop.is_set() and not self._reverse_started:
                self._start_reverse()

    def reload(self, rules: Sequence[Rule], *, ignore_tcp: bool = False,
               ignore_udp: bool = False) -> bool:
        """New rules (a live change of portForwards): when they differ, every forward is
        closed and made again from them, over the guest's listeners as last reported.
        False when nothing changed."""
        with self._lock:
            if self._stop.is_set() or (list(rules), ignore_tcp, ignore_udp) == (
                    self.rules, self.ignore_tcp, self.ignore_udp):
                return False
            old = [*self._fixed, *self._forwards.values()]
            known = set(self._known)
            self._fixed, self._forwards, self._known = [], {}, set()
            self.rules = list(rules)
            self.ignore_tcp, self.ignore_udp = ignore_tcp, ignore_udp
            log.info("portForwards changed: making the forwards again")
            for fwd in old:
                fwd.close()
            self._bind_fixed(reverse=self._reverse_started)
        self.apply(known)
        return True

    def _bind_fixed(self, *, reverse: bool = True) -> None:
        """The static and guestSocket forwards: bound before any report, kept until stop."""
        for listener, target in portrules.static_targets(self.rules):
            log.info("static forward of %s %s to %s", listener.proto.upper(),
                     listener.guest_addr(), target.text())
            if listener.proto == "udp":
                if target.socket:
                    self._event("failed", "udp", listener.guest_addr(), target.text(),
                                UDP_TO_SOCKET)
                elif not self._in_use(target, "udp"):
                    self._relay(listener, target, fixed=True)
                continue
            self._listen(target, guest_end(listener), "tcp", listener.guest_addr(),
                         fixed=True)
        for path, target in portrules.socket_rules(self.rules):
            log.info("forwarding guest socket %s to %s", path, target.text())
            self._listen(target, GuestEnd(socket=path), "tcp", path, fixed=True, quiet=True)
        if reverse:
            self._start_reverse()

    def _start_reverse(self) -> None:
        self._reverse_started = True
        for guest_path, host_path in portrules.reverse_rules(self.rules):
            self._reverse(guest_path, host_path)

    def _reverse(self, guest_path: str, host_path: str) -> None:
        if self.reverse_ssh is None:
            self._event("failed", "tcp", guest_path, host_path,
                        "reverse forwarding needs the instance's ssh.config")
            return

        def failed(why: str) -> None:
            self._event("failed", "tcp", guest_path, host_path, why)

        def remove(path: str) -> None:
            def run() -> None:
                try:
                    chan = self.dialer.execute(f"rm -f {shlex.quote(path)}")
                    chan.recv_exit_status()
                    chan.close()
                except Exception as exc:  # the guest may be gone already
                    log.info("cannot remove %s in the guest: %s", path, exc)

            # A guest that is gone must not hold up the host agent's stop: the ssh login
            # it would wait for gives up when the dialer is closed right after.
            done = threading.Thread(target=run, name="reverse-cleanup", daemon=True)
            done.start()
            done.join(REMOVE_WAIT)

        fwd = ReverseForward(self.reverse_ssh, guest_path, host_path, remove_guest=remove,
                             on_failure=failed)
        self._fixed.append(_Reverse(fwd))
    def stop(self) -> None:
        self._stop.set()
        reader = self._reader
        if reader is not None:
            with contextlib.suppress(OSError):
                reader.shutdown(socket.SHUT_RDWR)
        with self._lock:
            # QEMU's own forwards go with qemu, which stops next (or the next host agent
            # removes them): only ours are closed here.
            forwards = [f for f in (*self._fixed, *self._forwards.values())
                        if isinstance(f, HostListener | UDPRelay | _Reverse)]
            self._fixed, self._forwards = [], {}
        for fwd in forwards:
            fwd.close()
        self.dialer.close()

    # --- reports --------------------------------------------------------------------------

    def _read_agent(self) -> None:
        """Read ga.sock lines for as long as the forwarder runs, reconnecting as needed."""
        while not self._stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.ga_path))
            except OSError:
                sock.close()
                self._stop.wait(RECONNECT)
                continue
            self._reader = sock
            log.info("connected to the guest agent channel %s", self.ga_path)
            try:
                for line in sock.makefile("rb"):
                    if self._stop.is_set():
                        break
                    listeners = parse_report(line)
                    if listeners is not None:
                        self.agent = agent_of(line)
                        self.apply(listeners)
            except OSError as exc:
                log.info("guest agent channel: %s", exc)
            finally:
                self._reader = None
                sock.close()
            if not self._stop.is_set():
                log.info("guest agent channel closed; reconnecting")
                self._stop.wait(RECONNECT)

    def apply(self, listeners: set[Listener]) -> None:
        """Make the forwards match the guest's current listeners (a full report)."""
        with self._lock:
            if self._stop.is_set():
                return
            removed = sorted(self._known - listeners)
            added = sorted(listeners - self._known)
            self._known = set(listeners)
            self.reports += 1
            for listener in removed:
                self._remove(listener)
            for listener in added:
                self._add(listener)
            if removed:
                # A host port freed by one listener may be wanted by another (0.0.0.0 and ::).
                for listener in sorted(self._known - set(added) - set(self._forwards)):
                    target = portrules.forward_for(self.rules, listener)
                    if target is not None and not self._in_use(target, listener.proto):
                        self._add(listener)

    def _remove(self, listener: Listener) -> None:
        fwd = self._forwards.pop(listener, None)
        if fwd is None:
            return
        log.info("stopping forwarding %s from %s to %s", listener.proto.upper(),
                 listener.guest_addr(), fwd.target.text())
        self._event("stopping", listener.proto, listener.guest_addr(), fwd.target.text())
        fwd.close()

    def _add(self, listener: Listener) -> None:
        if portrules.statically_forwarded(self.rules, listener):
            return
        target = portrules.forward_for(self.rules, listener)
        if target is None:
            quiet = self.ignore_tcp if listener.proto == "tcp" else self.ignore_udp
            if not quiet:
                log.info("not forwarding %s %s", listener.proto.upper(), listener.guest_addr())
                self._event("not-forwarding", listener.proto, listener.guest_addr())
            return
        if self._in_use(target, listener.proto):
            return  # 0.0.0.0 and :: of one dual-stack server map to the same host port
        wildcard = listener.ip in ("0.0.0.0", "::") and not target.socket
        if listener.proto == "udp":
            self._add_udp(listener, target, wildcard)
            return
        if wildcard and self.slirp is not None and self._add_slirp(listener, target):
            return
        fwd = self._listen(target, guest_end(listener), listener.proto, listener.guest_addr())
        if fwd is not None:
            self._forwards[listener] = fwd

    def _add_udp(self, listener: Listener, target: HostTarget, wildcard: bool) -> None:
        """A UDP listener: QEMU's hostfwd when it can answer, else the ssh relay."""
        addr = listener.guest_addr()
        if target.socket:
            self._event("failed", "udp", addr, target.text(), UDP_TO_SOCKET)
            return
        if wildcard and self.slirp is not None and self.slirp.udp \
                and self._add_slirp(listener, target):
            return
        if self.agent == "sh":  # the shell agent runs where python3 is missing
            log.warning("cannot forward UDP %s: %s", addr, NO_PYTHON)
            self._event("failed", "udp", addr, target.text(), NO_PYTHON)
            return
        fwd = self._relay(listener, target)
        if fwd is not None:
            self._forwards[listener] = fwd

    def _relay(self, listener: Listener, target: HostTarget, *,
               fixed: bool = False) -> UDPRelay | None:
        addr = listener.guest_addr()

        def failed(why: str) -> None:
            self._event("failed", "udp", addr, target.text(), why)

        try:
            fwd = UDPRelay(target, guest_end(listener), self.dialer.execute, failed,
                           eager=not fixed)
        except OSError as exc:
            problem = bind_problem(target, exc)
            log.warning("cannot forward UDP %s: %s", addr, problem)
            self._event("failed", "udp", addr, target.text(), problem)
            return None
        log.info("forwarding UDP from %s to %s (ssh relay)", addr, target.text())
        self._event("forwarding", "udp", addr, target.text())
        if fixed:
            self._fixed.append(fwd)
        return fwd

    def _add_slirp(self, listener: Listener, target: HostTarget) -> bool:
        """QEMU's hostfwd for a wildcard listener; False: use the ssh path instead."""
        assert self.slirp is not None
        proto = listener.proto
        try:
            fwd = self.slirp.add(target, listener.port, proto)
        except OSError as exc:
            problem = bind_problem(target, exc)
            log.warning("cannot forward %s %s: %s", proto.upper(), listener.guest_addr(),
                        problem)
            self._event("failed", proto, listener.guest_addr(), target.text(), problem)
            return True
        except LimaError as exc:
            log.info("%s; forwarding over ssh instead", exc)
            return False
        log.info("forwarding %s from %s to %s (QEMU hostfwd)", proto.upper(),
                 listener.guest_addr(), target.text())
        self._event("forwarding", proto, listener.guest_addr(), target.text())
        self._forwards[listener] = fwd
        return True

    def _in_use(self, target: HostTarget, proto: str = "tcp") -> bool:
        return any(f.target == target and f.proto == proto
                   for f in (*self._fixed, *self._forwards.values()))

    def _listen(self, target: HostTarget, end: GuestEnd, proto: str, guest_addr: str, *,
                fixed: bool = False, quiet: bool = False) -> HostListener | None:
        try:
            fwd = HostListener(target, end, self.dialer, self.open)
        except OSError as exc:
            problem = bind_problem(target, exc)
            log.warning("cannot forward %s %s: %s", proto.upper(), guest_addr, problem)
            self._event("failed", proto, guest_addr, target.text(), problem)
            return None
        if not quiet:
            log.info("forwarding %s from %s to %s", proto.upper(), guest_addr, target.text())
            self._event("forwarding", proto, guest_addr, target.text())
        if fixed:
            self._fixed.append(fwd)
        return fwd

    def _event(self, kind: str, proto: str, guest_addr: str, host_addr: str = "",
               error: str = "") -> None:
        event: dict[str, Any] = {"type": kind, "protocol": proto, "guestAddr": guest_addr}
        if host_addr:
            event["hostAddr"] = host_addr
        if error:
            event["error"] = error
        try:
            self.emit(event)
        except Exception:  # an event that cannot be written must not stop a forward
            log.exception("cannot record a port forward event")

    def open_connections(self) -> int:
        """Forwarded connections open now: those this agent carries, and the TCP ones
        QEMU carries on its hostfwds (counted in /proc/net/tcp by their host port)."""
        with self._lock:
            slirp = {f.target.port for f in (*self._fixed, *self._forwards.values())
                     if isinstance(f, SlirpForward) and f.proto == "tcp" and f.target.port}
        return self.open.value + established_on(slirp)

    def forwarded(self) -> dict[str, str]:
        """guest address -> host address of the dynamic forwards (for tests)."""
        with self._lock:
            return {k.guest_addr(): v.target.text() for k, v in self._forwards.items()}
