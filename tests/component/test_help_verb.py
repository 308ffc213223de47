"""`limactl help [VERB...]` and the `yq-restrictions` topic, through the CLI."""

from __future__ import annotations

import pytest

from tests.component.cli import run_cli

pytestmark = pytest.mark.component


def test_help_of_a_verb_and_a_subverb(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["help", "stop"], capsys)
    assert rc == 0 and out.startswith("Usage: limactl stop ") and "--force" in out
    rc, out, _ = run_cli(["help", "disk", "create"], capsys)
    assert rc == 0 and out.startswith("Usage: limactl disk create ") and "--size" in out


def test_help_alone_is_the_root_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["help"], capsys)
    assert rc == 0 and out.startswith("Usage: limactl ") and "Commands:" in out


def test_unknown_topic_as_cobra(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["help", "nope"], capsys)
    assert rc == 0
    assert out.splitlines()[0] == 'Unknown help topic ["nope"]' and "Commands:" in out


def test_yq_restrictions_names_what_is_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["help", "yq-restrictions"], capsys)
    assert rc == 0
    for word in ("env", "$ENV", "load", "system", "--set"):
        assert word in out
