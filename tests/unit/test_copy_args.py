"""`limactl copy`: path parsing and the scp / rsync command lines (pure; nothing runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lima.cli import main
from lima.commands import copy as cp
from lima.commands.copy import CopyPath, rsync_argv, rsync_paths, scp_argv, split_path

INST = Path("/lh/vm")
CONFIG = INST / "ssh.config"


def guest(path: str, name: str = "vm") -> CopyPath:
    return CopyPath(path, name, Path("/lh") / name)


def host(path: str) -> CopyPath:
    return CopyPath(path)


def test_split_path_at_the_first_colon() -> None:
    assert split_path("vm:/tmp/x") == ("vm", "/tmp/x")
    assert split_path("vm:rel/a:b") == ("vm", "rel/a:b")
    assert split_path("./local") == ("", "./local")
    assert split_path("vm:") == ("vm", "")


def test_scp_argv_ends_options_and_goes_through_the_host() -> None:
    argv = scp_argv("scp", [host("a.txt"), guest("/tmp/")], config=CONFIG, recursive=False,
                    verbose=False)
    assert argv == ["scp", "-F", str(CONFIG), "-q", "-3", "--", "a.txt", "lima-vm:/tmp/"]
    argv = scp_argv("scp", [guest("/d"), host("-odd")], config=CONFIG, recursive=True,
                    verbose=True)
    assert argv == ["scp", "-F", str(CONFIG), "-v", "-r", "-3", "--", "lima-vm:/d", "-odd"]


def test_rsync_argv_lima_flags_and_ssh_config() -> None:
    argv = rsync_argv("rsync", [host("f"), guest("/tmp/f")], ssh="ssh", config=CONFIG,
                      recursive=False, verbose=False)
    assert argv == ["rsync", "-a", "-q", "-e", f"ssh -F {CONFIG}", "--", "f", "lima-vm:/tmp/f"]
    verbose = rsync_argv("rsync", [host("f"), guest("/x")], ssh="ssh", config=CONFIG,
                         recursive=True, verbose=True)
    assert verbose[:5] == ["rsync", "-a", "-v", "--progress", "-r"]


@pytest.mark.parametrize(("src", "dst", "want"), [
    # Lima's bats cases (copy.bats) for `-r`, host to guest and back.
    (host("foo"), guest("/t/foo"), ["foo/", "/t/foo/"]),
    (host("foo/"), guest("/t/d"), ["foo", "/t/d/"]),
    (host("foo"), guest("/t/d/"), ["foo", "/t/d/"]),
    (host("foo/"), guest("/t/d/"), ["foo", "/t/d/"]),
    (guest("/t/foo"), host("out"), ["/t/foo/", "out/"]),
    (guest("/t/foo/"), host("out"), ["/t/foo/", "out/"]),
    (guest("/t/foo"), host("out/"), ["/t/foo/", "out"]),
])
def test_rsync_trailing_slashes_follow_scp(src: CopyPath, dst: CopyPath,
                                           want: list[str]) -> None:
    assert [c.path for c in rsync_paths([src, dst], recursive=True)] == want


def test_rsync_paths_untouched_without_recursive() -> None:
    paths = [host("foo/"), guest("/t/")]
    assert rsync_paths(paths, recursive=False) == paths


def test_both_remote() -> None:
    assert cp.both_remote([guest("/a", "x"), guest("/b", "y")])
    assert not cp.both_remote([guest("/a"), host("b")])


def test_combined_config_for_two_instances(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ssh.config").write_text(f"Host lima-{name}\n  Port 1\n")
    paths = [CopyPath("/x", "a", tmp_path / "a"), CopyPath("/y", "b", tmp_path / "b")]
    config = cp._config_for(paths, tmp_path)
    assert config is not None
    assert config.read_text() == "Host lima-a\n  Port 1\nHost lima-b\n  Port 1\n"
    same = cp._config_for([paths[0], paths[0]], tmp_path)
    assert same == tmp_path / "a" / "ssh.config"
    assert cp._config_for([host("x"), host("y")], tmp_path) is None


def test_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["copy", "only-one"])
    assert exc.value.code == 1
    assert "requires at least 2 arg(s), only received 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["copy", "--backend=ftp", "a", "b"])
    assert exc.value.code == 1
    assert "invalid backend `ftp`, must be one of: scp, rsync, auto" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["cp", "nosuch:/x", "."])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "instance `nosuch` does not exist, run `limactl create nosuch`" in err


def test_stopped_instance_is_refused(capsys: pytest.CaptureFixture[str],
                                     _isolated_home: Path) -> None:
    (_isolated_home / "vm").mkdir()
    (_isolated_home / "vm" / "lima.yaml").write_text("images: []\n")
    with pytest.raises(SystemExit) as exc:
        main(["copy", "x", "vm:/tmp"])
    assert exc.value.code == 1
    assert ("instance `vm` is stopped, run `limactl start vm` to start the instance"
            in capsys.readouterr().err)
