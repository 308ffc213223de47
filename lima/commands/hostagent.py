"""`limactl hostagent NAME` (hidden): the per-instance daemon of DESIGN.md section 6.

Started by `lima.drivers.hostagent.start_hostagent` in its own session with stderr on
ha.stderr.log; this module only gathers the inputs (spec, ssh port, qemu command) and
runs `lima.drivers.hostagent.HostAgent`, which does the work.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lima import paths
from lima.errors import LimaError, NotFoundError, SpecError, TemporaryError
from lima.names import instance_dir_for

if TYPE_CHECKING:
    import paramiko

    from lima.drivers.hostagent.inotify import InotifyForwarder
    from lima.drivers.ssh import SSHGuest
    from lima.drivers.virtiofs import DaemonCommand
    from lima.schemas.spec import InstanceSpec, Mount


class JSONFormatter(logging.Formatter):
    """One JSON object per line, like Lima's host agent logs: level, msg, time."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_json_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(min(level, root.level) if root.level else level)
    # paramiko logs every transport hiccup at INFO/ERROR while sshd is coming up.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def _read_argv(path: str) -> list[str]:
    try:
        argv = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"--qemu-argv-json {path}: {exc}") from exc
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise SpecError(f"--qemu-argv-json {path}: expected a non-empty list of strings")
    return argv


def _spec_for_mounts(name: str) -> tuple[InstanceSpec | None, str | None]:
    """The stored spec, for its mounts (None without a lima.yaml: nothing to mount), or
    None and the problem of a damaged one.

    The guest boots from a command line the driver built from a checked spec, and the verb
    refused a damaged lima.yaml before: one damaged since must not kill the guest and make
    the driver boot it again and again. It runs without mounts instead, Degraded with the
    file's problem, which `limactl list` and the verb show.
    """
    from lima.schemas import load_instance

    where = paths.instance_dir(name) / paths.LIMA_YAML
    if not where.is_file():
        return None, None
    try:
        return load_instance(name).spec, None
    except (SpecError, NotFoundError) as exc:
        problems = "; ".join(str(exc).splitlines())
        return None, (f"mounts not set up: {problems} (fix {where}, then restart the"
                      f" instance)")


class _LazyGuest:
    """The SSHGuest, built in the readiness thread: paramiko's import and the spec (for the
    mounts) load while qemu boots instead of delaying its start."""

    def __init__(self, name: str, port: int, user: str, iid: str, timeout: float,
                 spec: InstanceSpec | None, resumed: bool = False,
                 boot_done: bool = False) -> None:
        self.name, self.port, self.user, self.iid = name, port, user, iid
        self.timeout, self.spec, self.resumed = timeout, spec, resumed
        self.resumed_done = boot_done  # the saved state's boot.sh had finished (bootDone)
        self.inner: SSHGuest | None = None
        self.inotify: InotifyForwarder | None = None
        self._unmounted: list[Mount] = []  # 9p mounts prepare_suspend unmounted
        self._mounts_done = threading.Event()  # readiness has set the mounts up
        self._build_lock = threading.Lock()  # warm() and ready() build `inner` once
        self._problem: str | None = None  # why the stored spec did not load (no mounts)
        self._stop = threading.Event()  # readiness's: after_boot gives up when it is set

    def warm(self) -> None:
        """Load what readiness needs (paramiko, the spec): the host agent calls it while a
        saved state loads, so the first login starts the moment the guest runs."""
        with self._build_lock:
            if self.inner is not None:
                return
            # Imported now for after_boot, and the port forwarder that starts once Running.
            from lima.drivers import mounts, postboot  # noqa: F401
            from lima.drivers.hostagent import portfwd, slirpfwd, tunnel  # noqa: F401
            from lima.drivers.ssh import SSHGuest

            spec, self._problem = (self.spec, None) if self.spec is not None else (
                _spec_for_mounts(self.name))
            self.spec = spec
            self.inner = SSHGuest(
                self.port, self.user, paths.user_identity(), self.iid, timeout=self.timeout,
                after_boot=self._after_boot, resumed=self.resumed,
                boot_done=self.resumed_done,
                serial_log=paths.instance_dir(self.name) / paths.SERIAL_LOG,
            )

    def _after_boot(self, client: paramiko.SSHClient) -> list[str]:
        # Mounts, then (drivers/postboot.py) probes, copyToHost and ansible steps.
        from lima.drivers.mounts import mount_all
        from lima.drivers.postboot import after_boot as post

        spec = self.spec
        mounts = spec.mounts if spec is not None else ()
        started = time.monotonic()  # the boot scripts are done: the budgets count from here
        errors = mount_all(client, mounts, spec.mount_type) if (
            spec is not None and mounts) else []
        self._mounts_done.set()
        if spec is not None and spec.mount_inotify and mounts:
            from lima.drivers.hostagent.inotify import InotifyForwarder, channel_opener

            self.inotify = InotifyForwarder(mounts, channel_opener(client, self.user))
            try:
                self.inotify.start()
            except OSError as exc:  # e.g. out of inotify watches: the mounts still work
                errors.append(f"mountInotify: cannot watch the mounts: {exc}")
        if spec is not None:
            errors += post(client, spec, paths.instance_dir(self.name), self.iid, stop=self._stop,
                           started=started,
                           boot_failed=self.inner.boot_failed if self.inner else None)
        return errors

    def ready(self, stop: threading.Event, progress: Callable[[str], None]) -> list[str]:
        self._stop = stop
        self.warm()
        assert self.inner is not None
        errors = self.inner.ready(stop, progress)
        return [self._problem, *errors] if self._problem else errors

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.stop()
        if self.inner is not None:
            self.inner.close()
        if self.spec is not None:
            from lima.drivers.postboot import delete_on_stop

            delete_on_stop(self.spec)  # copyToHost deleteOnStop: Lima does it at stop

    def alive(self, timeout: float) -> bool:
        return self.inner is not None and self.inner.alive(timeout)

    def boot_done(self) -> bool:
        """Whether readiness found boot.sh done without failures (for a saved state)."""
        return self.inner is not None and self.inner.boot_failed is False

    def prepare_suspend(self) -> None:
        """Before the state is saved: unmount the 9p mounts (lima.drivers.suspendmounts).
        LimaError when one cannot be, with the guest as it was."""
        from lima.drivers import suspendmounts

        spec = self.spec if self.spec is not None else _spec_for_mounts(self.name)[0]
        if spec is None or not suspendmounts.suspend_blocking(spec.mount_type, spec.mounts):
            return
        if not self._mounts_done.is_set():
            # Readiness would mount them again under the suspend's feet: retried later.
            raise TemporaryError("the guest's 9p mounts are not set up yet")
        client, own = self._client()
        try:
            self._unmounted = suspendmounts.unmount_for_suspend(client, spec.mount_type,
                                                                spec.mounts)
        finally:
            if own:
                client.close()

    def suspend_failed(self) -> list[str]:
        """The state was not saved and the guest runs on: mount again what
        prepare_suspend unmounted; one error per mount that did not come back."""
        from lima.drivers import suspendmounts

        unmounted, self._unmounted = self._unmounted, []
        if not unmounted or self.spec is None:
            return []
        try:
            client, own = self._client()
        except LimaError as exc:
            return [f"mount {m.location} on {m.mount_point} ({self.spec.mount_type}) failed: "
                    f"no ssh login to mount it again: {exc}" for m in unmounted]
        try:
            return suspendmounts.remount(client, self.spec.mount_type, unmounted)
        finally:
            if own:
                client.close()

    def _client(self) -> tuple[paramiko.SSHClient, bool]:
        """The readiness session when it is up, else a login of its own (True: close it)."""
        from lima.drivers.ssh import wait_ssh

        inner = self.inner
        client = inner.client if inner is not None else None
        transport = client.get_transport() if client is not None else None
        if client is not None and transport is not None and transport.is_active():
            return client, False
        return wait_ssh(self.port, self.user, paths.user_identity(),
                        deadline=time.monotonic() + 30.0, banner=False), True


@click.command(hidden=True)
@click.option("--iid", required=True, help="Instance-id of this boot (the IID markers hold it).")
@click.option("--ssh-port", type=int, default=0, help="Host port forwarded to the guest's 22.")
@click.option("--qemu-argv-json", default=None, help="Run this command instead of qemu.")
@click.option("--ssh-user", default=None, help="Guest user (default: the spec's user).")
@click.option("--boot-timeout", type=float, default=600.0, show_default=True)
@click.option("--stop-timeout", type=float, default=60.0, show_default=True)
@click.option("--attach", is_flag=True,
              help="Take over the instance's running qemu instead of starting one.")
@click.option("--virtiofsd-json", default=None,
              help="Start these virtiofsd commands before qemu (mountType virtiofs).")
@click.option("--host-resolver", "host_resolver", default=None,
              help="Serve the guest's DNS (hostResolver), configured by this JSON.")
@click.option("--resume", is_flag=True,
              help="qemu's argv has -incoming defer: load suspend.state instead of booting.")
@click.option("--vnc", default=None,
              help="video.display: vnc: set up the password and files of this display.")
@click.argument("name")
def hostagent(
    iid: str,
    ssh_port: int,
    qemu_argv_json: str | None,
    ssh_user: str | None,
    boot_timeout: float,
    stop_timeout: float,
    attach: bool,
    host_resolver: str | None,
    vnc: str | None,
    virtiofsd_json: str | None,
    name: str,
    resume: bool = False,
) -> int:
    """Run the host agent of instance NAME (started by `limactl start`)."""
    from lima.drivers.hostagent import HostAgent, pick_ssh_port

    inst_dir = instance_dir_for(name)  # never a directory outside LIMA_HOME
    setup_json_logging()
    if not inst_dir.is_dir():
        raise NotFoundError(f"instance {name!r} does not exist")
    spec: InstanceSpec | None = None
    if qemu_argv_json is None or ssh_user is None or not ssh_port:
        from lima.schemas import load_instance

        spec = load_instance(name).spec
    if not ssh_port:
        assert spec is not None
        ssh_port = pick_ssh_port(spec.ssh.local_port)
    if qemu_argv_json is not None:
        argv = _read_argv(qemu_argv_json)
    else:
        assert spec is not None
        from lima.drivers.qemu import qemu_command

        argv = qemu_command(spec, inst_dir, ssh_port)
    daemons = _virtiofsd_commands(virtiofsd_json, spec, inst_dir, qemu_argv_json, attach)
    user = ssh_user or (spec.user.name if spec else "")
    boot_done = False
    if resume:
        from lima.drivers.suspend import boot_done_saved

        boot_done = boot_done_saved(inst_dir, iid)
    guest = _LazyGuest(name, ssh_port, user, iid, boot_timeout, spec, resumed=resume,
                       boot_done=boot_done)
    dns = None
    if host_resolver is not None:
        from lima.drivers.hostagent.dns import ResolverConfig

        try:
            dns = ResolverConfig.from_json(json.loads(host_resolver))
        except (ValueError, KeyError, TypeError) as exc:
            raise SpecError(f"--host-resolver: {exc}") from exc
    agent = HostAgent(inst_dir, ssh_port=ssh_port, qemu_argv=argv, guest=guest,
                      stop_timeout=stop_timeout, attach=attach, iid=iid, dns=dns,
                      forwards=_forwards_factory(name, inst_dir, spec, ssh_port, user),
                      display=_vnc_display(inst_dir, spec, vnc), virtiofsd=daemons,
                      resume=resume)
    return agent.run()


def _vnc_display(inst_dir: Path, spec: InstanceSpec | None, vnc: str | None
                 ) -> _VncDisplay | None:
    """`--vnc` (the driver passes video.vnc.display), else the loaded spec's display."""
    if vnc is None and spec is not None and spec.video_display == "vnc":
        vnc = spec.video_vnc_display
    return _VncDisplay(inst_dir, vnc) if vnc is not None else None


class _VncDisplay:
    """`video.display: vnc`: password and files once qemu runs, files gone with qemu."""

    def __init__(self, inst_dir: Path, vnc: str) -> None:
        self.inst_dir, self.vnc = inst_dir, vnc

    def start(self) -> None:
        from lima.drivers.display import setup_vnc

        setup_vnc(self.inst_dir, self.vnc)

    def stop(self) -> None:
        from lima.drivers.display import remove_vnc_files

        remove_vnc_files(self.inst_dir)


def _virtiofsd_commands(path: str | None, spec: InstanceSpec | None, inst_dir: Path,
                        qemu_argv_json: str | None, attach: bool) -> list[DaemonCommand]:
    """The virtiofsd daemons to start before qemu: from --virtiofsd-json (limactl built them
    with the qemu command), else from the spec when the agent built the qemu command."""
    from lima.drivers.virtiofs import DaemonCommand, daemon_commands

    if attach:
        return []  # the running qemu keeps the daemons it has
    if path is not None:
        try:
            listed = json.loads(Path(path).read_text())
            if not isinstance(listed, list):
                raise ValueError("expected a list")
            return [DaemonCommand.from_json(c) for c in listed]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(f"--virtiofsd-json {path}: {exc}") from exc
    if qemu_argv_json is None and spec is not None:
        return daemon_commands(spec, inst_dir)
    return []


def _forwards_factory(name: str, inst_dir: Path, spec: InstanceSpec | None, ssh_port: int,
                      user: str) -> Callable[[Callable[[dict[str, Any]], None]], Any]:
    """The port forwarder of lima.yaml's portForwards (plus Lima's implicit rules)."""

    from lima.drivers import portrules

    def rules(loaded: InstanceSpec | None) -> tuple[list[Any], bool, bool]:
        forwards = loaded.port_forwards if loaded is not None else ()
        local_port = loaded.ssh.local_port if loaded is not None else 0
        ignore_tcp, ignore_udp = portrules.ignored_protocols(forwards)
        return portrules.build_rules(forwards, local_port or ssh_port), ignore_tcp, ignore_udp

    def reread() -> tuple[list[Any], bool, bool] | None:
        loaded, problem = _spec_for_mounts(name)
        if problem is not None:
            logging.getLogger(__name__).warning("portForwards not reloaded: %s", problem)
            return None
        return rules(loaded)

    def build(emit: Callable[[dict[str, Any]], None]) -> Any:
        from lima.drivers.hostagent.portfwd import Forwarder
        from lima.drivers.hostagent.slirpfwd import SlirpForwards, qmp_monitor
        from lima.drivers.hostagent.tunnel import SSHDialer
        from lima.names import guest_hostname

        loaded = spec if spec is not None else _spec_for_mounts(name)[0]
        built, ignore_tcp, ignore_udp = rules(loaded)
        # restrict=on: libslirp drops the guest's datagrams, so UDP cannot use its hostfwd.
        udp_slirp = loaded is not None and not loaded.qemu.restrict_network
        fwd = Forwarder(built, SSHDialer(ssh_port, user, paths.user_identity()), emit,
                        inst_dir / paths.GA_SOCK, ignore_tcp=ignore_tcp, ignore_udp=ignore_udp,
                        slirp=SlirpForwards(qmp_monitor(inst_dir / paths.QMP_SOCK), ssh_port,
                                            udp=udp_slirp),
                        reverse_ssh=["ssh", "-F", str(inst_dir / paths.SSH_CONFIG),
                                     guest_hostname(name)])
        return _Reloading(fwd, reread)

    return build


class _Reloading:
    """The forwarder, plus `reload()`: lima.yaml read again (a live change `limactl apply`
    recorded, then signalled with SIGHUP) and its portForwards applied without a restart.
    A lima.yaml that no longer loads keeps the forwards as they are."""

    def __init__(self, fwd: Any,
                 read: Callable[[], tuple[list[Any], bool, bool] | None]) -> None:
        self.fwd, self.read = fwd, read

    def start(self) -> None:
        self.fwd.start()

    def stop(self) -> None:
        self.fwd.stop()

    def open_connections(self) -> int:
        return int(self.fwd.open_connections())

    def guest_running(self) -> None:
        self.fwd.guest_running()

    def reload(self) -> None:
        new = self.read()
        if new is not None:
            built, ignore_tcp, ignore_udp = new
            self.fwd.reload(built, ignore_tcp=ignore_tcp, ignore_udp=ignore_udp)
