"""File events -> instance names, for the folder controller (`lima.controller.folder`).

One watchdog Observer watches two places:
- DIR (not recursive): one instance per `*.yaml` file, named as Lima names instances from
  file names (`lima.schemas.name_from_locator`: `dir/Web.yaml` -> `web`). Every way a file
  gets written ends in an event on the final name: an editor's temp file renamed over it
  (moved, dest), an in-place write (modified, closed), `sed -i` (a temp file renamed),
  `git checkout` (many files replaced at once). Editor temp files never name an instance.
- $LIMA_HOME (recursive): an instance's qemu.pid, ha.pid or ha.stdout.log, or its very
  directory changing means its VM started, died or was stopped by hand, so a crash is seen
  when it happens instead of at the next resync; `_controller/NAME.paused` is the pause
  marker (`limactl controller pause`).
The callbacks only queue names (`WorkQueue.add`); they never do I/O on the watcher thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from lima import paths
from lima.controller.managed import CONTROL_DIR, PAUSED_SUFFIX
from lima.names import is_valid_name
from lima.schemas import name_from_locator

log = logging.getLogger(__name__)

SUFFIX = ".yaml"
# Files of an instance directory whose change says the VM's state changed.
INSTANCE_FACTS = frozenset({paths.QEMU_PID, paths.HA_PID, paths.HA_STDOUT})


def is_editor_temp(filename: str) -> bool:
    """vim's .swp/.swx and its 4913 probe, emacs's `.#x` lock and `x~` backup, hidden files
    (`.x.yaml.tmp`, git's `.git`), and anything not ending in `.yaml`."""
    return (
        filename.startswith((".", "#"))
        or filename.endswith(("~", ".swp", ".swx", ".tmp"))
        or filename == "4913"
    )


def instance_of_file(path: str | Path) -> str | None:
    """The instance a file of DIR describes, or None for any other file."""
    filename = os.path.basename(str(path))
    if is_editor_temp(filename) or not filename.endswith(SUFFIX):
        return None
    name = name_from_locator(filename)
    return name if is_valid_name(name) else None


class EventRouter(FileSystemEventHandler):
    """Turns watchdog events into `on_file(name)` (DIR) and `on_instance(name)` (LIMA_HOME)."""

    def __init__(
        self,
        folder: Path,
        home: Path,
        on_file: Callable[[str, Path], None],
        on_instance: Callable[[str], None],
    ) -> None:
        self.folder = folder
        self.home = home
        self.on_file = on_file
        self.on_instance = on_instance

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (ours, every pass) change nothing
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self.route(Path(os.fsdecode(raw)), is_dir=event.is_directory)

    def route(self, path: Path, *, is_dir: bool = False) -> None:
        if path.parent == self.folder:
            if not is_dir:
                name = instance_of_file(path)
                if name is not None:
                    self.on_file(name, path)
            return
        try:
            rel = path.relative_to(self.home).parts
        except ValueError:
            return
        if len(rel) == 2 and rel[0] == CONTROL_DIR and rel[1].endswith(PAUSED_SUFFIX):
            name = rel[1][: -len(PAUSED_SUFFIX)]
            if is_valid_name(name):
                self.on_instance(name)  # paused or resumed
        elif len(rel) == 2 and rel[1] in INSTANCE_FACTS and is_valid_name(rel[0]):
            self.on_instance(rel[0])
        elif len(rel) == 1 and is_dir and is_valid_name(rel[0]):
            self.on_instance(rel[0])  # an instance directory made or removed


class FolderWatch:
    """The Observer over DIR and $LIMA_HOME; `start()`/`stop()` from the controller."""

    def __init__(self, router: EventRouter) -> None:
        self.router = router
        self._observer = Observer()

    def start(self) -> None:
        self.router.home.mkdir(parents=True, exist_ok=True)
        (self.router.home / CONTROL_DIR).mkdir(mode=0o700, exist_ok=True)
        self._observer.schedule(self.router, str(self.router.folder), recursive=False)
        self._observer.schedule(self.router, str(self.router.home), recursive=True)
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
