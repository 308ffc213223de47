"""`limactl copy [-r] [-v] [--backend=scp|rsync|auto] SOURCE... TARGET` (alias `cp`).

Copies files between the host and guests, as Lima's `copy`: a guest path is written
`NAME:PATH`, anything without a colon is a host path, and several instances may take part
(`a:/x b:/y` goes through the host, scp's `-3`). The copy runs the host's `scp` or `rsync`
over ssh with each instance's ssh.config (lima.drivers.sshconfig writes it), so the
ControlMaster on ssh.sock is shared with `limactl shell`.

`auto` picks rsync when the host has it, at most one side is a guest and every guest
involved has rsync (asked over ssh), else scp. The argv builders (`parse_paths` aside,
which reads the instance store) are pure and unit-tested; cli.py registers the verb.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import click

from lima import paths
from lima.errors import LimaError
from lima.names import guest_hostname

log = logging.getLogger(__name__)

BACKENDS = ("scp", "rsync", "auto")


@dataclass(frozen=True)
class CopyPath:
    """One SOURCE or TARGET: a host path, or `instance:path` in a guest."""

    path: str
    instance: str = ""  # "" for a host path
    inst_dir: Path | None = None

    @property
    def remote(self) -> bool:
        return bool(self.instance)


def split_path(arg: str) -> tuple[str, str]:
    """`NAME:PATH` -> (NAME, PATH); a host path -> ("", path). Split at the first colon."""
    name, sep, rest = arg.partition(":")
    return (name, rest) if sep else ("", arg)


def parse_paths(args: Sequence[str]) -> list[CopyPath]:
    """The copy paths, each guest one checked: the instance exists and runs."""
    from lima.drivers import procs

    out: list[CopyPath] = []
    for arg in args:
        name, path = split_path(arg)
        if not name:
            out.append(CopyPath(path))
            continue
        try:
            inst_dir = paths.instance_dir(name)
        except LimaError:
            inst_dir = None
        if inst_dir is None or not (inst_dir / paths.LIMA_YAML).is_file():
            raise LimaError(f"instance `{name}` does not exist, run `limactl create {name}` "
                            "to create a new instance")
        if procs.hostagent_pid(inst_dir) is None or not (inst_dir / paths.SSH_CONFIG).is_file():
            raise LimaError(f"instance `{name}` is stopped, run `limactl start {name}` to "
                            "start the instance")
        out.append(CopyPath(path, name, inst_dir))
    return out


def both_remote(cps: Sequence[CopyPath]) -> bool:
    """Whether guests are on both ends (rsync cannot copy between two remotes)."""
    return sum(1 for cp in cps if cp.remote) >= 2


def _remote_arg(cp: CopyPath) -> str:
    return f"{guest_hostname(cp.instance)}:{cp.path}"


def scp_argv(scp: str, cps: Sequence[CopyPath], *, config: Path | None, recursive: bool,
             verbose: bool) -> list[str]:
    """scp's argv: `-F CONFIG` (the instances' ssh.config), `-3` (guest to guest through
    the host), `--` before the paths so that none is taken for an option."""
    argv = [scp]
    if config is not None:
        argv += ["-F", str(config)]
    argv.append("-v" if verbose else "-q")
    if recursive:
        argv.append("-r")
    argv += ["-3", "--"]
    argv += [_remote_arg(cp) if cp.remote else cp.path for cp in cps]
    return argv


def rsync_paths(cps: Sequence[CopyPath], recursive: bool) -> list[CopyPath]:
    """Lima's trailing-slash rule for `rsync -r`, so that it copies as `scp -r` does: a
    host path loses its trailing slash, a guest path with one makes every other path lose
    theirs, and a path without one gets one (applied in order, as Lima does)."""
    out = list(cps)
    if not recursive:
        return out
    for i in range(len(out)):
        cp = out[i]
        if cp.path.endswith("/"):
            if cp.remote:
                for j in range(len(out)):
                    if j != i:
                        out[j] = replace(out[j], path=out[j].path.removesuffix("/"))
            else:
                out[i] = replace(cp, path=cp.path.removesuffix("/"))
        else:
            out[i] = replace(cp, path=cp.path + "/")
    return out


def rsync_argv(rsync: str, cps: Sequence[CopyPath], *, ssh: str, config: Path | None,
               recursive: bool, verbose: bool) -> list[str]:
    """rsync's argv (Lima's flags: -a, -q or -v --progress, -r), its ssh given with -e."""
    argv = [rsync, "-a"]
    argv += ["-v", "--progress"] if verbose else ["-q"]
    if recursive:
        argv.append("-r")
    if config is not None:
        argv += ["-e", shlex.join([ssh, "-F", str(config)])]
    argv.append("--")
    argv += [_remote_arg(cp) if cp.remote else cp.path for cp in rsync_paths(cps, recursive)]
    return argv


def _config_for(cps: Sequence[CopyPath], tmpdir: Path) -> Path | None:
    """One ssh config holding the `Host lima-NAME` block of every instance involved."""
    dirs = list(dict.fromkeys(cp.inst_dir for cp in cps if cp.inst_dir is not None))
    if not dirs:
        return None
    if len(dirs) == 1:
        return dirs[0] / paths.SSH_CONFIG
    combined = tmpdir / "ssh.config"
    combined.write_text("".join((d / paths.SSH_CONFIG).read_text() for d in dirs))
    return combined


def _guest_has_rsync(cp: CopyPath, ssh: str) -> bool:
    from lima.drivers import runner

    assert cp.inst_dir is not None
    argv = [ssh, "-F", str(cp.inst_dir / paths.SSH_CONFIG), guest_hostname(cp.instance),
            "command -v rsync >/dev/null 2>&1"]
    try:
        return runner.run(argv, check=False, timeout=60).returncode == 0
    except runner.CommandError:
        return False


def choose_backend(backend: str, cps: Sequence[CopyPath], ssh: str) -> str:
    """"scp" or "rsync" for `--backend`, with Lima's errors and its `auto` fallback."""
    if backend not in BACKENDS:
        raise LimaError(f"invalid backend `{backend}`, must be one of: scp, rsync, auto")
    guests = list({cp.instance: cp for cp in cps if cp.remote}.values())
    if backend == "rsync":
        if shutil.which("rsync") is None:
            raise LimaError("rsync not found on host: executable file not found in $PATH")
        if not all(_guest_has_rsync(cp, ssh) for cp in guests):
            raise LimaError("rsync not available on guest(s)")
        return "rsync"
    if backend == "auto" and not both_remote(cps) and shutil.which("rsync") is not None:
        if all(_guest_has_rsync(cp, ssh) for cp in guests):
            return "rsync"
        log.debug("rsync not available on guest(s), falling back to scp")
    if shutil.which("scp") is None:
        raise LimaError("scp not found on host: executable file not found in $PATH")
    return "scp"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively")
@click.option("-v", "--verbose", is_flag=True, help="Enable verbose output")
@click.option("--backend", default="auto", show_default=True, help="Copy backend (scp|rsync|auto)")
@click.argument("paths_", metavar="SOURCE ... TARGET", nargs=-1)
@click.pass_context
def copy(ctx: click.Context, recursive: bool, verbose: bool, backend: str,
         paths_: tuple[str, ...]) -> int:
    """Copy files between host and guest.

    Prefix guest filenames with the instance name and a colon, e.g.
    `limactl copy default:/etc/os-release .`
    """
    from lima.drivers import runner

    if len(paths_) < 2:
        raise LimaError(f"requires at least 2 arg(s), only received {len(paths_)}")
    verbose = verbose or bool((ctx.obj or {}).get("debug"))
    if backend not in BACKENDS:
        raise LimaError(f"invalid backend `{backend}`, must be one of: scp, rsync, auto")
    cps = parse_paths(paths_)
    ssh = "ssh"
    tool = choose_backend(backend, cps, ssh)
    with tempfile.TemporaryDirectory(prefix="limactl-copy-") as tmp:
        config = _config_for(cps, Path(tmp))
        if tool == "rsync":
            argv = rsync_argv("rsync", cps, ssh=ssh, config=config, recursive=recursive,
                              verbose=verbose)
        else:
            argv = scp_argv("scp", cps, config=config, recursive=recursive, verbose=verbose)
        log.debug("executing %s (may take a long time)", shlex.join(argv))
        sys.stdout.flush()
        proc = runner.spawn(argv, stdin=None, stdout=None, stderr=None)
        rc = proc.wait()
    if rc != 0:
        raise LimaError(f"exit status {rc if rc > 0 else 128 - rc}")
    return 0
