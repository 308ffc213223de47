"""`limactl controller DIR`: keep every instance described by DIR's *.yaml files converged.

Also `limactl controller pause NAME` / `resume NAME` (work on a managed instance by hand)
and `--print-systemd-unit DIR` (run it as a user service). The work is done by
`lima.controller.folder.FolderController`; this module parses options, logs JSON lines on
stderr, and turns SIGTERM/SIGINT into a clean exit that leaves every VM running (their
host agents live in their own sessions). A second signal abandons the running passes.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from lima.errors import LimaError
from lima.godur import DURATION, format_duration

SUBCOMMANDS = ("pause", "resume")


class _JsonFormatter(logging.Formatter):
    """Every stderr line of a controller is one JSON object (journald, jq)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level":
               record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _json_logging() -> None:
    root = logging.getLogger()
    for h in root.handlers:
        h.setFormatter(_JsonFormatter())


def systemd_unit(folder: Path, args: list[str]) -> str:
    """A systemd user unit running this controller over `folder` (absolute)."""
    exe = shlex.quote(sys.executable)
    argv = " ".join(shlex.quote(a) for a in ["-m", "lima.cli", "controller", *args,
                                             str(folder)])
    env = []
    if os.environ.get("LIMA_HOME"):
        env.append(f"Environment=LIMA_HOME={shlex.quote(os.environ['LIMA_HOME'])}")
    if os.environ.get("PYTHONPATH"):
        env.append(f"Environment=PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}")
    lines = [
        "[Unit]",
        f"Description=limapy controller for {folder}",
        "After=default.target",
        "",
        "[Service]",
        "Type=simple",
        *env,
        f"ExecStart={exe} {argv}",
        # SIGTERM lets the running passes finish; the VMs' host agents are left alone.
        "KillMode=process",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=60",
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("args", nargs=-1, required=True)
@click.option("--prune", type=click.Choice(["stop", "delete", "none"]), default="stop",
              show_default=True, help="What to do with an instance whose file is removed.")
@click.option("--restart", type=click.Choice(["auto", "stage"]), default="auto",
              show_default=True, help="How a restart-class change is applied.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Instances reconciled at once.")
@click.option("--resync", type=click.FloatRange(0.5, 86400), default=30.0, show_default=True,
              help="Seconds between passes over every instance (catches what no event says).")
@click.option("--suspend-idle", "suspend_idle", type=DURATION, default="0",
              help="Suspend an instance that has had no ssh session and no forwarded "
                   "connection for this long (a Go duration: 30m, 1h); `limactl shell` wakes "
                   "it. 0 (the default): never.")
@click.option("--print-systemd-unit", "print_unit", is_flag=True,
              help="Print a systemd user unit that runs this controller, and exit.")
def controller(args: tuple[str, ...], prune: str, restart: str, workers: int, resync: float,
               suspend_idle: float, print_unit: bool) -> None:
    """Watch DIR: one instance per *.yaml file, kept converged.

    \b
    limactl controller DIR [--prune=stop|delete|none] [--workers N] [--suspend-idle 30m]
    limactl controller pause NAME    (the controller leaves NAME alone)
    limactl controller resume NAME
    """
    if args[0] in SUBCOMMANDS and len(args) == 2:
        _pause_resume(args[0], args[1])
        return
    if len(args) != 1:
        raise LimaError("usage: limactl controller DIR, or limactl controller pause|resume NAME")
    folder = Path(args[0]).expanduser().resolve()
    if not folder.is_dir():
        raise LimaError(f"{args[0]}: not a directory; give the folder of lima.yaml files")
    if print_unit:
        opts = [f"--prune={prune}", f"--restart={restart}", f"--workers={workers}",
                f"--resync={resync:g}"]
        if suspend_idle > 0:
            opts.append(f"--suspend-idle={format_duration(suspend_idle)}")
        click.echo(systemd_unit(folder, opts), nl=False)
        return
    if suspend_idle < 0:
        raise LimaError("--suspend-idle: a duration cannot be negative")
    _run(folder, prune=prune, restart=restart, workers=workers, resync=resync,
         suspend_idle=suspend_idle)


def _pause_resume(verb: str, name: str) -> None:
    from lima.controller import managed
    from lima.drivers import store

    store.require_instance(name)
    if verb == "pause":
        managed.pause(name)
        click.echo(f"{name}: paused; the controller leaves it alone until "
                   f"`limactl controller resume {name}`")
    elif managed.resume(name):
        click.echo(f"{name}: resumed; the controller converges it again")
    else:
        click.echo(f"{name}: was not paused")


def _run(folder: Path, *, prune: str, restart: str, workers: int, resync: float,
         suspend_idle: float = 0.0) -> None:
    from lima.controller.folder import FolderController, Options

    _json_logging()
    ctl = FolderController(Options(folder, prune=prune, restart=restart, workers=workers,
                                   resync=resync, suspend_idle=suspend_idle))
    stop = threading.Event()
    signals = {"n": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals["n"] += 1
        if signals["n"] > 1:
            # Asked twice: abandon the running passes; the next controller resumes from facts.
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ctl.start()
    while not stop.wait(3600):
        pass
    finished = ctl.stop(timeout=ctl.opts.budget + 25.0)
    if not finished:
        logging.getLogger(__name__).warning(
            "passes still running were abandoned; the next controller resumes from facts")
