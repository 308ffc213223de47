"""The subset of yq expressions limapy runs for `mode: yq` provision steps, compiled to data.

Lima runs yq (its guest agent embeds it) in the guest; limapy ships no yq binary, so the
expression is parsed here, on the host, and the seed carries a small JSON program that
lima/assets/cidata/util/lima-yq (python3 in the guest) applies. Validation
(lima.schemas.rules) calls `compile_expression` so that an expression outside the subset
fails at FILE:LINE before anything boots; the seed builder (lima.drivers.cidata) calls it
again on the filled spec. Pure: no I/O.

Supported (what Lima's templates and docs use, and a little more), joined with `|`:
  .a.b = VALUE     set (maps, and lists for [N], are created as needed)
  .a.b += VALUE    append to a list, add to a number, concatenate strings, merge maps
  del(.a.b)        remove a key or a list element
Paths: `.key`, `.key-with-dashes`, `."any key"`, `.["any key"]`, `[N]`. VALUE: a JSON
or YAML flow literal (`"s"`, `42`, `true`, `null`, `[1, "a"]`, `{a: 1}`) or a bare word.
Formats: yaml (needs PyYAML in the guest), json, ini (`.section.key`); `auto` picks one
from the file's extension as Lima does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

SUPPORTED_FORMATS = ("auto", "yaml", "json", "ini")
# Lima's list; the ones limapy cannot write are refused by name.
LIMA_FORMATS = ("auto", "csv", "ini", "json", "props", "tsv", "toml", "xml", "yaml")
_EXTENSIONS = {".json": "json", ".ini": "ini", ".yaml": "yaml", ".yml": "yaml",
               ".csv": "csv", ".properties": "props", ".toml": "toml", ".tsv": "tsv",
               ".xml": "xml"}
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


class YqError(ValueError):
    """The expression is outside the supported subset (the message says where)."""


@dataclass(frozen=True)
class Op:
    op: str  # "set" | "add" | "del"
    path: tuple[str | int, ...]
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "path": list(self.path)}
        if self.op != "del":
            out["value"] = self.value
        return out


def resolve_format(fmt: str | None, path: str) -> str:
    """The format to use for `path`: `fmt` unless it is auto/empty, else by extension
    (unknown extensions are YAML, as Lima does). Raises YqError for formats limapy cannot
    write."""
    chosen = (fmt or "auto").lower()
    if chosen == "auto":
        dot = path.rfind(".")
        ext = path[dot:].lower() if dot > path.rfind("/") else ""
        chosen = _EXTENSIONS.get(ext, "yaml")
    if chosen not in SUPPORTED_FORMATS:
        raise YqError(f'format "{chosen}" is not supported by limapy (supported: '
                      f'{", ".join(SUPPORTED_FORMATS)})')
    return chosen


def compile_expression(text: str) -> list[Op]:
    """The operations of `text`, in order. Raises YqError naming the unsupported part."""
    parser = _Parser(text)
    ops = [parser.statement()]
    while parser.skip_space() and parser.peek("|"):
        parser.pos += 1
        ops.append(parser.statement())
    parser.skip_space()
    if parser.pos != len(text):
        raise parser.error("unexpected text")
    return ops


def program_json(ops: list[Op]) -> str:
    return json.dumps([op.to_json() for op in ops], indent=1) + "\n"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> YqError:
        near = self.text[self.pos:self.pos + 20].strip() or "the end"
        return YqError(f"{what} at character {self.pos + 1} (near {near!r}); limapy "
                       "supports `.a.b = VALUE`, `.a.b += VALUE` and `del(.a.b)`, joined "
                       "with `|`")

    def skip_space(self) -> bool:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1
        return True

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def statement(self) -> Op:
        self.skip_space()
        if self.peek("del("):
            self.pos += 4
            path = self.path()
            self.skip_space()
            if not self.peek(")"):
                raise self.error("expected `)`")
            self.pos += 1
            return Op("del", path)
        path = self.path()
        self.skip_space()
        if self.peek("+="):
            op, self.pos = "add", self.pos + 2
        elif self.peek("=") and not self.peek("=="):
            op, self.pos = "set", self.pos + 1
        else:
            raise self.error("expected `=` or `+=`")
        self.skip_space()
        return Op(op, path, self.value())

    def path(self) -> tuple[str | int, ...]:
        self.skip_space()
        if not self.peek("."):
            raise self.error("expected a path starting with `.`")
        parts: list[str | int] = []
        while True:
            if self.peek(".["):
                self.pos += 1
                continue
            if self.peek("["):
                parts.append(self._bracket())
            elif self.peek('."'):
                self.pos += 1
                parts.append(self._string())
            elif self.peek("."):
                self.pos += 1
                m = _KEY.match(self.text, self.pos)
                if m is None:
                    if not parts and (self.pos >= len(self.text) or self.text[self.pos] in " =+"):
                        raise self.error("assigning to the whole document is not supported")
                    raise self.error("expected a key after `.`")
                parts.append(m.group())
                self.pos = m.end()
            else:
                return tuple(parts)

    def _bracket(self) -> str | int:
        self.pos += 1
        self.skip_space()
        if self.peek('"'):
            key: str | int = self._string()
        else:
            m = re.compile(r"-?[0-9]+").match(self.text, self.pos)
            if m is None:
                raise self.error("expected an index or a quoted key in `[...]`")
            key, self.pos = int(m.group()), m.end()
        self.skip_space()
        if not self.peek("]"):
            raise self.error("expected `]`")
        self.pos += 1
        return key

    def _string(self) -> str:
        decoder = json.JSONDecoder()
        try:
            value, end = decoder.raw_decode(self.text, self.pos)
        except ValueError:
            raise self.error("unterminated string") from None
        self.pos = end
        return str(value)

    def value(self) -> Any:
        """A literal up to the next top-level `|` (or the end)."""
        start, depth, quote = self.pos, 0, ""
        i = self.pos
        while i < len(self.text):
            c = self.text[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 2
                    continue
                if c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c in "[{(":
                depth += 1
            elif c in "]})":
                depth -= 1
            elif c == "|" and depth == 0:
                break
            i += 1
        raw = self.text[start:i].strip()
        if not raw:
            raise self.error("expected a value")
        if raw.startswith((".", "(")) or "(" in raw.split('"')[0]:
            raise self.error("only literal values are supported, not paths or functions")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise self.error(f"cannot read the value {raw!r}") from None
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = raw  # e.g. a date: yq keeps it as the text written
        self.pos = i
        return value
