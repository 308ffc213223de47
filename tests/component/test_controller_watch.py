"""File events of a real watchdog Observer -> instance names -> passes: the ways editors,
sed and git write files each make one pass per instance; temp files name no instance;
host agent files of a known instance wake it."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima.controller.folder import wait_for
from lima.controller.queue import WorkQueue
from lima.controller.watch import EventRouter, FolderWatch, instance_of_file


class Watched:
    def __init__(self, folder: Path, home: Path) -> None:
        self.folder, self.home = folder, home
        self.lock = threading.Lock()
        self.passes: Counter[str] = Counter()
        self.queue = WorkQueue(self._handle, workers=2)
        self.router = EventRouter(folder, home, self._on_file,
                                  lambda n: self.queue.add(n, 0.05))
        self.watch = FolderWatch(self.router)

    def _on_file(self, name: str, path: Path) -> None:
        self.queue.add(name, 0.2, settle_cap=1.0)

    def _handle(self, name: str) -> float | None:
        with self.lock:
            self.passes[name] += 1
        return None

    def settle(self, total: int) -> Counter[str]:
        """Wait for `total` passes in all, then long enough for any extra one to show
        (events arrive asynchronously; a settle window is 0.2 s, capped at 1 s)."""
        assert wait_for(lambda: sum(self.passes.values()) >= total, 10)
        time.sleep(0.6)
        assert self.queue.drain(10)
        with self.lock:
            return Counter(self.passes)


@pytest.fixture
def watched(tmp_path: Path, _isolated_home: Path) -> Iterator[Watched]:
    folder = tmp_path / "vms"
    folder.mkdir()
    w = Watched(folder.resolve(), _isolated_home.resolve())
    w.watch.start()
    w.queue.start()
    try:
        yield w
    finally:
        w.watch.stop()
        w.queue.stop()
        w.queue.join(5)


def test_editor_temp_files_name_no_instance() -> None:
    for f in ("web.yaml.swp", ".web.yaml.swx", "web.yaml~", ".#web.yaml", "4913",
              ".web.yaml.tmp", "notes.txt", "web.yml.bak"):
        assert instance_of_file(f) is None, f
    assert instance_of_file("/x/Web.yaml") == "web"


def test_a_vim_style_save_makes_one_pass(watched: Watched) -> None:
    f = watched.folder / "web.yaml"
    f.write_text("base: template:tiny\n")
    assert watched.settle(1) == {"web": 1}
    # vim: swap file, the 4913 probe, a backup, write the new file, rename it over.
    (watched.folder / ".web.yaml.swp").write_text("x")
    (watched.folder / "4913").write_text("")
    (watched.folder / "4913").unlink()
    os.rename(f, watched.folder / "web.yaml~")
    f.write_text("base: template:tiny\ncpus: 2\n")
    (watched.folder / "web.yaml~").unlink()
    (watched.folder / ".web.yaml.swp").unlink()
    assert watched.settle(2) == {"web": 2}


def test_in_place_writes_and_sed_make_one_pass_each(watched: Watched) -> None:
    f = watched.folder / "db.yaml"
    with f.open("w") as out:  # written in pieces
        out.write("base: ")
        out.flush()
        out.write("template:tiny\n")
    assert watched.settle(1) == {"db": 1}
    # What `sed -i` does: write a temp file beside it (sedXXXXXX), rename it over.
    tmp = watched.folder / "sedAb12Cd"
    tmp.write_text(f.read_text().replace("tiny", "tiny # edited"))
    os.rename(tmp, f)
    assert watched.settle(2) == {"db": 2}


def test_a_git_style_checkout_makes_one_pass_per_changed_instance(watched: Watched) -> None:
    names = [f"vm{i}" for i in range(6)]
    for n in names:
        (watched.folder / f"{n}.yaml").write_text("base: template:tiny\n")
    assert watched.settle(6) == dict.fromkeys(names, 1)
    # git replaces each file by a rename of a temp file, many at once, and may delete some.
    for n in names[:4]:
        tmp = watched.folder / f".{n}.yaml.lock"
        tmp.write_text("base: template:tiny\ncpus: 2\n")
        os.replace(tmp, watched.folder / f"{n}.yaml")
    (watched.folder / "vm5.yaml").unlink()
    got = watched.settle(11)
    assert got == {"vm0": 2, "vm1": 2, "vm2": 2, "vm3": 2, "vm4": 1, "vm5": 2}


def test_host_agent_files_wake_the_instance(watched: Watched) -> None:
    inst = watched.home / "web"
    inst.mkdir()
    assert watched.settle(1)["web"] == 1  # the instance directory appeared
    (inst / "qemu.pid").write_text("123\n")
    (inst / "serial.log").write_text("boot noise\n")  # not a fact the controller reads
    assert watched.settle(2)["web"] == 2
    (inst / "qemu.pid").unlink()  # qemu died
    assert watched.settle(3)["web"] == 3
