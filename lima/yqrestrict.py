"""Lima's yq restrictions: an expression may not read the environment nor load files.

Lima turns off yq's env and file operations for every expression it evaluates (a
`limactl list --yq` from a script must not leak `strenv(SECRET)`); libjq has its own
ways in (`env`, `import`, `include`; `$ENV` is emptied by lima.yqeval). `check` refuses
an expression that names one of them outside a string literal (inside `"\\(...)"`
interpolations it still looks), with Lima's words. Called by lima.yqeval before compiling. Pure.
"""

from __future__ import annotations

import re

from lima.errors import LimaError

# ($ENV is left to lima.yqeval's prelude, which makes it an empty object.)
ENV_OPS = frozenset(("env", "strenv", "envsubst"))
FILE_OPS = frozenset(("load", "load_str", "load_xml", "load_props", "load_base64",
                      "import", "include"))
_WORD = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*")


def code_words(expr: str) -> list[str]:
    """The identifiers of `expr` that are code: not inside string literals (but inside
    their interpolations), not field names after a dot (`.env`)."""
    words: list[str] = []
    stack: list[int] = []  # open parentheses per interpolation we are in
    in_string = False
    i = 0
    while i < len(expr):
        ch = expr[i]
        if in_string:
            if ch == "\\" and expr[i + 1:i + 2] == "(":
                in_string = False
                stack.append(0)
                i += 2
                continue
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
            continue
        if ch == '"':
            in_string = True
        elif ch == "(" and stack:
            stack[-1] += 1
        elif ch == ")" and stack:
            if stack[-1] == 0:
                stack.pop()
                in_string = True  # back in the string the interpolation was in
            else:
                stack[-1] -= 1
        elif ch == "#":  # a comment, to the end of the line
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
            continue
        else:
            m = _WORD.match(expr, i)
            if m:
                if not expr[:i].rstrip().endswith("."):
                    words.append(m.group())
                i = m.end()
                continue
        i += 1
    return words


def check(expr: str) -> None:
    """Refuse env and file operations, as Lima's yq does (its messages)."""
    words = set(code_words(expr))
    if words & ENV_OPS:
        raise LimaError(f"failed to parse the yq expression {expr!r}: "
                        "env operations have been disabled")
    if words & FILE_OPS:
        raise LimaError(f"failed to parse the yq expression {expr!r}: "
                        "file operations have been disabled")
