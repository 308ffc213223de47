"""The part of Go's text/template that lima.yaml fields use.

`defaults.fill()` expands host and guest templates with `execute`. Supported, with Go's
semantics: text and `{{pipeline}}` actions, `{{-`/`-}}` trimming, comments, string, raw
string, number, bool and nil literals, field chains (`.Param.KEY`, `.`, `$`, `$.X`),
parenthesised pipelines, pipes (`x | f`), `if`/`else if`/`else`/`end`,
`with`/`else with`/`else`/`end`, and the builtin functions and, or, not, eq, ne, lt, le,
gt, ge, len, print and println (the ones Lima's templates use, such as k8s.yaml's
`{{if not (and .Param.url .Param.token)}}` and podman's `{{if eq .HostOS "linux"}}`).

The whole template is parsed before anything runs, as Go does. Where Go would fail to parse
or execute it, or where it needs a construct this module does not implement (range,
variables, define/template, other functions), `execute` raises TemplateError and the caller
keeps the original text with a warning, which is what Lima does on its own errors.
A missing map key prints `<no value>` and is false, as in Go with map data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

NO_VALUE = "<no value>"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)"
    r"(?:[eE][+-]?[0-9]+)?)"
)
_KEYWORDS = ("if", "else", "end", "with", "range", "define", "block", "template", "break",
             "continue")


class TemplateError(ValueError):
    """The text cannot be processed as a template (parse or execution error)."""


class _Missing:
    """Go's invalid reflect.Value: a missing map key. Prints `<no value>`, is false."""

    def __repr__(self) -> str:
        return NO_VALUE


MISSING = _Missing()


# -- parse tree -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Field:
    root: bool  # `$.X` starts at the data, `.X` at dot
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Func:
    name: str


@dataclass(frozen=True)
class _Paren:
    pipe: _Pipe


_Operand = _Field | _Literal | _Func | _Paren
_Command = tuple[_Operand, ...]
_Pipe = tuple[_Command, ...]


@dataclass(frozen=True)
class _Action:
    pipe: _Pipe


@dataclass(frozen=True)
class _Branch:
    kind: str  # "if" or "with"
    pipe: _Pipe
    then: list[_Node]
    otherwise: list[_Node]


_Node = str | _Action | _Branch


def execute(text: str, data: dict[str, Any]) -> str:
    """Expand `text` with `data` (a map, as Lima passes)."""
    if "{{" not in text:
        return text
    nodes = _Parser(_split(text)).parse()
    out: list[str] = []
    _run(nodes, data, data, out)
    return "".join(out)


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
            out.append(_Literal(_unquote(action[i + 1:end - 1])))
            i = end
        elif ch == "`":
            end = _skip_quoted(action, i)
            out.append(_Literal(action[i + 1:end - 1]))
            i = end
        elif ch == "'":
            raise TemplateError("character constants are not supported")
        elif ch == "$":
            m = _IDENT.match(action, i + 1)
            if m:
                raise TemplateError("template variables are not supported")
            fields = _FIELDS.match(action, i + 1)
            names = tuple(fields.group()[1:].split(".")) if fields else ()
            out.append(_Field(True, names))
            i = fields.end() if fields else i + 1
        elif ch == "." and not action[i + 1:i + 2].isdigit():
            fields = _FIELDS.match(action, i)
            if fields:
                out.append(_Field(False, tuple(fields.group()[1:].split("."))))
                i = fields.end()
            else:
                out.append(_Field(False, ()))
                i += 1
        elif (m := _NUMBER.match(action, i)) and m.end() > i:
            out.append(_Literal(_number(m.group())))
            i = m.end()
        elif m := _IDENT.match(action, i):
            word = m.group()
            literals = {"true": True, "false": False, "nil": None}
            out.append(_Literal(literals[word]) if word in literals else _Func(word))
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

class _Parser:
    def __init__(self, items: list[str | tuple[str]]) -> None:
        self.items = items
        self.pos = 0

    def parse(self) -> list[_Node]:
        nodes, stop = self._list()
        if stop is not None:
            raise TemplateError(f"unexpected {{{{{stop}}}}}")
        return nodes

    def _list(self) -> tuple[list[_Node], str | None]:
        """Nodes up to an `else ...` or `end` action (returned) or the end of the text."""
        nodes: list[_Node] = []
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
                nodes.append(_Action(_pipeline(action)))
        return nodes, None

    def _branch(self, kind: str, rest: str) -> _Branch:
        pipe = _pipeline(rest, context=kind)
        then, stop = self._list()
        if stop is None:
            raise TemplateError(f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}")
        if stop == "end":
            return _Branch(kind, pipe, then, [])
        if not stop.startswith("else"):
            raise TemplateError(f"unexpected {{{{{stop}}}}}")
        tail = stop[len("else"):].strip()
        if not tail:
            otherwise, stop = self._list()
            if stop != "end":
                raise TemplateError(f"expected {{{{end}}}}, found {{{{{stop or 'EOF'}}}}}")
            return _Branch(kind, pipe, then, otherwise)
        inner = _IDENT.match(tail)
        if not inner or inner.group() not in ("if", "with"):
            raise TemplateError(f"unexpected {{{{{stop}}}}}")
        # `else if X` is an `if` nested in the else branch that shares the closing end.
        return _Branch(kind, pipe, then, [self._branch(inner.group(), tail[inner.end():])])


def _pipeline(text: str, context: str = "command") -> _Pipe:
    tokens = _tokens(text)
    if not tokens:
        raise TemplateError(f"missing value for {context}")
    pipe, pos = _parse_pipe(tokens, 0)
    if pos != len(tokens):
        raise TemplateError(f"unexpected {tokens[pos]!r} in {context}")
    return pipe


def _parse_pipe(tokens: list[Any], pos: int) -> tuple[_Pipe, int]:
    commands: list[_Command] = []
    operands: list[_Operand] = []
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
            if pos < len(tokens) and isinstance(tokens[pos], _Field):
                raise TemplateError("fields of parenthesized pipelines are not supported")
            operands.append(_Paren(inner))
        else:
            operands.append(tok)
    if operands:
        commands.append(tuple(operands))
    elif commands:
        raise TemplateError("missing command after |")
    for command in commands:
        for operand in command:
            if isinstance(operand, _Func) and operand.name not in _FUNCS:
                raise TemplateError(f'function "{operand.name}" not defined or not supported')
    return tuple(commands), pos


# -- execution -----------------------------------------------------------------------------

def _run(nodes: list[_Node], dot: Any, root: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Action):
            out.append(_render(_eval_pipe(node.pipe, dot, root)))
        else:
            value = _eval_pipe(node.pipe, dot, root)
            if _truth(value):
                _run(node.then, value if node.kind == "with" else dot, root, out)
            else:
                _run(node.otherwise, dot, root, out)


def _eval_pipe(pipe: _Pipe, dot: Any, root: Any) -> Any:
    value: Any = _NO_FINAL
    for command in pipe:
        value = _eval_command(command, dot, root, value)
    return value


_NO_FINAL = object()


def _eval_command(command: _Command, dot: Any, root: Any, final: Any) -> Any:
    first = command[0]
    if isinstance(first, _Func):
        args = list(command[1:])
        return _FUNCS[first.name](args, dot, root, final)
    if len(command) > 1 or final is not _NO_FINAL:
        raise TemplateError(f"can't give argument to non-function {_show(first)}")
    if isinstance(first, _Literal) and first.value is None:
        raise TemplateError("nil is not a command")
    return _eval_operand(first, dot, root)


def _eval_operand(operand: _Operand, dot: Any, root: Any) -> Any:
    if isinstance(operand, _Literal):
        return operand.value
    if isinstance(operand, _Paren):
        return _eval_pipe(operand.pipe, dot, root)
    if isinstance(operand, _Field):
        return _lookup(operand.names, root if operand.root else dot)
    # A bare function name as an argument is called without arguments, as in Go.
    return _FUNCS[operand.name]([], dot, root, _NO_FINAL)


def _lookup(names: tuple[str, ...], node: Any) -> Any:
    for name in names:
        if node is MISSING:
            return MISSING  # Go: a field of an invalid value is the invalid value
        if node is None:
            raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
        if not isinstance(node, dict):
            raise TemplateError(f"can't evaluate field {name} in type {_type(node)}")
        node = node.get(name, MISSING)
    return node


def _args(args: list[_Operand], dot: Any, root: Any, final: Any) -> list[Any]:
    values = [_eval_operand(a, dot, root) for a in args]
    if final is not _NO_FINAL:
        values.append(final)
    return values


def _f_and_or(is_or: bool) -> Any:
    def call(args: list[_Operand], dot: Any, root: Any, final: Any) -> Any:
        name = "or" if is_or else "and"
        if not args and final is _NO_FINAL:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        # Go 1.18+ evaluates lazily and returns the deciding argument itself.
        pending: list[Any] = list(args) + ([] if final is _NO_FINAL else [_Literal(final)])
        value: Any = None
        for arg in pending:
            value = _eval_operand(arg, dot, root)
            if _truth(value) == is_or:
                return value
        return value
    return call


def _f_not(args: list[_Operand], dot: Any, root: Any, final: Any) -> Any:
    values = _args(args, dot, root, final)
    if len(values) != 1:
        raise TemplateError(f"wrong number of args for not: want 1 got {len(values)}")
    return not _truth(values[0])


def _kind(value: Any) -> str:
    if value is MISSING or value is None:
        return "invalid"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "other"


def _f_eq(args: list[_Operand], dot: Any, root: Any, final: Any) -> Any:
    values = _args(args, dot, root, final)
    if len(values) < 2:
        raise TemplateError("missing argument for comparison")
    first = values[0]
    for other in values[1:]:
        k1, k2 = _kind(first), _kind(other)
        if k1 != k2:
            if k1 != "invalid" and k2 != "invalid":
                raise TemplateError("incompatible types for comparison")
            continue  # an invalid value equals nothing valid
        if k1 == "other":
            raise TemplateError(f"non-comparable type {_type(first)}")
        if k1 == "invalid" or first == other:
            return True
    return False


def _f_ne(args: list[_Operand], dot: Any, root: Any, final: Any) -> Any:
    values = _args(args, dot, root, final)
    if len(values) != 2:
        raise TemplateError(f"wrong number of args for ne: want 2 got {len(values)}")
    return not _f_eq([_Literal(v) for v in values], dot, root, _NO_FINAL)


def _f_order(op: str) -> Any:
    def call(args: list[_Operand], dot: Any, root: Any, final: Any) -> Any:
        values = _args(args, dot, root, final)
        if len(values) != 2:
            raise TemplateError(f"wrong number of args for {op}: want 2 got {len(values)}")
        a, b = values
        ka, kb = _kind(a), _kind(b)
        if ka not in ("int", "float", "string") or kb not in ("int", "float", "string"):
            raise TemplateError("invalid type for comparison")
        if ka != kb:
            raise TemplateError("incompatible types for comparison")
        less = a < b
        equal = a == b
        return {"lt": less, "le": less or equal, "gt": not (less or equal),
                "ge": not less}[op]
    return call


def _f_len(args: list[_Operand], dot: Any, root: Any, final: Any) -> Any:
    values = _args(args, dot, root, final)
    if len(values) != 1:
        raise TemplateError(f"wrong number of args for len: want 1 got {len(values)}")
    value = values[0]
    if isinstance(value, str):
        return len(value.encode())  # Go's len of a string counts bytes
    if isinstance(value, list | dict):
        return len(value)
    raise TemplateError(f"len of type {_type(value)}")


def _f_print(newline: bool) -> Any:
    def call(args: list[_Operand], dot: Any, root: Any, final: Any) -> Any:
        values = _args(args, dot, root, final)
        out: list[str] = []
        for i, value in enumerate(values):
            # Sprint puts a space between operands when neither is a string; Sprintln always.
            if i and (newline or not (isinstance(value, str) or isinstance(values[i - 1], str))):
                out.append(" ")
            out.append(_render(value, in_print=True))
        return "".join(out) + ("\n" if newline else "")
    return call


_FUNCS: dict[str, Any] = {
    "and": _f_and_or(False),
    "or": _f_and_or(True),
    "not": _f_not,
    "eq": _f_eq,
    "ne": _f_ne,
    "lt": _f_order("lt"),
    "le": _f_order("le"),
    "gt": _f_order("gt"),
    "ge": _f_order("ge"),
    "len": _f_len,
    "print": _f_print(False),
    "println": _f_print(True),
}


def _truth(value: Any) -> bool:
    if value is MISSING or value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def _render(value: Any, in_print: bool = False) -> str:
    if value is MISSING or value is None:
        # print's arguments are interfaces: a missing value arrives as nil there.
        return "<nil>" if in_print else NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    raise TemplateError(f"printing a {_type(value)} is not supported")


def _go_float(value: float) -> str:
    """fmt's %v for a float64: shortest digits, exponent form below 1e-4 or from 1e21."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    dec = Decimal(repr(value)).normalize()
    sign, digits, exp = dec.as_tuple()
    assert isinstance(exp, int)
    point = len(digits) - 1 + exp
    if point < -4 or point >= 21:
        mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if digits[1:] else "")
        return f"{'-' if sign else ''}{mantissa}e{'-' if point < 0 else '+'}{abs(point):02d}"
    return format(dec, "f")


def _type(value: Any) -> str:
    return {"str": "string", "dict": "map", "list": "slice", "NoneType": "nil"}.get(
        type(value).__name__, type(value).__name__
    )


def _show(operand: _Operand) -> str:
    if isinstance(operand, _Field):
        return ("$" if operand.root else "") + ("." + ".".join(operand.names)
                                                if operand.names else ".")
    if isinstance(operand, _Literal):
        return repr(operand.value)
    return "(...)"
