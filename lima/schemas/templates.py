"""Reading a lima.yaml and every template it builds on: the first step of `resolve()`.

`lima.schemas.resolve()` calls `load_document(locator)`; the result is one self-contained
document: its `base:` templates merged in (see `merge.py` for the rules) and the `file:`
references of `provision` and `probes` inlined, each value still knowing the file and line
it came from. Pure reads: files, LIMA_TEMPLATES_PATH, $LIMA_HOME/_templates and the
built-in templates; http(s) locators are refused rather than fetched (the spec layer does
no network I/O).

Locators (Lima's): `template:NAME` (also the older `template://NAME`), a file path
(relative to the current directory on the command line, to the including file inside a
template), `file:///abs/path`, `-` for stdin, or an image file (`*.qcow2`, `*.img`, ...),
which stands for a minimal template booting that image.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lima import paths
from lima.errors import Problem, SpecError
from lima.schemas import merge
from lima.schemas.arch import WORDS, host_arch
from lima.schemas.merge import LineMap, Origin
from lima.schemas.yamlload import MAX_BYTES, load_yaml

MAX_DEPTH = 32  # nesting of base templates; real ones nest 2-3 deep

# A locator naming a disk image instead of a template (Lima: qcow2, raw, iso, img,
# optionally compressed); `name_from_locator` strips it to name the instance.
IMAGE_SUFFIX = re.compile(r"\.(img|qcow2|raw|iso)(\.(gz|xz|bz2|zstd))?$")


@dataclass(frozen=True)
class Document:
    """A loaded lima.yaml with its bases merged and its `file:` references inlined."""

    source: str  # how the user named it: "template:default", "examples/tiny.yaml", "-"
    data: dict[str, Any]
    lines: LineMap  # path -> (file, line) of every key and list item


@dataclass(frozen=True)
class _Source:
    """Where a document was read from, and how its relative locators resolve."""

    display: str  # file name used in problems
    key: str  # identity for loop detection
    text: bytes
    # Directory for relative locators: a Path, "template:DIR" or None (stdin).
    relative_to: Path | str | None


def load_document(locator: str, *, stdin: bytes | None = None,
                  embed_templates: bool = True, content: bytes | None = None) -> Document:
    """Read `locator`, embed its bases, inline its scripts. Raises SpecError.

    `embed_templates=False` is `limactl template copy --embed`: `template:` bases and
    scripts stay references (as absolute locators in `base:` / `file:`), and a base that
    is not a template may not follow one, as in Lima.

    `content`: the bytes behind `locator`, read by the caller: an http(s) template the
    command layer fetched, or the new text of a file being edited (not written yet);
    relative locators in it resolve as they would in the file."""
    source = _open(locator, None, None, stdin=stdin) if content is None \
        else _given(locator, content)
    data, lines = _embed(source, {source.key: source.display}, [source.display], stdin,
                         embed_templates)
    data, lines = merge.combine_list_entries(data, lines)
    return Document(source=locator if locator != "-" else "-", data=data, lines=lines)


def _given(locator: str, content: bytes) -> _Source:
    if len(content) > MAX_BYTES:
        raise _fail(f"{locator}: larger than {_LIMIT}", None)
    if re.match(r"^https?://", locator):
        return _Source(locator, locator, content, None)
    absolute = Path(locator).expanduser().absolute()
    return _Source(locator, os.path.normpath(str(absolute)), content, absolute.parent)


# --------------------------------------------------------------------------------------
# locators


def _fail(message: str, where: Origin | None, path: str = "") -> SpecError:
    file, line = where if where else ("", 0)
    return SpecError(Problem(file, line, path, message))


def split_template_name(locator: str) -> str | None:
    """`template:NAME` / `template://NAME` -> NAME; anything else -> None."""
    if not locator.startswith("template:"):
        return None
    name = locator[len("template:") :]
    return name[2:] if name.startswith("//") else name


def template_dirs() -> list[Path]:
    """Where `template:NAME` looks, in order."""
    dirs = [Path(p) for p in os.environ.get("LIMA_TEMPLATES_PATH", "").split(":") if p]
    return [*dirs, paths.templates_dir(), paths.builtin_templates_dir()]


def _template_file_name(name: str) -> str:
    # Lima appends .yaml unless the name already has an extension ("docker.sh"); a
    # "version" suffix like ".04" does not count as one ("ubuntu-24.04").
    ext = os.path.splitext(name)[1]
    if len(ext) < 2 or ext[1].isdigit():
        return name + ".yaml"
    return name


def find_template(name: str, where: Origin | None = None, path: str = "") -> Path:
    """The file behind `template:NAME`, or a SpecError listing every place looked."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/"):
        raise _fail(f"invalid template name {name!r}", where, path)
    rel = _template_file_name("/".join(parts))
    looked: list[str] = []
    for directory in template_dirs():
        candidate = directory / rel
        looked.append(str(directory))
        if candidate.is_file():
            return candidate
    raise _fail(
        f"template {name!r} not found (looked for {rel} in: {', '.join(looked)})", where, path
    )


_LIMIT = f"the {MAX_BYTES // (1024 * 1024)} MiB limit"
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def read_stdin(stream: BinaryIO | None = None) -> bytes:
    """The document behind the locator `-`: at most MAX_BYTES + 1 bytes are read, so an
    endless stdin (`< /dev/zero`) is refused at once instead of filling memory."""
    data = (stream if stream is not None else sys.stdin.buffer).read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SpecError(f"-: stdin is larger than {_LIMIT}; nothing was created")
    return data


def _read_bytes(file: Path, display: str, where: Origin | None, path: str) -> bytes:
    """At most MAX_BYTES of a regular file. Anything else is refused before a byte is read:
    opening a FIFO blocks until someone writes, and a device never ends."""
    try:
        # O_NONBLOCK: the open itself must not wait for a FIFO's writer.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _fail(f"cannot read {display}: {reason}", where, path) from None
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind != stat.S_IFREG:
            what = _KINDS.get(kind, "not a regular file")
            raise _fail(f"cannot read {display}: it is {what}, not a regular file", where, path)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _fail(f"cannot read {display}: {reason}", where, path) from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise _fail(f"{display} is larger than {_LIMIT}", where, path)
    return data


def _absolute(
    locator: str, parent: _Source | None, where: Origin | None, path: str
) -> str:
    """Lima's absPath: make a locator found in `parent` independent of its location."""
    if not locator:
        raise _fail("locator is empty", where, path)
    if locator == "-" or _has_scheme(locator):
        return locator
    if locator.startswith("~"):
        return str(Path(locator).expanduser())
    if locator.startswith("/"):
        return locator
    if parent is None:
        return str(Path.cwd() / locator)
    if parent.relative_to is None:
        raise _fail("can't use relative paths when reading template from STDIN", where, path)
    if "../" in locator or locator == "..":
        raise _fail(
            f"relative locator path {locator!r} must not contain '..' path segments",
            where,
            path,
        )
    if isinstance(parent.relative_to, str):  # "template:DIR"
        joined = os.path.normpath(os.path.join(parent.relative_to[len("template:") :], locator))
        return "template:" + joined
    return str(parent.relative_to / locator)


def _has_scheme(locator: str) -> bool:
    # Single letters are Windows drive names, not schemes.
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):", locator)
    return match is not None


def _open(
    locator: str,
    parent: _Source | None,
    where: Origin | None,
    *,
    stdin: bytes | None,
    path: str = "",
) -> _Source:
    """Read the bytes behind an (already absolute) locator."""
    name = split_template_name(locator)
    if name is not None:
        file = find_template(name, where, path)
        text = _read_bytes(file, str(file), where, path)
        directory = os.path.dirname("/".join(p for p in name.split("/") if p))
        return _Source(str(file), "template:" + name.strip("/"), text, "template:" + directory)
    if re.match(r"^https?://", locator):
        raise _fail(
            f"{locator}: http(s) templates are not fetched by limapy (the spec layer does no "
            "network I/O); download the file and give its path instead",
            where,
            path,
        )
    if locator.startswith("file://"):
        file_path = locator[len("file://") :]
        if not file_path.startswith("/"):
            raise _fail(f"file URL {locator!r} is not an absolute path", where, path)
        locator = file_path
    elif _has_scheme(locator):
        scheme = locator.split(":", 1)[0]
        # Lima >= 2.0 hands unknown schemes to a `limactl-url-SCHEME` plugin program; the
        # spec layer runs no processes, so say what Lima would have needed.
        raise _fail(
            f"{locator}: unsupported locator scheme {scheme!r} (Lima would run a "
            f"limactl-url-{scheme} plugin; limapy has no URL plugins)",
            where,
            path,
        )
    if locator == "-":
        if stdin is None:
            raise _fail("reading a template from stdin ('-') is not possible here", where, path)
        if len(stdin) > MAX_BYTES:
            raise _fail(f"stdin is larger than {_LIMIT}", where, path)
        return _Source("-", "-", stdin, None)
    file = Path(locator).expanduser()
    display = locator if parent is None else str(file)
    if IMAGE_SUFFIX.search(locator):
        return _Source(display, str(file.absolute()), _image_template(locator), None)
    text = _read_bytes(file, display, where, path)
    absolute = file.absolute()
    return _Source(display, os.path.normpath(str(absolute)), text, absolute.parent)


def image_arch(locator: str) -> str:
    """The architecture an image file name suggests, else the host's."""
    for word, arch in WORDS.items():
        if re.search(rf"\b{word}\b", locator):
            return arch
    return host_arch()


def _image_template(locator: str) -> bytes:
    """Lima's image locator: a minimal template that boots the given image file."""
    arch = image_arch(locator)
    location = str(Path(locator).expanduser().absolute()) if "://" not in locator else locator
    return (
        f'arch: "{arch}"\nimages:\n- location: "{location}"\n  arch: "{arch}"\n'
    ).encode()


# --------------------------------------------------------------------------------------
# embedding


def read_locator(locator: str, *, stdin: bytes | None = None) -> tuple[str, bytes, str]:
    """The bytes behind a command-line locator as they are (`template copy --verbatim`),
    with the name to show in problems and the base of its relative locators: a directory,
    `template:DIR`, or "" for stdin. Raises SpecError."""
    source = _open(locator, None, None, stdin=stdin)
    base = source.relative_to
    return source.display, source.text, "" if base is None else str(base)


def absolute_locator(locator: str, base: str, where: Origin | None = None,
                     path: str = "") -> str:
    """`locator`, found in a document whose relative locators start at `base` (as
    `read_locator` returns it), made independent of that document (Lima's absPath)."""
    relative_to: Path | str | None = None
    if base.startswith("template:"):
        relative_to = base
    elif base:
        relative_to = Path(base)
    parent = _Source("", "", b"", relative_to)
    return _absolute(locator, parent, where, path)


def _embed(
    source: _Source, seen: dict[str, str], chain: list[str], stdin: bytes | None,
    embed_templates: bool = True,
) -> tuple[dict[str, Any], LineMap]:
    loaded = load_yaml(source.text, source.display)
    if not isinstance(loaded.data, dict):
        raise _fail("the document must be a mapping", (source.display, 1))
    data: dict[str, Any] = loaded.data
    lines: LineMap = {p: (source.display, line) for p, line in loaded.lines.items()}
    bases = _base_locators(data, lines, source)
    if "base" in data:
        data = {k: v for k, v in data.items() if k != "base"}
        lines = {p: o for p, o in lines.items() if not (p and p[0] == "base")}
    data, lines = _inline_files(data, lines, source, embed_templates)
    if len(chain) > MAX_DEPTH:
        raise _fail(f"base templates nest deeper than {MAX_DEPTH} levels", (source.display, 0))
    pending = list(bases)
    while pending:
        locator, where, path = pending.pop(0)
        if not embed_templates and split_template_name(locator) is not None:
            for other, other_where, other_path in pending:
                if split_template_name(other) is None:
                    raise _fail(f"cannot embed template {other!r} after not embedding "
                                f"{locator!r}", other_where, other_path)
            data = {"base": [locator, *(other for other, _, _ in pending)], **data}
            break
        base_source = _open(locator, source, where, stdin=stdin, path=path)
        if base_source.key in seen:
            trail = " -> ".join([*chain, base_source.display])
            raise _fail(
                f"base template loop detected: {locator!r} is already included ({trail})",
                where,
                path,
            )
        seen[base_source.key] = base_source.display
        base_data, base_lines = _embed(base_source, seen, [*chain, base_source.display], stdin,
                                       embed_templates)
        # The base's own template: bases it kept come before the remaining ones (Lima).
        kept = base_data.get("base") or []
        pending = [(k, where, path) for k in kept] + pending
        data, lines = merge.merge_base(data, lines, base_data, base_lines)
    return data, lines


def _base_locators(
    data: dict[str, Any], lines: LineMap, source: _Source
) -> list[tuple[str, Origin | None, str]]:
    """The absolute locators of `base:` (a string, a {url, digest} map, or a list of them)."""
    raw = data.get("base")
    if raw is None:
        return []
    entries: list[tuple[Any, tuple[str | int, ...]]]
    if isinstance(raw, list):
        entries = [(item, ("base", i)) for i, item in enumerate(raw)]
    else:
        entries = [(raw, ("base",))]
    out: list[tuple[str, Origin | None, str]] = []
    for item, key in entries:
        where = lines.get(key) or lines.get(("base",))
        path = ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in key).replace(".[", "[")
        if isinstance(item, dict):
            url = item.get("url")
            if item.get("digest") is not None:
                raise _fail(
                    f"base {url!r} has a digest; digest support is not implemented yet "
                    "(as in Lima)",
                    where,
                    path,
                )
            item = url
        if not isinstance(item, str):
            raise _fail("base must be a locator string or a {url: ...} map", where, path)
        out.append((_absolute(item, source, where, path), where, path))
    return out


def _inline_files(
    data: dict[str, Any], lines: LineMap, source: _Source, embed_templates: bool = True
) -> tuple[dict[str, Any], LineMap]:
    """Replace `file:` in provision/probes entries by the file's text (Lima's
    embedAllScripts), read relative to the document that holds the reference; a
    `template:` reference only with `embed_templates` (else made absolute)."""
    for section in ("probes", "provision"):
        entries = data.get(section)
        if not isinstance(entries, list):
            continue
        new_entries = list(entries)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("file") is None:
                continue
            mode = entry.get("mode")
            target = "script"
            if section == "provision" and mode == "data":
                target = "content"
            elif section == "provision" and mode == "yq":
                target = "expression"
            if target == "script" and entry.get("script"):
                continue  # both given: validation reports it
            if target != "script" and entry.get(target) is not None:
                continue
            key = (section, index, "file")
            where = lines.get(key)
            path = f"{section}[{index}].file"
            ref = entry["file"]
            digest = None
            if isinstance(ref, dict):
                digest = ref.get("digest")
                ref = ref.get("url")
            if not isinstance(ref, str):
                raise _fail("file must be a locator string or a {url: ...} map", where, path)
            absolute = _absolute(ref, source, where, path)
            if not embed_templates and split_template_name(absolute) is not None:
                kept = {**entry, "file": ({**entry["file"], "url": absolute}
                                          if isinstance(entry["file"], dict) else absolute)}
                new_entries[index] = kept
                continue
            text = _read_script(absolute, source, where, path)
            if digest is not None:
                _check_digest(text, digest, where, path)
            try:
                decoded = text.decode("utf-8")
            except UnicodeDecodeError:
                raise _fail(f"{ref}: is not UTF-8 text", where, path) from None
            new_entry = {(target if k == "file" else k): v for k, v in entry.items()}
            new_entry[target] = decoded
            new_entries[index] = new_entry
            for p in [p for p in lines if p[:3] == key]:
                del lines[p]
            if where:
                lines[(section, index, target)] = where
        data = {**data, section: new_entries}
    return data, lines


def _read_script(locator: str, parent: _Source, where: Origin | None, path: str) -> bytes:
    if locator == "-":
        raise _fail("a file reference cannot be '-'", where, path)
    source = _open(locator, parent, where, stdin=None, path=path)
    return source.text


def _check_digest(text: bytes, digest: Any, where: Origin | None, path: str) -> None:
    import hashlib  # deferred: OpenSSL's hashlib costs ~3 ms of start-up

    if not isinstance(digest, str) or ":" not in digest:
        raise _fail(f"invalid digest {digest!r} (expected ALGO:HEX)", where, path)
    algo, expected = digest.split(":", 1)
    if algo not in ("sha256", "sha512"):
        raise _fail(f"unsupported digest algorithm {algo!r}", where, path)
    actual = hashlib.new(algo, text).hexdigest()
    if actual != expected.lower():
        raise _fail(f"digest mismatch: expected {digest}, got {algo}:{actual}", where, path)
