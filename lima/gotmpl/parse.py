"""Go text/template source to a parse tree: the lexer (text chunks, actions, tokens) and
the parser (if/with/else branches, pipelines). Called by lima.gotmpl.execute; the tree's
node types are what lima.gotmpl.run walks. Errors are lima.gotmpl.errors.TemplateError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lima.gotmpl.errors import TemplateError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)"
    r"(?:[eE][+-]?[0-9]+)?)"
)
_KEYWORDS = ("if", "else", "end", "with", "range", "define", "block", "template", "break",
             "continue")


# Go's builtin functions this package runs (lima.gotmpl.run has their bodies).
BUILTINS = frozenset(("and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "len", "print",
                      "println"))


# -- parse tree -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    root: bool  # `$.X` starts at the data, `.X` at dot
    names: tuple[str, ...]


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Func:
    name: str


@dataclass(frozen=True)
class Paren:
    pipe: Pipe


Operand = Field | Literal | Func | Paren
Command = tuple[Operand, ...]
Pipe = tuple[Command, ...]


@dataclass(frozen=True)
class Action:
    pipe: Pipe


@dataclass(frozen=True)
class Branch:
    kind: str  # "if" or "with"
    pipe: Pipe
    then: list[Node]
    otherwise: list[Node]


Node = str | Action | Branch


# -- lexing the text into chunks and actions ----------------------------------------------

def _split(text: str) -> list[str | tuple[str]]:
    """Text chunks (str) and action bodies (1-tuples), trimming applied, comments dropped."""
    items: list[str | tuple[str]] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(" \t\r\n")
        if start < 0:
            items.append(chunk)
            return items
        inner_start = start + 2
        if text.startswith("-", inner_start) and text[inner_start + 1:inner_start + 2] in (
            " ", "\t", "\r", "\n"
        ):
            chunk = chunk.rstrip(" \t\r\n")
            inner_start += 1
        items.append(chunk)
        end = _find_close(text, inner_start)
        inner = text[inner_start:end]
        trim_next = len(inner) >= 2 and inner[-1] == "-" and inner[-2] in " \t\r\n"
        if trim_next:
            inner = inner[:-1]
        stripped = inner.strip(" \t\r\n")
        if stripped.startswith("/*"):
            if not stripped.endswith("*/") or len(stripped) < 4:
                raise TemplateError("comment ends before closing delimiter")
        else:
            items.append((stripped,))
        pos = end + 2


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


def _tokens(action: str) -> list[Any]:
    """Operand tokens plus the punctuation strings "(", ")" and "|"."""
    out: list[Any] = []
    i = 0
    n = len(action)
    while i < n:
        ch = action[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch in "()|":
            out.append(ch)
            i += 1
            continue
        if ch == '"':
            end = _skip_quoted(action, i)
            out.append(Literal(_unquote(action[i + 1:end - 1])))
            i = end
        elif ch == "`":
            end = _skip_quoted(action, i)
            out.append(Literal(action[i + 1:end - 1]))
            i = end
        elif ch == "'":
            raise TemplateError("character constants are not supported")
        elif ch == "$":
            m = _IDENT.match(action, i + 1)
            if m:
                raise TemplateError("template variables are not supported")
            fields = _FIELDS.match(action, i + 1)
            names = tuple(fields.group()[1:].split(".")) if fields else ()
            out.append(Field(True, names))
            i = fields.end() if fields else i + 1
        elif ch == "." and not action[i + 1:i + 2].isdigit():
            fields = _FIELDS.match(action, i)
            if fields:
                out.append(Field(False, tuple(fields.group()[1:].split("."))))
                i = fields.end()
            else:
                out.append(Field(False, ()))
                i += 1
        elif (m := _NUMBER.match(action, i)) and m.end() > i:
            out.append(Literal(_number(m.group())))
            i = m.end()
        elif m := _IDENT.match(action, i):
            word = m.group()
            literals = {"true": True, "false": False, "nil": None}
            out.append(Literal(literals[word]) if word in literals else Func(word))
            i = m.end()
        else:
            raise TemplateError(f"unexpected {ch!r} in action")
        if i < n and action[i] not in " \t\r\n()|":
            raise TemplateError(f"unexpected {action[i]!r} in operand")
    return out


def _number(text: str) -> int | float:
    try:
        if any(c in text for c in ".eE") and not text.lstrip("+-").lower().startswith("0x"):
            return float(text)
        return int(text, 0)
    except ValueError as exc:
        raise TemplateError(f"bad number syntax: {text!r}") from exc


# -- parsing -------------------------------------------------------------------------------

class Parser:
    def __init__(self, items: list[str | tuple[str]]) -> None:
        self.items = items
        self.pos = 0

    def parse(self) -> list[Node]:
        nodes, stop = self._list()
        if stop is not None:
            raise TemplateError(f"unexpected {{{{{stop}}}}}")
        return nodes

    def _list(self) -> tuple[list[Node], str | None]:
        """Nodes up to an `else ...` or `end` action (returned) or the end of the text."""
        nodes: list[Node] = []
        while self.pos < len(self.items):
            item = self.items[self.pos]
            self.pos += 1
            if isinstance(item, str):
                if item:
                    nodes.append(item)
                continue
            action = item[0]
            word = _IDENT.match(action)
            keyword = word.group() if word and word.end() == len(action.split(None, 1)[0]) \
                else ""
            if keyword in ("else", "end"):
                return nodes, action
            if keyword in ("if", "with"):
                nodes.append(self._branch(keyword, action[len(keyword):]))
            elif keyword in _KEYWORDS:
                raise TemplateError(f"{{{{{keyword}}}}} is not supported")
            else:
                nodes.append(Action(_pipeline(action)))
        return nodes, None

    def _branch(self, kind: str, rest: str) -> Branch:
        pipe = _pipeline(rest, context=kind)
        then, stop = self._list()
        if stop is None:
            raise TemplateError(f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}")
        if stop == "end":
            return Branch(kind, pipe, then, [])
        if not stop.startswith("else"):
            raise TemplateError(f"unexpected {{{{{stop}}}}}")
        tail = stop[len("else"):].strip()
        if not tail:
            otherwise, stop = self._list()
            if stop != "end":
                raise TemplateError(f"expected {{{{end}}}}, found {{{{{stop or 'EOF'}}}}}")
            return Branch(kind, pipe, then, otherwise)
        inner = _IDENT.match(tail)
        if not inner or inner.group() not in ("if", "with"):
            raise TemplateError(f"unexpected {{{{{stop}}}}}")
        # `else if X` is an `if` nested in the else branch that shares the closing end.
        return Branch(kind, pipe, then, [self._branch(inner.group(), tail[inner.end():])])


def _pipeline(text: str, context: str = "command") -> Pipe:
    tokens = _tokens(text)
    if not tokens:
        raise TemplateError(f"missing value for {context}")
    pipe, pos = _parse_pipe(tokens, 0)
    if pos != len(tokens):
        raise TemplateError(f"unexpected {tokens[pos]!r} in {context}")
    return pipe


def _parse_pipe(tokens: list[Any], pos: int) -> tuple[Pipe, int]:
    commands: list[Command] = []
    operands: list[Operand] = []
    while pos < len(tokens):
        tok = tokens[pos]
        if tok == ")":
            break
        pos += 1
        if tok == "|":
            if not operands:
                raise TemplateError("missing command before |")
            commands.append(tuple(operands))
            operands = []
        elif tok == "(":
            inner, pos = _parse_pipe(tokens, pos)
            if pos >= len(tokens) or tokens[pos] != ")":
                raise TemplateError("unclosed left paren")
            if not inner:
                raise TemplateError("missing value for parenthesized pipeline")
            pos += 1
            if pos < len(tokens) and isinstance(tokens[pos], Field):
                raise TemplateError("fields of parenthesized pipelines are not supported")
            operands.append(Paren(inner))
        else:
            operands.append(tok)
    if operands:
        commands.append(tuple(operands))
    elif commands:
        raise TemplateError("missing command after |")
    return tuple(commands), pos


def _check_funcs(nodes: list[Node], allowed: frozenset[str]) -> None:
    """Go refuses a template calling a function its FuncMap does not define, at parse time."""
    def pipe(p: Pipe) -> None:
        for command in p:
            for operand in command:
                if isinstance(operand, Func) and operand.name not in allowed:
                    raise TemplateError(f'function "{operand.name}" not defined or not supported')
                if isinstance(operand, Paren):
                    pipe(operand.pipe)

    for node in nodes:
        if isinstance(node, Action):
            pipe(node.pipe)
        elif isinstance(node, Branch):
            pipe(node.pipe)
            _check_funcs(node.then, allowed)
            _check_funcs(node.otherwise, allowed)


def parse(text: str, funcs: frozenset[str] = frozenset()) -> list[Node]:
    """The parse tree of a whole template (Go parses all of it before running any); `funcs`
    names the functions allowed besides Go's builtins (from lima.gotmpl.run.LIMA_FUNCS)."""
    nodes = Parser(_split(text)).parse()
    _check_funcs(nodes, BUILTINS | funcs)
    return nodes
