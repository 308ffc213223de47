"""The small part of Go's text/template that lima.yaml fields use: `{{.Field}}`,
`{{.Param.KEY}}`, string literals such as `{{"{{"}}`, comments and `{{-`/`-}}` trimming.

`defaults.fill()` expands host and guest templates with it. Where Lima's Go code would fail
to parse or execute a template (or where the template needs a construct this module does
not implement: if, range, functions, pipes), `execute` raises TemplateError and the caller
keeps the original text with a warning, which is what Lima does on its own errors.
A missing map key prints `<no value>`, as Go does for map data.
"""

from __future__ import annotations

import re
from typing import Any

NO_VALUE = "<no value>"
_FIELD_CHAIN = re.compile(r"^(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_NUMBER = re.compile(r"^-?[0-9]+$")


class TemplateError(ValueError):
    """The text cannot be processed as a template (parse or execution error)."""


def execute(text: str, data: dict[str, Any]) -> str:
    """Expand `text` with `data` (a map, as Lima passes)."""
    if "{{" not in text:
        return text
    out: list[str] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        if start < 0:
            chunk = text[pos:]
            out.append(chunk.lstrip() if trim_next else chunk)
            break
        chunk = text[pos:start]
        if trim_next:
            chunk = chunk.lstrip()
        inner_start = start + 2
        trim_left = text.startswith("- ", inner_start) or text.startswith(
            ("-\t", "-\n", "-\r"), inner_start
        )
        if trim_left:
            chunk = chunk.rstrip()
            inner_start += 1
        out.append(chunk)
        end = _find_close(text, inner_start)
        inner = text[inner_start:end]
        trim_next = False
        if len(inner) >= 2 and inner[-1] == "-" and inner[-2] in " \t\r\n":
            trim_next = True
            inner = inner[:-1]
        out.append(_evaluate(inner.strip(), data))
        pos = end + 2
    return "".join(out)


def _find_close(text: str, pos: int) -> int:
    """Index of the `}}` closing the action that starts at `pos`, skipping quoted text."""
    i = pos
    stripped = text[pos:].lstrip()
    if stripped.startswith("/*"):
        close = text.find("*/", pos)
        if close < 0:
            raise TemplateError("unclosed comment")
        i = close + 2
    while i < len(text):
        ch = text[i]
        if ch in "\"`'":
            i = _skip_quoted(text, i)
            continue
        if text.startswith("}}", i):
            return i
        i += 1
    raise TemplateError("unclosed action")


def _skip_quoted(text: str, i: int) -> int:
    quote = text[i]
    j = i + 1
    while j < len(text):
        if text[j] == "\\" and quote != "`":
            j += 2
            continue
        if text[j] == quote:
            return j + 1
        if text[j] == "\n" and quote != "`":
            break
        j += 1
    raise TemplateError("unterminated quoted string")


def _evaluate(action: str, data: dict[str, Any]) -> str:
    if action.startswith("/*"):
        if not action.endswith("*/"):
            raise TemplateError("comment ends before closing delimiter")
        return ""
    if not action:
        raise TemplateError("missing value for command")
    if action[0] == '"' and action[-1] == '"' and len(action) >= 2:
        return _unquote(action[1:-1])
    if action[0] == "`" and action[-1] == "`" and len(action) >= 2:
        return action[1:-1]
    if action in ("true", "false"):
        return action
    if _NUMBER.match(action):
        return str(int(action))
    if action == ".":
        raise TemplateError("printing the whole data map is not supported")
    if _FIELD_CHAIN.match(action):
        return _render(_lookup(action[1:].split("."), data))
    raise TemplateError(f"unsupported template action {{{{{action}}}}}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}


def _unquote(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            raise TemplateError(f"unsupported escape \\{nxt}")
        if ch == '"':
            raise TemplateError("unexpected quote in string literal")
        out.append(ch)
        i += 1
    return "".join(out)


class _Missing:
    """A missing map key: prints `<no value>`; taking a field of it is an error."""


def _lookup(names: list[str], data: Any) -> Any:
    node: Any = data
    for name in names:
        if isinstance(node, _Missing) or node is None:
            raise TemplateError(f"nil pointer evaluating .{name}")
        if not isinstance(node, dict):
            raise TemplateError(f"can't evaluate field {name} in type {type(node).__name__}")
        node = node.get(name, _Missing())
    return node


def _render(value: Any) -> str:
    if isinstance(value, _Missing) or value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TemplateError(f"printing a {type(value).__name__} is not supported")
