"""`limactl validate FILE|template:NAME... [--fill]`: every problem at once, or OK.

Called by `lima.cli` (lazily: this module is only imported for this verb). It resolves each
locator through `lima.schemas.resolve()` and reports warnings as they come and all errors,
sorted, at the end (raised as one SpecError, which `cli.main` prints with exit code 1).
"""

from __future__ import annotations

import sys

import click

from lima.errors import Problem, SpecError


def read_stdin_once(locators: tuple[str, ...]) -> bytes | None:
    """stdin's content when `-` is among the locators (read once, shared by all of them).

    One byte more than the loader accepts is read, so an oversized stdin is refused by the
    loader's own size check instead of being read to its end (which may never come)."""
    if "-" not in locators:
        return None
    from lima.schemas.yamlload import MAX_BYTES

    return sys.stdin.buffer.read(MAX_BYTES + 1)


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--fill", is_flag=True, help="Print the resolved, defaulted YAML.")
def validate(files: tuple[str, ...], fill: bool) -> None:
    """Validate lima.yaml files and templates (FILE, template:NAME, or - for stdin)."""
    from lima import schemas

    stdin = read_stdin_once(files)
    # Like Lima, several filled documents are printed as a YAML stream (`---` ... `...`),
    # so the output of `validate --fill a b` still parses.
    stream = len(files) > 1
    problems: list[Problem] = []
    for locator in files:
        try:
            resolved = schemas.resolve(locator, stdin=stdin)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        for warning in resolved.warnings:
            click.echo(str(warning), err=True)
        if fill:
            text = schemas.dump_yaml(resolved.filled)
            click.echo(f"---\n{text}...\n" if stream else text, nl=False)
        else:
            click.echo(f"{resolved.document.source}: OK")
    if problems:
        raise SpecError(problems)
