"""How a template and its `base:` templates combine: Lima's embed rules, as pure functions.

`templates.load_document()` calls `merge_base()` once per base (child first, then each base
in the order of the `base:` list, each already merged with its own bases) and
`combine_list_entries()` once at the end. Every function takes and returns the data
together with its LineMap (path -> (file, line)), so each value of the result still points
at the file and line it came from.

The rules follow Lima's `pkg/limatmpl/embed.go`:
- a field missing in the child comes from the base; maps merge key by key, recursively;
  a scalar (or `null`) in the child wins;
- a list in the child gets the base's list (same path) appended, except `provision` and
  `probes` (`base_first` in lima.schemas.fields), where the base's entries come first;
- `dns` is not merged: the child's list, when it has one, replaces the base's;
- `mountTypesUnsupported` keeps each value once;
- `minimumLimaVersion` and `vmOpts.qemu.minimumVersion` keep the higher version;
- after all bases: `additionalDisks` (by name), `mounts` (by mountPoint, else location) and
  `networks` (by interface) combine entries with the same key, the earlier entry keeping its
  fields and taking the missing ones from the later (the Entry rows of lima.schemas.fields
  with a `combine` rule); a key of `*` fills every earlier entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lima.schemas import fields

PathKey = tuple[str | int, ...]
Origin = tuple[str, int]
LineMap = dict[PathKey, Origin]

# Top-level lists where the base's entries run first (Lima prepends them).
PREPENDED = frozenset(row.path for row in fields.FIELDS if row.base_first)


def _combined(list_path: str) -> tuple[fields.Entry, ...]:
    return tuple(row for row in fields.entry_rows(list_path)
                 if row.combine is not fields.Combine.KEEP)


# The keys `combine_list_entries` copies into an earlier entry when it lacks them.
DISK_FIELDS = _combined("additionalDisks")
MOUNT_FIELDS = _combined("mounts")
NETWORK_FIELDS = _combined("networks")


def walk_paths(value: Any) -> Iterator[PathKey]:
    """Every path inside `value`, relative to it, the empty path first."""
    yield ()
    if isinstance(value, dict):
        for key, item in value.items():
            for rel in walk_paths(item):
                yield (key, *rel)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for rel in walk_paths(item):
                yield (index, *rel)


def sub_lines(lines: LineMap, prefix: PathKey, value: Any) -> LineMap:
    """The origins of `value` (found at `prefix` in `lines`), keyed relative to it."""
    out: LineMap = {}
    for rel in walk_paths(value):
        origin = lines.get(prefix + rel)
        if origin is not None:
            out[rel] = origin
    return out


def put_lines(out: LineMap, prefix: PathKey, rel_lines: LineMap) -> None:
    for rel, origin in rel_lines.items():
        out[prefix + rel] = origin


def merge_base(
    child: dict[str, Any], child_lines: LineMap, base: dict[str, Any], base_lines: LineMap
) -> tuple[dict[str, Any], LineMap]:
    """Merge one (already fully embedded) base into the child; the child wins.

    `base:` itself is dropped from both: the caller has taken the child's list apart.
    """
    child = {k: v for k, v in child.items() if k != "base"}
    base = {k: v for k, v in base.items() if k != "base"}
    if child.get("dns") is not None:
        # Lima never merges dns lists: a child with any dns setting keeps only its own.
        base.pop("dns", None)
    out_lines: LineMap = {}
    data = _merge_node(child, child_lines, base, base_lines, (), out_lines)
    assert isinstance(data, dict)
    if isinstance(data.get("mountTypesUnsupported"), list):
        data["mountTypesUnsupported"], out_lines = _unique_list(
            data["mountTypesUnsupported"], ("mountTypesUnsupported",), out_lines
        )
    _keep_higher_version(data, out_lines, child, base, base_lines, ("minimumLimaVersion",))
    _keep_higher_version(
        data, out_lines, child, base, base_lines, ("vmOpts", "qemu", "minimumVersion")
    )
    return data, out_lines


def _merge_node(
    a: Any, a_lines: LineMap, b: Any, b_lines: LineMap, path: PathKey, out: LineMap
) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        if path in a_lines:
            out[path] = a_lines[path]
        result: dict[str, Any] = {}
        for key, a_value in a.items():
            if key in b:
                result[key] = _merge_node(a_value, a_lines, b[key], b_lines, (*path, key), out)
            else:
                result[key] = a_value
                put_lines(out, (*path, key), sub_lines(a_lines, (*path, key), a_value))
        for key, b_value in b.items():
            if key not in a:
                result[key] = b_value
                put_lines(out, (*path, key), sub_lines(b_lines, (*path, key), b_value))
        return result
    if isinstance(a, list) and isinstance(b, list):
        if path in a_lines:
            out[path] = a_lines[path]
        elif path in b_lines:
            out[path] = b_lines[path]
        first, first_lines, second, second_lines = a, a_lines, b, b_lines
        if len(path) == 1 and path[0] in PREPENDED:
            first, first_lines, second, second_lines = b, b_lines, a, a_lines
        merged: list[Any] = []
        for items, lines in ((first, first_lines), (second, second_lines)):
            for index, item in enumerate(items):
                put_lines(out, (*path, len(merged)), sub_lines(lines, (*path, index), item))
                merged.append(item)
        return merged
    # A scalar, a null or a type clash: the child's value stands, as in Lima.
    put_lines(out, path, sub_lines(a_lines, path, a))
    return a


def _unique_list(items: list[Any], path: PathKey, lines: LineMap) -> tuple[list[Any], LineMap]:
    """Drop repeated values, keeping the first of each; line marks follow the survivors."""
    seen: list[Any] = []
    kept: list[int] = []
    for index, item in enumerate(items):
        if item not in seen:
            seen.append(item)
            kept.append(index)
    return _reindex(items, path, lines, kept)


def _reindex(
    items: list[Any], path: PathKey, lines: LineMap, kept: list[int]
) -> tuple[list[Any], LineMap]:
    """Keep the entries at the `kept` indexes of the list at `path` (renumbering lines)."""
    n = len(path)
    out: LineMap = {
        p: o for p, o in lines.items() if not (len(p) > n and p[:n] == path)
    }
    for new, old in enumerate(kept):
        put_lines(out, (*path, new), sub_lines(lines, (*path, old), items[old]))
    return [items[i] for i in kept], out


def _get(data: Any, path: PathKey) -> Any:
    for key in path:
        if isinstance(data, dict) and isinstance(key, str):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _set(data: dict[str, Any], path: PathKey, value: Any) -> None:
    node: Any = data
    for key in path[:-1]:
        nxt = node.get(key) if isinstance(node, dict) else node[key]
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    node[path[-1]] = value


def version_key(version: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """A sort key for `1.2.3` / `v1.2.3-rc1` style versions (numbers, then the rest)."""
    match = re.match(r"^v?(\d+(?:\.\d+)*)(.*)$", version.strip())
    if not match:
        return ((), (version,))
    numbers = tuple(int(x) for x in match.group(1).split("."))
    numbers = numbers + (0,) * (3 - len(numbers))
    # A pre-release suffix sorts before the plain release, as in semver.
    rest = match.group(2)
    return (numbers, (("0" + rest) if rest else "1",))


def _keep_higher_version(
    data: dict[str, Any],
    out_lines: LineMap,
    child: dict[str, Any],
    base: dict[str, Any],
    base_lines: LineMap,
    path: PathKey,
) -> None:
    mine, theirs = _get(child, path), _get(base, path)
    if not (isinstance(mine, str) and isinstance(theirs, str)):
        return
    if version_key(theirs) > version_key(mine):
        _set(data, path, theirs)
        if path in base_lines:
            out_lines[path] = base_lines[path]


# --------------------------------------------------------------------------------------
# combining entries that share a key, once all bases are merged


def combine_list_entries(
    data: dict[str, Any], lines: LineMap
) -> tuple[dict[str, Any], LineMap]:
    """Lima's combineListEntries: additionalDisks by name, mounts by mount point,
    networks by interface. Returns new data; the input is not modified."""
    data = dict(data)
    if isinstance(data.get("additionalDisks"), list):
        data["additionalDisks"], lines = _combine(
            data["additionalDisks"], ("additionalDisks",), lines, _disk_key, _fill_disk
        )
    if isinstance(data.get("mounts"), list):
        data["mounts"], lines = _combine(
            data["mounts"], ("mounts",), lines, _mount_key, _fill_mount
        )
    if isinstance(data.get("networks"), list):
        data["networks"], lines = _combine(
            data["networks"], ("networks",), lines, _network_key, _fill_network
        )
    return data, lines


def _disk_key(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return str(entry["name"])
    return ""


def _mount_key(entry: Any) -> str:
    if not isinstance(entry, dict):
        return ""
    point = entry.get("mountPoint")
    if isinstance(point, str):
        return point
    location = entry.get("location")
    return location if isinstance(location, str) else ""


def _network_key(entry: Any) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("interface"), str):
        return str(entry["interface"])
    return ""


_Fill = Any  # (dest, dest_lines, src, src_lines) -> (dest, dest_lines)


def _copy_fields(
    dest: dict[str, Any],
    dest_lines: LineMap,
    src: dict[str, Any],
    src_lines: LineMap,
    rows: tuple[fields.Entry, ...],
) -> None:
    """Copy each row's key from `src` where `dest` lacks it, by the row's `combine` rule; a
    key with `exclusive` ones only when `dest` sets none of them (judged before copying)."""
    open_rows = [
        row for row in rows
        if not row.exclusive or not any(_get(dest, (k,)) for k in (row.key, *row.exclusive))
    ]
    for row in open_rows:
        field: PathKey = tuple(row.key.split("."))
        mine, theirs = _get(dest, field), _get(src, field)
        if row.combine is fields.Combine.FILL_EMPTY:
            missing = not mine and bool(theirs)
        else:
            missing = mine is None and theirs is not None
        if missing:
            _set(dest, field, _deep_copy(theirs))
            put_lines(dest_lines, field, sub_lines(src_lines, field, theirs))


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _fill_disk(dest: Any, dest_lines: LineMap, src: Any, src_lines: LineMap) -> Any:
    if not isinstance(src, dict):
        return dest  # a bare name adds nothing
    if isinstance(dest, str):
        # Upgrade `- data` to `- name: data` so that fields can be added.
        origin = dest_lines.get(())
        dest = {"name": dest}
        if origin:
            dest_lines[("name",)] = origin
    if not isinstance(dest, dict):
        return dest
    _copy_fields(dest, dest_lines, src, src_lines, DISK_FIELDS)
    return dest


def _fill_mount(dest: Any, dest_lines: LineMap, src: Any, src_lines: LineMap) -> Any:
    if isinstance(dest, dict) and isinstance(src, dict):
        _copy_fields(dest, dest_lines, src, src_lines, MOUNT_FIELDS)
    return dest


def _fill_network(dest: Any, dest_lines: LineMap, src: Any, src_lines: LineMap) -> Any:
    if isinstance(dest, dict) and isinstance(src, dict):
        _copy_fields(dest, dest_lines, src, src_lines, NETWORK_FIELDS)
    return dest


def _combine(
    items: list[Any], path: PathKey, lines: LineMap, key_of: Any, fill: _Fill
) -> tuple[list[Any], LineMap]:
    entries: list[Any] = [_deep_copy(item) for item in items]
    entry_lines: list[LineMap] = [
        sub_lines(lines, (*path, i), item) for i, item in enumerate(items)
    ]
    kept: list[Any] = []
    kept_lines: list[LineMap] = []
    index_of: dict[str, int] = {}
    for entry, rel in zip(entries, entry_lines, strict=True):
        key = key_of(entry)
        if key == "*":
            targets = list(range(len(kept)))
        elif key in index_of:
            targets = [index_of[key]]
        else:
            if key:
                index_of[key] = len(kept)
            kept.append(entry)
            kept_lines.append(rel)
            continue
        for target in targets:
            kept[target] = fill(kept[target], kept_lines[target], entry, rel)
    n = len(path)
    out: LineMap = {p: o for p, o in lines.items() if not (len(p) > n and p[:n] == path)}
    for i, rel in enumerate(kept_lines):
        put_lines(out, (*path, i), rel)
    return kept, out
