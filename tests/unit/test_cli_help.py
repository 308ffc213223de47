"""`limactl --help` lists the verbs from lima.cli.SHORT_HELP without importing them: the
table must say what each verb's own help says, at every width click may truncate to."""

from __future__ import annotations

import re
import sys

import click
import pytest

from lima import cli


def test_short_help_table_matches_every_verb() -> None:
    ctx = click.Context(cli.limactl)
    verbs = cli.limactl.list_commands(ctx)
    assert set(cli.SHORT_HELP) == set(verbs)
    for verb in verbs:
        command = cli.limactl.get_command(ctx, verb)
        assert command is not None
        for limit in range(30, 120, 7):
            stand_in = click.Command(verb, help=cli.SHORT_HELP[verb])
            assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), \
                (verb, limit)


def test_help_imports_no_verb(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("lima.commands.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    # The column width follows the longest verb name.
    assert re.search(r"^  list +List instances of Lima\.$", out, re.M)
    assert re.search(r"^  apply +Create each instance when missing, then drive it to", out, re.M)
    assert not [m for m in sys.modules if m.startswith("lima.commands.")]
