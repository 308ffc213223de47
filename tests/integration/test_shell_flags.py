"""`limactl shell` flags on a real tiny guest: a stopped instance is refused as Lima says,
`--start` boots it through `limactl start`'s path, `--workdir` and `--preserve-env` (with
LIMA_SHELLENV_BLOCK) reach the guest shell, `--reconnect` ends the ssh master and connects
again, and the `lima` wrapper forwards LIMA_INSTANCE and its flags."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl

EXAMPLE = REPO / "examples" / "tiny.yaml"
SHOW = 'pwd; for v in FOO SSH_FOO MY_TOKEN; do eval "echo $v=\\${$v-unset}"; done'


def test_start_workdir_preserve_env_reconnect(limactl: Limactl, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.yaml"
    shutil.copy(EXAMPLE, f)
    limactl("create", "--name", "t", str(f), timeout=300)

    stopped = limactl("shell", "--tty=false", "t", "true", check=False)
    assert stopped.returncode == 1
    assert "instance `t` is stopped, run `limactl start t` to start the instance" in stopped.stderr

    monkeypatch.setenv("FOO", "foo bar")
    monkeypatch.setenv("SSH_FOO", "blocked by default")
    monkeypatch.setenv("MY_TOKEN", "secret")
    monkeypatch.setenv("LIMA_SHELLENV_BLOCK", "+*TOKEN")
    started = limactl("shell", "--start", "--workdir", "/tmp", "--preserve-env", "t",
                      "sh", "-c", SHOW, timeout=400)
    assert started.stdout.splitlines() == ["/tmp", "FOO=foo bar", "SSH_FOO=unset",
                                           "MY_TOKEN=unset"], started.stderr

    plain = limactl("shell", "--workdir=/", "t", "sh", "-c", SHOW)
    assert plain.stdout.splitlines() == ["/", "FOO=unset", "SSH_FOO=unset", "MY_TOKEN=unset"]

    missing = limactl("shell", "--workdir", "/no/such/dir", "t", "echo", "ran", check=False)
    assert missing.returncode == 1 and "ran" not in missing.stdout

    assert (limactl.home / "t" / "ssh.sock").exists()
    again = limactl("shell", "--reconnect", "t", "echo", "again")
    assert again.stdout == "again\n", again.stderr

    wrapper = subprocess.run(
        [sys.executable, "-c", "from lima.cli import lima_main; lima_main()",
         "--preserve-env", "sh", "-c", 'echo "$FOO"'],
        env={**limactl.env(), "LIMA_INSTANCE": "t", "LIMA_WORKDIR": "/tmp"},
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert (wrapper.returncode, wrapper.stdout) == (0, "foo bar\n"), wrapper.stderr
