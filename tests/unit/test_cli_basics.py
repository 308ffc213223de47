"""The CLI entry point: version, help, unknown verbs."""

from __future__ import annotations

import pytest

from lima.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    from lima import LIMA_COMPAT_VERSION
    assert capsys.readouterr().out == f"limactl version {LIMA_COMPAT_VERSION}\n"  # as Lima's


def test_unknown_verb_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-verb"])
    assert exc.value.code == 1  # cobra's usage errors exit 1
    assert 'Error: unknown command "no-such-verb" for "limactl"' in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--bogus"], "Error: unknown flag: --bogus"),
    (["list", "-z"], "Error: unknown shorthand flag: 'z' in -z"),
    (["disk", "nope"], 'Error: unknown command "nope" for "limactl disk"'),
])
def test_usage_errors_in_cobras_words(args: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 1
    assert message in capsys.readouterr().err
