"""Accelerator choice (lima.drivers.accel): force, cache key and fallback, probe injected."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from lima.drivers import accel
from lima.drivers.accel import Accel, detect_accel
from lima.errors import PermanentError


class FakeProbe:
    def __init__(self, works: bool, reason: str = "failed to set MSR 0x10a to 0x69") -> None:
        self.works = works
        self.reason = reason if not works else "KVM probe passed"
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, binary: Sequence[str], cpu: str) -> tuple[bool, str]:
        self.calls.append((list(binary), cpu))
        return self.works, self.reason


@pytest.fixture
def qemu_bin(tmp_path: Path) -> list[str]:
    exe = tmp_path / "qemu-system-x86_64"
    exe.write_text("#!/bin/sh\n")
    return [str(exe)]


@pytest.fixture(autouse=True)
def kvm_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An x86_64 host with a usable /dev/kvm and a private cache; no force set."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(accel.ENV_FORCE, raising=False)
    monkeypatch.setattr(accel, "_host_arch", lambda: "x86_64")
    monkeypatch.setattr(accel, "_kvm_device_problem", lambda: None)


def test_probe_result_is_cached(qemu_bin: list[str]) -> None:
    probe = FakeProbe(works=False)
    first = detect_accel("x86_64", binary=qemu_bin, probe=probe)
    second = detect_accel("x86_64", binary=qemu_bin, probe=probe)
    assert first == Accel("tcg", "failed to set MSR 0x10a to 0x69", cached=False)
    assert second == Accel("tcg", "failed to set MSR 0x10a to 0x69", cached=True)
    assert len(probe.calls) == 1
    assert probe.calls[0] == (qemu_bin, "host")
    entries = json.loads(accel.cache_path().read_text())["entries"]
    assert [e["accel"] for e in entries.values()] == ["tcg"]


def test_working_kvm_is_cached_too(qemu_bin: list[str]) -> None:
    probe = FakeProbe(works=True)
    assert detect_accel("x86_64", binary=qemu_bin, probe=probe).name == "kvm"
    assert detect_accel("x86_64", binary=qemu_bin, probe=probe) == Accel(
        "kvm", "KVM probe passed", cached=True
    )
    assert len(probe.calls) == 1


def test_cache_key_parts(qemu_bin: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    base = accel.cache_key("x86_64", qemu_bin, "host")
    assert accel.cache_key("x86_64", qemu_bin, "host") == base
    assert accel.cache_key("x86_64", qemu_bin, "kvm64") != base
    assert accel.cache_key("aarch64", qemu_bin, "host") != base
    os.utime(qemu_bin[0], ns=(1, 1))  # a new QEMU build
    upgraded = accel.cache_key("x86_64", qemu_bin, "host")
    assert upgraded != base
    monkeypatch.setattr(accel.platform, "release", lambda: "9.9.9-other")
    assert accel.cache_key("x86_64", qemu_bin, "host") != upgraded
    monkeypatch.setattr(accel.socket, "gethostname", lambda: "elsewhere")
    assert accel.cache_key("x86_64", qemu_bin, "host") != upgraded


def test_a_new_kernel_or_qemu_probes_again(
    qemu_bin: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = FakeProbe(works=False)
    detect_accel("x86_64", binary=qemu_bin, probe=probe)
    monkeypatch.setattr(accel.platform, "release", lambda: "9.9.9-other")
    detect_accel("x86_64", binary=qemu_bin, probe=probe)
    os.utime(qemu_bin[0], ns=(2, 2))
    detect_accel("x86_64", binary=qemu_bin, probe=probe)
    assert len(probe.calls) == 3
    # Entries for several hosts/builds live side by side in the one file.
    assert len(json.loads(accel.cache_path().read_text())["entries"]) == 3


def test_cpu_model_is_probed_and_keyed(qemu_bin: list[str]) -> None:
    probe = FakeProbe(works=False)
    detect_accel("x86_64", binary=qemu_bin, cpu="host", probe=probe)
    detect_accel("x86_64", binary=qemu_bin, cpu="Haswell-v4", probe=probe)
    assert [cpu for _, cpu in probe.calls] == ["host", "Haswell-v4"]


def test_corrupt_cache_is_ignored_and_rewritten(qemu_bin: list[str]) -> None:
    accel.cache_path().parent.mkdir(parents=True)
    accel.cache_path().write_text("{not json")
    probe = FakeProbe(works=False)
    assert detect_accel("x86_64", binary=qemu_bin, probe=probe).name == "tcg"
    assert len(probe.calls) == 1
    assert "entries" in json.loads(accel.cache_path().read_text())


@pytest.mark.parametrize("value", ["kvm", "tcg", "TCG"])
def test_force_argument_skips_probe(qemu_bin: list[str], value: str) -> None:
    probe = FakeProbe(works=True)
    result = detect_accel("x86_64", force=value, binary=qemu_bin, probe=probe)
    assert result.name == value.lower()
    assert "forced" in result.reason
    assert probe.calls == []


def test_env_force_skips_probe_and_argument_wins(
    qemu_bin: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(accel.ENV_FORCE, "tcg")
    probe = FakeProbe(works=True)
    assert detect_accel("x86_64", binary=qemu_bin, probe=probe) == Accel(
        "tcg", f"forced by {accel.ENV_FORCE}"
    )
    assert detect_accel("x86_64", force="kvm", binary=qemu_bin, probe=probe).name == "kvm"
    assert probe.calls == []


def test_bad_force_value_is_an_error(qemu_bin: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(accel.ENV_FORCE, "hvf")
    with pytest.raises(PermanentError, match="kvm or tcg"):
        detect_accel("x86_64", binary=qemu_bin, probe=FakeProbe(works=True))


def test_accel_in_qemu_system_override_wins(qemu_bin: list[str]) -> None:
    probe = FakeProbe(works=True)
    result = detect_accel("x86_64", binary=[*qemu_bin, "-accel", "tcg"], probe=probe)
    assert result == Accel("tcg", "forced by $QEMU_SYSTEM_X86_64")
    assert probe.calls == []


def test_foreign_arch_is_tcg_without_probe(qemu_bin: list[str]) -> None:
    probe = FakeProbe(works=True)
    result = detect_accel("aarch64", binary=qemu_bin, probe=probe)
    assert result.name == "tcg" and "aarch64" in result.reason
    assert probe.calls == []


def test_unusable_dev_kvm_is_tcg_without_probe(
    qemu_bin: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accel, "_kvm_device_problem", lambda: "/dev/kvm does not exist")
    probe = FakeProbe(works=True)
    with caplog.at_level(logging.WARNING, logger="lima.drivers.accel"):
        result = detect_accel("x86_64", binary=qemu_bin, probe=probe)
    assert result == Accel("tcg", "/dev/kvm does not exist")
    assert probe.calls == []
    assert not accel.cache_path().exists()
    assert "using TCG" in caplog.text


def test_fallback_warns_once_per_call_in_one_line(
    qemu_bin: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lima.drivers.accel"):
        detect_accel("x86_64", binary=qemu_bin, probe=FakeProbe(works=False))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "\n" not in warnings[0]
    assert "failed to set MSR 0x10a" in warnings[0]
    assert f"{accel.ENV_FORCE}=kvm" in warnings[0]


def test_working_kvm_does_not_warn(qemu_bin: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lima.drivers.accel"):
        detect_accel("x86_64", binary=qemu_bin, probe=FakeProbe(works=True))
    assert caplog.records == []


# ---- the probe's firmware and verdict (no process) ----------------------------------------


def test_probe_firmware_layout() -> None:
    image = accel.probe_firmware()
    assert len(image) == 64 * 1024
    # Reset vector: a far jump to F000:0000, where the code starts with mov $0x3f8,%dx.
    assert image[0xFFF0:0xFFF5] == bytes.fromhex("ea000000f0")
    assert image[:3] == bytes.fromhex("baf803")


def test_probe_argv_uses_kvm_and_never_networks(tmp_path: Path) -> None:
    argv = accel.probe_argv("/usr/bin/qemu-system-x86_64", tmp_path / "fw.bin", "host")
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1] == "host"
    assert "-nodefaults" in argv and "-no-reboot" in argv
    assert not any(a.startswith(("-netdev", "-nic", "-net")) for a in argv)


@pytest.mark.parametrize(
    ("out", "err", "hung", "expected"),
    [
        (
            "",
            "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
            "qemu-system-x86_64: ../kvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n",
            False,
            "failed to set MSR 0x10a to 0x69",
        ),
        ("R", "KVM internal error. Suberror: 1\nemulation failure\n", True, "KVM internal error"),
        ("R", "qemu: warning: host doesn't support requested feature\n", True, "protected mode"),
        ("RP", "", True, "long mode"),
        ("", "", False, "exited with status 1"),
    ],
)
def test_failure_reason(out: str, err: str, hung: bool, expected: str) -> None:
    assert expected in accel._failure_reason(out, err, hung, 3.0, 1)


def test_native_non_x86_host_has_no_probe_yet(
    qemu_bin: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "_host_arch", lambda: "aarch64")
    probe = FakeProbe(works=True)
    result = detect_accel("aarch64", binary=qemu_bin, probe=probe)
    assert result.name == "tcg" and "no KVM probe" in result.reason
    assert probe.calls == []
    assert detect_accel("aarch64", force="kvm", binary=qemu_bin, probe=probe).name == "kvm"
