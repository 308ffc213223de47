"""Running a parsed Go template: the nodes of lima.gotmpl.parse evaluated against the data
(maps, as Lima passes), Go's builtin functions (and, or, not, eq, ne, lt, le, gt, ge, len,
print, println) and Go's printing of values. Called by lima.gotmpl.execute.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from lima.gotmpl.errors import MISSING, NO_VALUE, Struct, TemplateError
from lima.gotmpl.parse import Action, Command, Field, Func, Literal, Node, Operand, Paren, Pipe


def run(nodes: list[Node], dot: Any, root: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Action):
            out.append(_render(_eval_pipe(node.pipe, dot, root)))
        else:
            value = _eval_pipe(node.pipe, dot, root)
            if _truth(value):
                run(node.then, value if node.kind == "with" else dot, root, out)
            else:
                run(node.otherwise, dot, root, out)


def _eval_pipe(pipe: Pipe, dot: Any, root: Any) -> Any:
    value: Any = _NO_FINAL
    for command in pipe:
        value = _eval_command(command, dot, root, value)
    return value


_NO_FINAL = object()


def _eval_command(command: Command, dot: Any, root: Any, final: Any) -> Any:
    first = command[0]
    if isinstance(first, Func):
        args = list(command[1:])
        return _FUNCS[first.name](args, dot, root, final)
    if len(command) > 1 or final is not _NO_FINAL:
        raise TemplateError(f"can't give argument to non-function {_show(first)}")
    if isinstance(first, Literal) and first.value is None:
        raise TemplateError("nil is not a command")
    return _eval_operand(first, dot, root)


def _eval_operand(operand: Operand, dot: Any, root: Any) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    if isinstance(operand, Paren):
        return _eval_pipe(operand.pipe, dot, root)
    if isinstance(operand, Field):
        return _lookup(operand.names, root if operand.root else dot)
    # A bare function name as an argument is called without arguments, as in Go.
    return _FUNCS[operand.name]([], dot, root, _NO_FINAL)


def _lookup(names: tuple[str, ...], node: Any) -> Any:
    for name in names:
        if node is MISSING:
            return MISSING  # Go: a field of an invalid value is the invalid value
        if node is None:
            raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
        if not isinstance(node, dict) or (isinstance(node, Struct) and name not in node):
            raise TemplateError(f"can't evaluate field {name} in type {_type(node)}")
        node = node.get(name, MISSING)
    return node


def _args(args: list[Operand], dot: Any, root: Any, final: Any) -> list[Any]:
    values = [_eval_operand(a, dot, root) for a in args]
    if final is not _NO_FINAL:
        values.append(final)
    return values


def _f_and_or(is_or: bool) -> Any:
    def call(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
        name = "or" if is_or else "and"
        if not args and final is _NO_FINAL:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        # Go 1.18+ evaluates lazily and returns the deciding argument itself.
        pending: list[Any] = list(args) + ([] if final is _NO_FINAL else [Literal(final)])
        value: Any = None
        for arg in pending:
            value = _eval_operand(arg, dot, root)
            if _truth(value) == is_or:
                return value
        return value
    return call


def _f_not(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
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


def _f_eq(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
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


def _f_ne(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
    values = _args(args, dot, root, final)
    if len(values) != 2:
        raise TemplateError(f"wrong number of args for ne: want 2 got {len(values)}")
    return not _f_eq([Literal(v) for v in values], dot, root, _NO_FINAL)


def _f_order(op: str) -> Any:
    def call(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
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


def _f_len(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
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
    def call(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
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


def _one_arg(name: str, args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
    values = _args(args, dot, root, final)
    if len(values) != 1:
        raise TemplateError(f"wrong number of args for {name}: want 1 got {len(values)}")
    value = values[0]
    return value.as_json if isinstance(value, Struct) else value


def _f_json(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
    import json

    value = _one_arg("json", args, dot, root, final)
    return json.dumps(None if value is MISSING else value, ensure_ascii=False,
                      separators=(",", ":"))


def _f_yaml(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
    import yaml

    value = _one_arg("yaml", args, dot, root, final)
    text = yaml.safe_dump(None if value is MISSING else value, sort_keys=False,
                          allow_unicode=True)
    return "---\n" + text.removesuffix("\n").removesuffix("\n...")


def _text_args(name: str, default: Any, args: list[Operand], dot: Any, root: Any,
               final: Any) -> tuple[Any, str]:
    """Lima's indent/missing: one string, optionally after one option of `default`'s type."""
    values = _args(args, dot, root, final)
    if not values:
        raise TemplateError(f"error calling {name}: function takes at least one string argument")
    if len(values) > 2:
        raise TemplateError(f"error calling {name}: function takes at most 2 arguments")
    option = values[0] if len(values) == 2 else default
    if type(option) is not type(default):
        kind = "an integer" if isinstance(default, int) else "a string"
        raise TemplateError(f"error calling {name}: optional first argument must be {kind}")
    if not isinstance(values[-1], str):
        raise TemplateError(f"error calling {name}: last argument must be a string")
    return option, values[-1]


def _f_indent(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
    size, text = _text_args("indent", 2, args, dot, root, final)
    return "\n".join(" " * size + line if line else line for line in text.split("\n"))


def _f_missing(args: list[Operand], dot: Any, root: Any, final: Any) -> Any:
    message, text = _text_args("missing", "<missing>", args, dot, root, final)
    return text or message


_FUNCS.update({"json": _f_json, "yaml": _f_yaml, "indent": _f_indent, "missing": _f_missing})
# The functions Lima adds for `limactl list --format` (its textutil.TemplateFuncMap); the
# lima.yaml templates get only Go's builtins.
LIMA_FUNCS = frozenset(("json", "yaml", "indent", "missing"))


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
    if isinstance(value, Struct):
        return value.type_name
    return {"str": "string", "dict": "map", "list": "slice", "NoneType": "nil"}.get(
        type(value).__name__, type(value).__name__
    )


def _show(operand: Operand) -> str:
    if isinstance(operand, Field):
        return ("$" if operand.root else "") + ("." + ".".join(operand.names)
                                                if operand.names else ".")
    if isinstance(operand, Literal):
        return repr(operand.value)
    return "(...)"
