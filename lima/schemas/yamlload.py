"""Safe YAML loading with line marks: the first step of the spec layer.

`templates.load_document()` calls `load_yaml()` for every file it reads (the user's
lima.yaml, each `base:` template, `_config/default.yaml`, ...); `validate.check()` later
uses the recorded lines to report `FILE:LINE: field.path: message`.

Only the YAML *parser* (libyaml's event stream when available) is used: nodes are
composed here, iteratively, so that every limit is ours to enforce (size, nesting depth,
alias expansion) and no tag can ever construct an object. Scalars follow the YAML 1.2
core schema, as Lima's Go YAML libraries do: `yes`/`no`/`on`/`off` are strings, `0644`
is the integer 644, dates stay strings. Like Lima, the first document of a stream is the
one used; duplicate keys are an error (Lima's second-opinion parser rejects them).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from lima.errors import Problem, SpecError

Path = tuple[str | int, ...]

MAX_BYTES = 4 * 1024 * 1024  # Lima refuses templates larger than 4 MiB.
# Alias expansion budget, in composed nodes: generous for real templates (which use a
# handful of anchors) while a billion-laughs document fails after a few milliseconds.
MAX_ALIAS_NODES = 100_000
MAX_DEPTH = 100  # Lima documents nest about 6 deep; later recursive code stays safe.

_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False}
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Loaded:
    """A parsed document: `data` (plain dicts, lists, scalars) and the 1-based line of
    every mapping key and sequence item, by path (`("mounts", 0, "location")`); the root
    `()` is on the line where the document's mapping starts."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)


class _Refuse(Exception):
    """Internal: stop composing; turned into a SpecError at the top."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_yaml(text: str | bytes, filename: str) -> Loaded:
    """Parse one lima.yaml-like document; raise SpecError naming `filename` (and the line)
    for anything that is not a single, sane YAML mapping."""
    source = _decode(text, filename)
    loader: Any = None
    try:
        loader = _Loader(source)  # the pure-Python reader already checks characters here
        return _compose_stream(loader, filename)
    except _Refuse as e:
        raise SpecError(Problem(filename, e.line, "", e.message)) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = e.problem or e.context or "invalid YAML"
        raise SpecError(Problem(filename, line, "", f"YAML syntax error: {what}")) from None
    except yaml.reader.ReaderError as e:
        line = source.encode("utf-8", "replace")[: e.position].count(b"\n") + 1
        msg = f"not a text file: unacceptable character #x{e.character:04x}"
        raise SpecError(Problem(filename, line, "", msg)) from None
    except yaml.YAMLError as e:
        raise SpecError(Problem(filename, 0, "", f"YAML error: {e}")) from None
    except RecursionError:
        raise SpecError(Problem(filename, 0, "", "document nests too deeply")) from None
    finally:
        if loader is not None:
            loader.dispose()


def _decode(text: str | bytes, filename: str) -> str:
    def refuse(message: str, line: int = 0) -> SpecError:
        return SpecError(Problem(filename, line, "", message))

    if isinstance(text, str):
        if len(text) > MAX_BYTES:  # cheap pre-check before encoding a huge string
            raise refuse(f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise refuse("not a text file: invalid Unicode (lone surrogate)") from None
    else:
        raw = bytes(text)
    if len(raw) > MAX_BYTES:
        raise refuse(f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB ({len(raw)} bytes)")
    nul = raw.find(b"\0")
    if nul >= 0:
        raise refuse("not a text file: contains NUL bytes", raw[:nul].count(b"\n") + 1)
    if isinstance(text, str):
        return text.removeprefix("\ufeff")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise refuse("not a text file: invalid UTF-8", line) from None


class _Frame:
    """One open mapping or sequence while composing."""

    __slots__ = ("anchor", "entry_start", "explicit", "is_map", "key", "key_line", "line",
                 "merges", "nodes_start", "path", "value")

    def __init__(self, is_map: bool, path: Path, line: int, anchor: str | None,
                 entry_start: int, nodes_start: int) -> None:
        self.is_map = is_map
        self.path = path
        self.line = line
        self.anchor = anchor
        self.entry_start = entry_start
        self.nodes_start = nodes_start
        self.value: Any = {} if is_map else []
        self.key: str | None = None  # mapping: the key waiting for its value
        self.key_line = 0
        self.explicit: set[str] = set()
        self.merges: list[tuple[Any, list[tuple[Path, int]]]] = []


@dataclass
class _Anchor:
    value: Any
    scalar_text: str | None  # for aliases used as mapping keys
    nodes: int
    rel_lines: list[tuple[Path, int]]


class _Composer:
    """Builds plain data from parser events with an explicit stack (no recursion)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.entries: list[tuple[Path, int]] = []
        self.anchors: dict[str, _Anchor] = {}
        self.nodes = 0
        self.alias_nodes = 0
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.done = False

    # -- paths ------------------------------------------------------------------------
    def _child(self, line: int) -> tuple[Path, bool] | None:
        """Path of the next node and whether it is a mapping key; None at the root."""
        if not self.stack:
            return None
        top = self.stack[-1]
        if top.is_map:
            if top.key is None:
                return top.path, True
            if top.key == "<<" and top.key not in top.explicit:
                return (*top.path, "<<"), False
            return (*top.path, top.key), False
        return (*top.path, len(top.value)), False

    # -- events -----------------------------------------------------------------------
    def feed(self, ev: Any) -> None:
        line = ev.start_mark.line + 1
        if isinstance(ev, yaml.AliasEvent):
            self._alias(str(ev.anchor), line)
        elif isinstance(ev, yaml.ScalarEvent):
            self._scalar(ev, line)
        elif isinstance(ev, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self._open(ev, line)
        elif isinstance(ev, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self._close()

    def _check_tag(self, tag: str | None, line: int, allowed: set[str]) -> None:
        if tag is None or tag == "!" or tag in allowed:
            return
        shown = "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag
        raise _Refuse(line, f"YAML tag {shown} is not allowed (only plain data is accepted)")

    def _open(self, ev: Any, line: int) -> None:
        is_map = isinstance(ev, yaml.MappingStartEvent)
        self._check_tag(ev.tag, line, {_TAG + ("map" if is_map else "seq")})
        where = self._child(line)
        if where is not None and where[1]:
            raise _Refuse(line, "mapping keys must be scalars, not a mapping or a list")
        if len(self.stack) >= MAX_DEPTH:
            raise _Refuse(line, f"document nests deeper than {MAX_DEPTH} levels")
        path = where[0] if where else ()
        start = len(self.entries)
        self._record(path, line)
        self.nodes += 1
        self.stack.append(_Frame(is_map, path, line, ev.anchor, start, self.nodes))

    def _record(self, path: Path, line: int) -> None:
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_map:
            line = top.key_line  # a mapping value sits on its key's line
        self.entries.append((path, line))

    def _close(self) -> None:
        frame = self.stack.pop()
        value = frame.value
        if frame.is_map and frame.merges:
            self._apply_merges(frame)
        self._remember(frame.anchor, value, None, frame.entry_start, frame.path,
                       self.nodes - frame.nodes_start + 1)
        self._attach(value, frame.line)

    def _scalar(self, ev: Any, line: int) -> None:
        value = self._construct(ev, line)
        where = self._child(line)
        if where is not None and where[1]:
            top = self.stack[-1]
            self._key(top, ev.value, line,
                      is_merge=ev.value == "<<" and ev.tag is None and ev.implicit[0])
            if ev.anchor is not None:
                self.anchors[ev.anchor] = _Anchor(value, ev.value, 1, [])
            self.nodes += 1
            return
        path = where[0] if where else ()
        start = len(self.entries)
        self._record(path, line)
        self.nodes += 1
        self._remember(ev.anchor, value, ev.value, start, path, 1)
        self._attach(value, line)

    def _key(self, top: _Frame, key: str, line: int, *, is_merge: bool) -> None:
        if not is_merge and key in top.explicit:
            raise _Refuse(line, f"duplicate key {key!r} in mapping")
        top.key = "<<" if is_merge else key
        if not is_merge:
            top.explicit.add(key)
        top.key_line = line

    def _alias(self, name: str, line: int) -> None:
        anchor = self.anchors.get(name)
        if anchor is None:
            raise _Refuse(line, f"unknown alias *{name}")
        self.alias_nodes += anchor.nodes
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise _Refuse(line, f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                          "(an alias bomb?)")
        where = self._child(line)
        if where is not None and where[1]:
            if anchor.scalar_text is None:
                raise _Refuse(line, "mapping keys must be scalars, not a mapping or a list")
            top = self.stack[-1]
            self._key(top, anchor.scalar_text, line, is_merge=False)
            return
        path = where[0] if where else ()
        self._record(path, line)
        self.entries.extend(((*path, *rel), ln) for rel, ln in anchor.rel_lines)
        self.nodes += anchor.nodes
        self._attach(copy.deepcopy(anchor.value), line)

    def _remember(self, anchor: str | None, value: Any, text: str | None, start: int,
                  path: Path, nodes: int) -> None:
        if anchor is None:
            return
        n = len(path)
        rel = [(p[n:], ln) for p, ln in self.entries[start + 1:]]
        self.anchors[anchor] = _Anchor(value, text, nodes, rel)

    def _attach(self, value: Any, line: int) -> None:
        if not self.stack:
            self.root = value
            self.done = True
            return
        top = self.stack[-1]
        if not top.is_map:
            top.value.append(value)
            return
        key = top.key
        top.key = None
        if key == "<<" and "<<" not in top.explicit:
            self._merge_value(top, value, line)
        else:
            assert key is not None
            top.value[key] = value

    def _merge_value(self, top: _Frame, value: Any, line: int) -> None:
        # The `<<` value's lines were recorded under path+("<<",...): collect them so the
        # merged keys get the lines of the text they came from.
        prefix = (*top.path, "<<")
        n = len(prefix)
        moved = [(p[n:], ln) for p, ln in self.entries if p[:n] == prefix]
        self.entries = [(p, ln) for p, ln in self.entries if p[:n] != prefix]
        sources = value if isinstance(value, list) else [value]
        if not sources or not all(isinstance(s, dict) for s in sources):
            raise _Refuse(line, "the merge key << needs a mapping or a list of mappings")
        for i, src in enumerate(sources):
            rel = moved if not isinstance(value, list) else [
                (p[1:], ln) for p, ln in moved if p and p[0] == i]
            top.merges.append((src, rel))

    def _apply_merges(self, frame: _Frame) -> None:
        for src, rel in frame.merges:
            for k, v in src.items():
                if k not in frame.value:
                    frame.value[k] = v
                    self.entries.extend(((*frame.path, *p), ln) for p, ln in rel
                                        if p and p[0] == k)

    # -- scalars ----------------------------------------------------------------------
    def _construct(self, ev: Any, line: int) -> Any:
        tag, text = ev.tag, ev.value
        self._check_tag(tag, line, _ALLOWED_TAGS)
        if tag == "!" or (tag is None and not ev.implicit[0]):
            return text  # quoted or block scalars, or the non-specific tag: strings
        if tag is None:
            return _resolve_plain(text)
        kind = tag[len(_TAG):]
        if kind == "str":
            return text
        value = _resolve_plain(text)
        ok = {
            "null": value is None,
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
        }.get(kind, False)
        if not ok:
            raise _Refuse(line, f"{text!r} is not a valid !!{kind}")
        return float(value) if kind == "float" else value


def _resolve_plain(text: str) -> Any:
    """YAML 1.2 core schema resolution of a plain scalar."""
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT10.match(text):
        return int(text, 10)
    if _INT8.match(text):
        return int(text[2:], 8)
    if _INT16.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


def _compose_stream(loader: Any, filename: str) -> Loaded:
    first: _Composer | None = None
    composer: _Composer | None = None
    while True:
        ev = loader.get_event()
        if isinstance(ev, yaml.StreamEndEvent):
            break
        if isinstance(ev, yaml.DocumentStartEvent):
            # Later documents are ignored (as Lima does) but must still be well formed,
            # and they share the alias budget.
            spent = composer.alias_nodes if composer else 0
            composer = _Composer(filename)
            composer.alias_nodes = spent
            first = first or composer
        elif composer is not None and not isinstance(ev, yaml.DocumentEndEvent):
            composer.feed(ev)
    if first is None or first.root is None:
        raise _Refuse(0, "empty document: expected a YAML mapping of lima.yaml fields")
    if not isinstance(first.root, dict):
        kind = "a list" if isinstance(first.root, list) else "a scalar"
        line = first.entries[0][1] if first.entries else 0
        raise _Refuse(line, f"the document is {kind}, expected a mapping of lima.yaml fields")
    lines: dict[Path, int] = {}
    for p, ln in first.entries:
        lines.setdefault(p, ln)
    return Loaded(first.root, lines)
