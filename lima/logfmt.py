"""How limactl's log lines look: `--log-format text` (limapy's own lines, as before) or
`--log-format json` (logrus' JSONFormatter, as Lima writes them: one object per line,
keys sorted, `level` in logrus' words, `msg`, `time` in RFC 3339 with the local offset).

lima.cli sets the format and level once (`configure`); verbs that print warnings without
the `logging` module (list, info: they skip importing it to start faster) call `warn`,
and lima.cli prints the fatal error with `fatal`. Stdlib only, imported lazily where it
matters: `logging` is imported only by `configure`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

# logrus' level names (Level.String()) and their order.
LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "error": 40, "fatal": 50,
          "panic": 50}
_LOGRUS_NAME = {5: "trace", 10: "debug", 20: "info", 30: "warning", 40: "error", 50: "fatal"}

_state: dict[str, Any] = {}


def reset() -> None:
    """Back to the defaults (lima.cli.main, once per command line)."""
    _state.update(format="text", level=LEVELS["info"], debug=False)


reset()


def json_mode() -> bool:
    return bool(_state["format"] == "json")


def set_debug(debug: bool) -> None:
    _state["debug"] = debug


def debug() -> bool:
    """--debug was given (tracebacks are shown)."""
    return bool(_state["debug"])


def set_format(log_format: str, level: str) -> None:
    """Record the format and level without touching `logging` (the silent verbs' path)."""
    _state["format"] = log_format
    _state["level"] = LEVELS[level]


def rfc3339(when: float) -> str:
    """Go's time.RFC3339 for a local time: `2006-01-02T15:04:05Z07:00` (Z for UTC)."""
    tm = time.localtime(when)
    offset = tm.tm_gmtoff or 0
    if offset == 0:
        zone = "Z"
    else:
        sign = "+" if offset > 0 else "-"
        zone = f"{sign}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", tm) + zone


def json_line(level: int, msg: str, when: float | None = None, **fields: Any) -> str:
    """One logrus JSON line (with its newline). Go's encoder escapes <, > and & (HTML-safe)
    and U+2028/U+2029; the keys are sorted, as Go marshals a map."""
    import json  # (only here: `limactl --help` imports this module too)

    data = {**fields, "level": _LOGRUS_NAME.get(level, "info"), "msg": msg,
            "time": rfc3339(time.time() if when is None else when)}
    text = json.dumps(dict(sorted(data.items())), ensure_ascii=False, separators=(",", ":"),
                      default=str)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text + "\n"


def warn(msg: str, text: str | None = None, **fields: Any) -> None:
    """A warning on stderr: as limapy's verbs always printed it (the bare message) in text
    format (`text` when given), as a logrus JSON line in json format (`msg` and `fields`);
    nothing when --log-level is above warn."""
    if int(_state["level"]) > LEVELS["warn"]:
        return
    if json_mode():
        sys.stderr.write(json_line(LEVELS["warn"], msg, **fields))
    else:
        sys.stderr.write((msg if text is None else text) + "\n")
    sys.stderr.flush()


def fatal(msg: str) -> str:
    """The text of the error that ends limactl: `limactl: MSG` (multi-line messages as
    they are), or a logrus `fatal` JSON line."""
    if json_mode():
        return json_line(LEVELS["fatal"], msg).rstrip("\n")
    return f"limactl: {msg}" if "\n" not in msg else msg


def configure(log_format: str, level: str) -> None:
    """Set up `logging` for the verbs that log: the level (trace is below debug) and the
    format, to stderr."""
    import logging

    set_format(log_format, level)
    logging.addLevelName(LEVELS["trace"], "TRACE")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":

        class JSONFormatter(logging.Formatter):
            """Records as logrus JSON lines (an exception's text goes in `error`)."""

            def format(self, record: logging.LogRecord) -> str:
                fields = {"error": self.formatException(record.exc_info)} if record.exc_info else {}
                level = max((v for v in _LOGRUS_NAME if v <= record.levelno), default=5)
                return json_line(level, record.getMessage(), record.created, **fields).rstrip()

        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s[%(asctime)s] %(message)s",
                                               datefmt="%H:%M:%S"))
    # (a no-op when the root logger has handlers already, as under pytest)
    logging.basicConfig(level=LEVELS[level], handlers=[handler])
    # The lifecycle machine's library narrates every transition at INFO.
    logging.getLogger("transitions").setLevel(max(logging.WARNING, LEVELS[level]))
