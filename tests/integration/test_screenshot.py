"""`limactl screenshot` on the tiny guest with `video.display: vnc` (a real screen): PNG by
default as INSTANCE-screenshot.png in the current directory, PNG and BMP with -o, Lima's
messages; refused once the instance is stopped."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import REPO, Limactl, qemu_pids_for
from tests.integration.test_vnc import free_display


def test_screenshot_png_bmp_and_default_name(limactl: Limactl, tmp_path: Path) -> None:
    number = free_display()
    spec = tmp_path / "shot.yaml"
    spec.write_text((REPO / "examples" / "tiny.yaml").read_text()
                    + f"video:\n  display: vnc\n  vnc:\n    display: 127.0.0.1:{number},"
                      f"to={number + 3}\n")
    limactl("apply", str(spec), timeout=300)

    png = tmp_path / "s.png"
    out = limactl("screenshot", "shot", "-o", str(png), timeout=120)
    data = png.read_bytes()
    assert f'Screenshot saved to "{png}" ({len(data)} bytes)' in out.stderr
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 640 and height >= 400

    bmp = tmp_path / "s.bmp"
    limactl("screenshot", "shot", "--output", str(bmp), timeout=120)
    head = bmp.read_bytes()[:30]
    assert head[:2] == b"BM"
    assert struct.unpack("<ii", head[18:26]) == (width, height)

    here = tmp_path / "cwd"
    here.mkdir()
    proc = subprocess.run([sys.executable, "-m", "lima.cli", "screenshot", "shot"],
                          env=limactl.env(), cwd=here, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in here.iterdir()] == ["shot-screenshot.png"]

    limactl("stop", "shot", timeout=120)
    assert qemu_pids_for(limactl.home) == []
    stopped = limactl("screenshot", "shot", "-o", str(png), check=False)
    assert stopped.returncode == 1
    assert 'instance "shot" is not running (status: Stopped)' in stopped.stderr
