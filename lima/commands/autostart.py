"""`limactl autostart enable|disable INSTANCE` and the deprecated `limactl start-at-login`.

Lima's flags, messages and exit codes on Linux; the systemd user unit itself is
lima.drivers.autostart's. `--condition=boot` is macOS-only in Lima and refused likewise;
`--user` (macOS) is accepted and ignored, as Lima on Linux does. cli.py registers both verbs.
"""

from __future__ import annotations

import logging

import click

from lima.errors import LimaError

log = logging.getLogger(__name__)

_CONTEXT = {"help_option_names": ["-h", "--help"]}
DEPRECATED = 'Command "start-at-login" is deprecated, use "limactl autostart" instead'


def _exists(name: str) -> bool:
    from lima import paths

    return (paths.instance_dir(name) / paths.LIMA_YAML).is_file()


def _pending(name: str, ran: bool, action: str) -> None:
    if not ran:
        from lima.drivers import autostart as units

        log.warning("%s", units.pending_note(name, action))


@click.group(context_settings=_CONTEXT)
def autostart() -> None:
    """Manage automatic startup of Lima instances"""


@autostart.command("enable", context_settings=_CONTEXT)
@click.option("--condition", default="login", show_default=True,
              help='When to start the instance: "login" (user session) or "boot" (system '
                   "boot, macOS only)")
@click.option("--user", "user", default="",
              help="macOS username to run the instance as when --condition=boot "
                   "(default: $USER)")
@click.argument("instance")
def enable(condition: str, user: str, instance: str) -> None:
    """Register an instance to start automatically"""
    from lima.drivers import autostart as units

    if condition == "boot":
        raise LimaError("--condition=boot is only supported on macOS")
    if not _exists(instance):
        raise LimaError(f'instance "{instance}" not found')
    try:
        ran = units.register(instance)
    except LimaError as exc:
        raise LimaError(f"failed to register instance `{instance}` to start at login: "
                        f"{exc}") from None
    log.info("Instance `%s` registered to start at login", instance)
    _pending(instance, ran, "enable")


@autostart.command("disable", context_settings=_CONTEXT)
@click.argument("instance")
def disable(instance: str) -> None:
    """Unregister an instance from automatic startup"""
    from lima.drivers import autostart as units

    if not _exists(instance):
        raise LimaError(f'instance "{instance}" not found')
    if not units.is_registered(instance):
        log.info("Instance `%s` is not registered for automatic startup", instance)
        return
    try:
        ran = units.unregister(instance)
    except LimaError as exc:
        raise LimaError(f"failed to unregister instance `{instance}` from start at login: "
                        f"{exc}") from None
    log.info("Instance `%s` unregistered from start at login", instance)
    _pending(instance, ran, "disable")


_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _go_bool(ctx: click.Context, param: click.Parameter, value: str) -> bool:
    """A Go bool flag's value (`--enabled`, `--enabled=false`), as strconv.ParseBool."""
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise LimaError(f'invalid argument "{value}" for "--enabled" flag: '
                             f'strconv.ParseBool: parsing "{value}": invalid syntax')


@click.command("start-at-login", context_settings=_CONTEXT)
@click.option("--enabled", is_flag=False, flag_value="true", default="true",
              callback=_go_bool, metavar="[=true|false]",
              help="Automatically start the instance when the user logs in")
@click.argument("instance", required=False)
def start_at_login(enabled: bool, instance: str | None) -> None:
    """Register/Unregister an autostart file for the instance"""
    from lima.drivers import autostart as units

    click.echo(DEPRECATED, err=True)
    name = instance or "default"
    if not _exists(name):
        log.info("Instance `%s` not found", name)
        return
    try:
        registered = units.is_registered(name)
    except LimaError as exc:
        raise LimaError(f"failed to check if the autostart entry for instance `{name}` is "
                        f"registered: {exc}") from None
    if enabled:
        verb = "update" if registered else "create"
        try:
            ran = units.register(name)
        except LimaError as exc:
            raise LimaError(f"failed to {verb} the autostart entry for instance `{name}`: "
                            f"{exc}") from None
        log.info("The autostart entry for instance `%s` has been %sd", name, verb)
        _pending(name, ran, "enable")
    elif not registered:
        log.info("The autostart entry for instance `%s` is not registered", name)
    else:
        try:
            ran = units.unregister(name)
        except LimaError as exc:
            raise LimaError(f"failed to unregister the autostart entry for instance "
                            f"`{name}`: {exc}") from None
        log.info("The autostart entry for instance `%s` has been unregistered", name)
        _pending(name, ran, "disable")
