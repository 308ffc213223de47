"""`limactl template copy|validate|url|yq` (alias `tmpl`), Lima 2.2's template management.

Called by `lima.cli` (lazily). Locators are read by the spec layer (`lima.schemas
.templates`: files, `file://`, `template:NAME`, `-`, image files); http(s) and `github:`
templates are refused there, since limapy does no network I/O for templates.

- `copy`: the template with its relative locators made absolute (comments and layout
  kept: only the locator scalars are rewritten in the text), `--verbatim` as it is,
  `--embed` with its bases and scripts merged in except `template:` ones, `--embed-all`
  with all of them, `--fill` filled with defaults as `limactl validate --fill` does.
- `validate`: `limactl validate` (lima.commands.validate).
- `url`: the locator after Lima's custom-URL rewriting (`template://X` -> `template:X`).
- `yq`: a yq expression (lima.yqeval) over the filled template.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import click

from lima.errors import LimaError

log = logging.getLogger(__name__)

_COPY_HELP = """Copy template

Copy a template via locator to a local file or stdout (default)

\b
Template locators are local files, file://, or template: URLs
  # Copy default template to STDOUT
  limactl template copy template:default -
  # Copy a template to a local file and embed all its external references
  # (this does not embed template: references)
  limactl template copy --embed ./lima.yaml mighty-machine.yaml
"""

_YQ_HELP = """Query template expressions

Use the builtin YQ evaluator to extract information from a template.
External references are embedded and default values are filled in
before the YQ expression is evaluated.

\b
Example:
  limactl template yq template:default '.images[].location'

\b
The example command is equivalent to using an external yq command like this:
  limactl template copy --fill template:default - | yq '.images[].location'
"""


@click.group(help="Lima template management (EXPERIMENTAL)")
def template() -> None:
    pass


def _stdin(locator: str) -> bytes | None:
    from lima.commands.validate import read_stdin_once

    return read_stdin_once((locator,))


def _transform(locator: str) -> str:
    """Lima's TransformCustomURL, offline: `template://X` is rewritten to `template:X`;
    `github:` needs the network (its default branch and symlinks are looked up), which
    limapy does not use for templates."""
    scheme, sep, rest = locator.partition(":")
    if not sep or len(scheme) <= 1:
        return locator
    if scheme == "template":
        if rest.startswith("//"):
            fixed = "template:" + os.path.normpath(rest[2:]).lstrip("/")
            log.warning("Template locator `%s` should be written `%s` since Lima v2.0",
                        locator, fixed)
            return fixed
        return locator
    if scheme == "github":
        raise LimaError(f"`{locator}`: github: template URLs are not supported by limapy "
                        "(resolving one asks GitHub over the network); download the "
                        "template and give its path")
    return locator


# --------------------------------------------------------------------------------------
# copy


def absolute_text(text: str, display: str, base: str) -> str:
    """The document with every relative `base:` / `provision[].file` / `probes[].file`
    locator made absolute; everything else (comments, layout) as it was."""
    import yaml

    from lima.schemas.templates import absolute_locator

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise LimaError(f"{display}: not valid YAML: {exc}") from None
    if root is None:
        return text
    if not isinstance(root, yaml.MappingNode):
        raise LimaError(f"{display}: the document must be a mapping")
    edits: list[tuple[int, int, str]] = []

    def rewrite(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str") and node.value:
            new = absolute_locator(node.value, base, (display, node.start_mark.line + 1), path)
            if new != node.value:
                edits.append((node.start_mark.index, node.end_mark.index, json.dumps(new)))

    def url_of(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == "url":
                    rewrite(value, f"{path}.url")
        else:
            rewrite(node, path)

    for key, value in root.value:
        if key.value == "base":
            items = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for i, item in enumerate(items):
                url_of(item, f"base[{i}]" if isinstance(value, yaml.SequenceNode) else "base")
        elif key.value in ("provision", "probes") and isinstance(value, yaml.SequenceNode):
            for i, entry in enumerate(value.value):
                if isinstance(entry, yaml.MappingNode):
                    for k, v in entry.value:
                        if k.value == "file":
                            url_of(v, f"{key.value}[{i}].file")
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _embedded_yaml(locator: str, stdin: bytes | None, embed_templates: bool) -> str:
    from lima.schemas import yamldump
    from lima.schemas.templates import load_document

    document = load_document(locator, stdin=stdin, embed_templates=embed_templates)
    return yamldump.dump(document.data)


def _filled_yaml(locator: str, stdin: bytes | None) -> tuple[str, dict[str, Any]]:
    from lima import schemas

    resolved = schemas.resolve(locator, stdin=stdin)
    for warning in resolved.warnings:
        click.echo(str(warning), err=True)
    return schemas.dump_yaml(resolved.filled), resolved.filled


@template.command("copy", help=_COPY_HELP)
@click.argument("source", metavar="TEMPLATE")
@click.argument("dest", default="-", metavar="[DEST]")
@click.option("--embed", is_flag=True, help="Embed external dependencies into template")
@click.option("--embed-all", is_flag=True, help="Embed all dependencies into template")
@click.option("--fill", is_flag=True, help="Fill defaults")
@click.option("--verbatim", is_flag=True, help="Don't make locators absolute")
def copy(source: str, dest: str, embed: bool, embed_all: bool, fill: bool,
         verbatim: bool) -> None:
    from lima.schemas.templates import read_locator

    embed_all = embed_all or fill
    embed = embed or embed_all
    if embed and verbatim:
        raise LimaError("--verbatim cannot be used with any of --embed, --embed-all, or --fill")
    locator = _transform(source)
    stdin = _stdin(locator)
    display, raw, base = read_locator(locator, stdin=stdin)
    if not raw:
        raise LimaError(f"don't know how to interpret `{source}` as a template locator")
    if fill:
        text, _ = _filled_yaml(locator, stdin)
    elif embed:
        text = _embedded_yaml(locator, stdin, embed_templates=embed_all)
    else:
        text = raw.decode("utf-8", errors="replace")
        if not verbatim:
            text = absolute_text(text, display, base)
    if dest == "-":
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    except OSError as exc:
        raise LimaError(f"open {dest}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------
# validate, url, yq


@template.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="TEMPLATE [TEMPLATE, ...]")
@click.option("--fill", is_flag=True, help="Fill defaults")
@click.pass_context
def validate(ctx: click.Context, files: tuple[str, ...], fill: bool) -> None:
    """Validate YAML templates"""
    from lima.commands.validate import validate as validate_verb

    ctx.invoke(validate_verb, files=tuple(_transform(f) for f in files), fill=fill)


@template.command("url")
@click.argument("locator", metavar="CUSTOM_URL")
def url(locator: str) -> None:
    """Transform custom template URLs to regular file or https URLs"""
    click.echo(_transform(locator))


def yq_output(results: list[Any]) -> str:
    """What yq prints for these results: scalars bare, maps and lists as YAML blocks."""
    from lima.schemas import yamldump

    out = []
    for value in results:
        if isinstance(value, str):
            out.append(value + "\n")
        elif value is None or isinstance(value, (bool, int, float)):
            out.append(json.dumps(value) + "\n")
        elif isinstance(value, dict):
            out.append(yamldump.dump(value) if value else "{}\n")
        else:
            import yaml

            out.append(yaml.dump(value, Dumper=yamldump.BlockDumper, sort_keys=False,
                                 default_flow_style=False, allow_unicode=True, width=100)
                       if value else "[]\n")
    return "".join(out)


@template.command("yq", help=_YQ_HELP)
@click.argument("locator", metavar="TEMPLATE")
@click.argument("expr", metavar="EXPR")
def yq(locator: str, expr: str) -> None:
    from lima.yqeval import evaluate_all

    locator = _transform(locator)
    _, filled = _filled_yaml(locator, _stdin(locator))
    click.echo(yq_output(evaluate_all(expr, filled)), nl=False)
