"""`limactl list`'s options, for click: the verb itself is lima.commands.listing.run_list.

Reached through lima.cli.VERBS; lima.clifast runs the plain forms (`limactl list [-q]
[--json] [NAME...]`) without click, through the same run_list.
"""

from __future__ import annotations

import click

from lima.commands.listing import run_list


def _echo(text: str) -> None:
    # color=True: nothing stripped, as Go prints (and as lima.clifast's path writes), so the
    # coloured JSON of a terminal (or of $_LIMA_OUTPUT_IS_TTY) survives.
    click.echo(text, nl=False, color=True)


@click.command(name="list")
@click.argument("names", nargs=-1)
@click.option("--format", "-f", "fmt", default=None, metavar="FORMAT",
              help="Output format, one of: json, yaml, table, go-template.")
@click.option("--list-fields", is_flag=True, help="List fields available for format.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format=json.")
@click.option("--quiet", "-q", is_flag=True, help="Only show names.")
@click.option("--all-fields", is_flag=True,
              help="Show all fields (hide no column on a narrow terminal).")
@click.option("--yq", "yq", multiple=True, metavar="EXPR",
              help="Apply yq expression to each instance.")
@click.option("--filter", "-l", "filters", multiple=True, metavar="EXPR",
              help="Filter instances using yq expression (equivalent to --yq 'select(EXPR)').")
@click.option("--wide", "-w", is_flag=True,
              help="Add READY, MANAGED and REASON columns to the table (limapy's own).")
def list_(names: tuple[str, ...], fmt: str | None, list_fields: bool, as_json: bool,
          quiet: bool, all_fields: bool, yq: tuple[str, ...], filters: tuple[str, ...],
          wide: bool) -> None:
    """List instances of Lima.

    --format json (or --json): one JSON object per instance; yaml; table (the default);
    anything else is a Go template over the fields of --list-fields, e.g. '{{.Name}}'
    (functions: json, yaml, indent, missing and Go's builtins).

    --yq EXPR (repeatable, joined with |) applies a yq expression to each instance (it
    implies --format json; yaml works too); --filter EXPR (repeatable, AND) keeps the
    instances for which select(EXPR) yields something, with every format."""

    run_list(names, fmt, list_fields, as_json, quiet, all_fields, yq, filters, wide, out=_echo)
