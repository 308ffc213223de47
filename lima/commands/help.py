"""`limactl help [VERB...]`: a verb's help, as `limactl VERB --help` prints it, and the
help topic `yq-restrictions` (what yq expressions may do). Reached through lima.cli.
"""

from __future__ import annotations

import click

YQ_RESTRICTIONS = """\
limactl takes yq (v4) expressions in `--set`, `limactl list --yq`, `limactl info --yq`
and `limactl template yq`; limapy evaluates them with libjq, whose language yq's
extends. Provision steps of `mode: yq` take the subset of set/append/delete
expressions that runs in the guest.

An expression cannot reach outside the document it is given:
  - `env` fails and `$ENV` is empty, so the host's environment stays private;
  - there is no `load`/`load_str`, and jq's `import`/`include` are refused, so no
    host file is read;
  - there is no `system`, so no command runs.

A template from someone else may carry `--set`-like expressions (`mode: yq`
provision steps), which is why these limits hold everywhere.

yq's syntax: https://mikefarah.gitbook.io/yq/"""

TOPICS = {"yq-restrictions": ("Restrictions on yq expressions in Lima", YQ_RESTRICTIONS)}


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1)
@click.pass_context
def help_(ctx: click.Context, words: tuple[str, ...]) -> None:
    """Help about any command"""
    root = ctx.find_root()
    group = root.command
    if len(words) == 1 and words[0] in TOPICS:
        click.echo(TOPICS[words[0]][1])
        return
    command: click.Command = group
    path = [root.info_name or "limactl"]
    for word in words:
        sub = command.get_command(ctx, word) if isinstance(command, click.Group) else None
        if sub is None:
            click.echo(f"Unknown help topic {list(words)!r}".replace("'", '"'))
            command, path = group, [root.info_name or "limactl"]
            break
        command, path = sub, [*path, word]
    sub_ctx = click.Context(command, info_name=" ".join(path), parent=None)
    click.echo(command.get_help(sub_ctx))
