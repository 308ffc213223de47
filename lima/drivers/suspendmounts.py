"""9p mounts around a suspend: unmounted in the guest before the state is saved, mounted again.

QEMU refuses to migrate a guest while a 9p export is mounted in it (virtio-9p holds a
migration blocker from the guest's attach until it clunks the export's root, which a
plain umount does). So the host agent (lima.commands.hostagent's guest, called by
lima.drivers.hostagent.daemon before the QMP stop/migrate) unmounts each 9p mount over ssh,
never lazily: a lazy umount would detach the name while a process still holds the export.
A mount in use (a file open in it, a process whose directory is in it) refuses the whole
suspend: the mounts already unmounted are mounted again, and the error names the mount
point. After a failed save, and when the resumed guest logs in (lima.drivers.mounts's
`mount_all`), each one is mounted again with the options the boot used
(lima.drivers.virtfs.guest_options, as cloud-init's fstab line has them).

virtiofs is not handled here: QEMU 7.2 cannot migrate vhost-user-fs at all, so
`limactl suspend` refuses such an instance (lima.commands.lifecycle).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence

import paramiko

from lima.drivers.mounts import MOUNT_TIMEOUT, is_mounted_command, mount_virtfs
from lima.drivers.ssh import run
from lima.drivers.suspend import MOUNT_REFUSED
from lima.errors import LimaError
from lima.schemas.spec import Mount

log = logging.getLogger(__name__)

# Words of every refusal; lima.drivers.suspendop reads them to fail the suspend at once (a
# retry cannot free a mount the user holds).
REFUSED = MOUNT_REFUSED
# unmount_command's exit status when the mount point was not mounted at all.
NOT_MOUNTED = 10


def suspend_blocking(mount_type: str, mounts: Sequence[Mount]) -> list[Mount]:
    """The mounts a suspend must unmount first (pure): every mount when they are 9p."""
    return list(mounts) if mount_type == "9p" else []


def unmount_command(mount_point: str) -> str:
    """The guest command that unmounts one mount point (pure): exit NOT_MOUNTED when it is
    not mounted, 0 once unmounted, else umount's status and words (busy)."""
    return (f"{is_mounted_command(mount_point)} || exit {NOT_MOUNTED}; "
            f"sudo umount {shlex.quote(mount_point)}")


def refusal(mount_point: str, guest_words: str) -> str:
    """Why the suspend is refused (pure): the mount point, the guest's words, what to do."""
    lines = guest_words.strip().splitlines()
    last = lines[-1].strip() if lines else ""
    why = f" ({last})" if last else ""
    if "busy" in last.lower():
        return (f"the 9p mount {mount_point} is in use in the guest{why}: {REFUSED}; end "
                f"what uses it (open files, shells whose working directory is in it), "
                f"then suspend again")
    return f"the 9p mount {mount_point} could not be unmounted in the guest{why}: {REFUSED}"


def unmount_for_suspend(client: paramiko.SSHClient, mount_type: str,
                        mounts: Sequence[Mount]) -> list[Mount]:
    """Unmount each 9p mount; returns those it unmounted. When one cannot be unmounted, the
    others are mounted again and LimaError names it (with REFUSED in its words when the
    guest refused; a lost ssh session is a plain, retryable LimaError)."""
    done: list[Mount] = []
    for m in suspend_blocking(mount_type, mounts):
        try:
            rc, out, err = run(client, unmount_command(m.mount_point), timeout=MOUNT_TIMEOUT)
        except (LimaError, OSError, paramiko.SSHException) as exc:
            _remount_logged(client, mount_type, done)
            raise LimaError(f"could not unmount {m.mount_point} in the guest: {exc}") from None
        if rc == NOT_MOUNTED:
            continue
        if rc != 0:
            _remount_logged(client, mount_type, done)
            raise LimaError(refusal(m.mount_point, err or out or f"exit status {rc}"))
        log.info("unmounted %s (9p) for the suspend", m.mount_point)
        done.append(m)
    return done


def _remount_logged(client: paramiko.SSHClient, mount_type: str,
                    mounts: Sequence[Mount]) -> None:
    for failed in remount(client, mount_type, mounts):
        log.error("%s", failed)


def remount(client: paramiko.SSHClient, mount_type: str,
            mounts: Sequence[Mount]) -> list[str]:
    """Mount each one again as the boot did; one error per mount that did not come back."""
    errors: list[str] = []
    for m, failed in zip(mounts, mount_virtfs(client, mount_type, mounts), strict=True):
        if failed is not None:
            errors.append(f"mount {m.location} on {m.mount_point} ({mount_type}) "
                          f"failed: {failed}")
            continue
        log.info("mounted %s on %s again (%s)", m.location, m.mount_point, mount_type)
    return errors
