"""`limactl validate FILE|template:NAME... [--fill]`: every problem at once, or OK."""

from __future__ import annotations

import sys

import click

from lima.errors import Problem, SpecError


def read_stdin_once(locators: tuple[str, ...]) -> bytes | None:
    return sys.stdin.buffer.read() if "-" in locators else None


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--fill", is_flag=True, help="Print the resolved, defaulted YAML.")
def validate(files: tuple[str, ...], fill: bool) -> None:
    """Validate lima.yaml files and templates (FILE, template:NAME, or - for stdin)."""
    from lima import schemas

    stdin = read_stdin_once(files)
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
            click.echo(schemas.dump_yaml(resolved.filled), nl=False)
        else:
            click.echo(f"{resolved.document.source}: OK")
    if problems:
        raise SpecError(problems)
