"""The download cache: remote files fetched once, digest-checked, shared by all instances.

`lima.drivers.images.disks` calls `download()` for every remote image, kernel and
initrd; `lima.commands.prune` calls `cache_entries()` / `prune()`. The layout is
Lima's own, so limactl and limapy can share one cache:

    download_dir()/<sha256 hex of the URL>/
        url            the URL, no trailing newline
        data           the bytes as served (a compressed image stays compressed)
        sha256.digest  "sha256:<hex>" of data; likewise sha512.digest
        time           Last-Modified of the response that produced data
        type           its Content-Type

One writer per entry: the entry directory itself is flock()ed, as Lima's lockutil
does, so a concurrent limactl also waits. Bytes land in `data.tmp` and are renamed to
`data` only once complete and verified, so `data` is never partial. `data` is read-only
and instances get copies of it; still, a cache hit re-hashes it against the digest
recorded when it was downloaded (as Lima re-hashes a cached file when a digest is
given), and data that no longer matches is downloaded again instead of used.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import functools
import hashlib
import http.client
import logging
import os
import queue
import shutil
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lima import __version__, paths
from lima.drivers.images import progress
from lima.errors import LimaError, PermanentError, TemporaryError
from lima.fsutil import atomic_write

log = logging.getLogger(__name__)

DATA = "data"
URL = "url"
TIME = "time"
TYPE = "type"
TMP_SUFFIX = ".tmp"

# Algorithms accepted in `digest:` (what Lima's go-digest accepts) with their hex length.
ALGORITHMS: Mapping[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
# Always computed while streaming, so later requests with either digest need no re-hash.
STREAM_ALGORITHMS = ("sha256", "sha512")
CHUNK = 1 << 20
# Failures of our own disk (the user must act), unlike a network error mid-transfer.
_LOCAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                 errno.EPERM})
# How long a failed transfer should wait before the reconciler retries it.
RETRY_DELAY = 10.0


@dataclass(frozen=True)
class Timeouts:
    """`connect`: to open the connection; `read`: the longest silence of a transfer."""

    connect: float = 30.0
    read: float = 60.0

    @classmethod
    def from_env(cls) -> Timeouts:
        """Defaults, overridable by LIMA_DOWNLOAD_CONNECT_TIMEOUT / LIMA_DOWNLOAD_READ_TIMEOUT."""
        def get(name: str, default: float) -> float:
            value = os.environ.get(name, "")
            try:
                return float(value) if value else default
            except ValueError:
                log.warning("ignoring %s=%r: not a number", name, value)
                return default

        return cls(get("LIMA_DOWNLOAD_CONNECT_TIMEOUT", cls.connect),
                   get("LIMA_DOWNLOAD_READ_TIMEOUT", cls.read))


@dataclass(frozen=True)
class Fetched:
    """A remote file available in the cache."""

    path: Path  # the entry's `data`
    status: str  # "downloaded" | "used-cache"
    digests: Mapping[str, str] = field(default_factory=dict)  # algo -> "algo:hex"
    last_modified: str = ""
    content_type: str = ""


# ---------------------------------------------------------------- names and digests

def cache_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def entry_dir(url: str) -> Path:
    return paths.download_dir() / cache_key(url)


def is_local(location: str) -> bool:
    """Lima's rule: no scheme at all, or file://."""
    return "://" not in location or location.startswith("file://")


def local_path(location: str) -> Path:
    """The file a local location names: `file:///abs` or a path (`~` expanded)."""
    if location.startswith("file://"):
        parsed = urllib.parse.urlparse(location)
        path = urllib.parse.unquote(parsed.path)
        if parsed.netloc not in ("", "localhost") or not path.startswith("/"):
            raise PermanentError(f"{location}: a file:// URL must hold an absolute path")
        return Path(path)
    return Path(location).expanduser().absolute()


def parse_digest(digest: str) -> tuple[str, str]:
    """`sha256:<hex>` -> ("sha256", "<hex>"), lower-cased; PermanentError when malformed."""
    algo, sep, hexd = digest.strip().partition(":")
    algo, hexd = algo.lower(), hexd.lower()
    if not sep or algo not in ALGORITHMS:
        raise PermanentError(f"digest {digest!r}: expected ALGO:HEX with ALGO one of "
                             f"{', '.join(ALGORITHMS)}")
    if len(hexd) != ALGORITHMS[algo] or any(c not in "0123456789abcdef" for c in hexd):
        raise PermanentError(f"digest {digest!r}: {algo} needs {ALGORITHMS[algo]} hex digits")
    return algo, hexd


def _hashers(extra: str | None) -> dict[str, Any]:
    names = list(STREAM_ALGORITHMS)
    if extra and extra not in names:
        names.append(extra)
    return {name: hashlib.new(name) for name in names}


def hash_file(path: Path, algorithms: Collection[str]) -> dict[str, str]:
    """One pass over `path`: {algo: "algo:hex"}."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with path.open("rb") as f:
        while n := f.readinto(view):
            for h in hashers.values():
                h.update(view[:n])
    return {name: f"{name}:{h.hexdigest()}" for name, h in hashers.items()}


def check_digest(location: str, expected: str, actual: Mapping[str, str]) -> None:
    """PermanentError naming both digests unless `actual` holds `expected`."""
    algo, hexd = parse_digest(expected)
    want = f"{algo}:{hexd}"
    got = actual.get(algo, "")
    if got != want:
        raise PermanentError(f"{location}: digest mismatch: expected {want}, got {got}")


def copy_verified(src: Path, dst: Path, *, digest: str | None, description: str) -> None:
    """Copy `src` to `dst` (a file the caller renames into place), hashing on the way."""
    algo = parse_digest(digest)[0] if digest else None
    hashers = _hashers(algo) if algo else {}
    try:
        total = src.stat().st_size
    except OSError as exc:
        raise PermanentError(f"{description}: {exc.strerror or exc}") from exc
    bar = progress.start("Copying", description, total)
    ok = False
    try:
        with src.open("rb") as fin, dst.open("wb") as fout:
            _pump(fin.readinto, fout, hashers, bar)
        ok = True
    finally:
        bar.close(ok)
    if digest:
        check_digest(description, digest,
                     {name: f"{name}:{h.hexdigest()}" for name, h in hashers.items()})


def _pump(readinto: Callable[[memoryview], int | None], out: BinaryIO,
          hashers: Mapping[str, Any], bar: progress.Progress) -> int:
    """Move bytes from `readinto` to `out`, hashing them; returns the byte count.

    Each hash runs in its own thread (hashlib drops the GIL on large buffers): hashing
    sha256 + sha512 serially would cost more than the transfer itself.
    """
    workers = [_HashWorker(h) for h in hashers.values()]
    total = 0
    try:
        while True:
            buf = bytearray(CHUNK)  # fresh each time: the workers may still read the last one
            n = readinto(memoryview(buf))
            if not n:
                break
            chunk = memoryview(buf)[:n]
            out.write(chunk)
            for w in workers:
                w.feed(chunk)
            total += n
            bar.advance(n)
    finally:
        for w in workers:
            w.finish()
    return total


class _HashWorker:
    """Feeds one hash object from a bounded queue in a thread (bounded: memory stays small)."""

    def __init__(self, hasher: Any) -> None:
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, args=(hasher,), daemon=True)
        self._thread.start()

    def _run(self, hasher: Any) -> None:
        while (chunk := self._queue.get()) is not None:
            hasher.update(chunk)

    def feed(self, chunk: memoryview) -> None:
        self._queue.put(chunk)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()


# ---------------------------------------------------------------- small file helpers

def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def _forget(entry: Path) -> None:
    """Drop what an entry knows about its data (data first: never data without facts)."""
    names = [DATA, TIME, TYPE, *(f"{a}.digest" for a in ALGORITHMS)]
    for name in names:
        (entry / name).unlink(missing_ok=True)


def _digests(entry: Path) -> dict[str, str]:
    found = {}
    for algo in ALGORITHMS:
        text = _read_text(entry / f"{algo}.digest")
        if text:
            found[algo] = text
    return found


# ---------------------------------------------------------------- locking

@contextlib.contextmanager
def _locked(entry: Path, what: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the entry's flock; yields False (without waiting) when busy and not `wait`."""
    while True:
        entry.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log.info("waiting for another process fetching %s", what)
                fcntl.flock(fd, fcntl.LOCK_EX)
            # `prune` may have removed the directory while we waited: lock the new one.
            try:
                st = os.stat(entry)
                same = (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                same = False
            if same:
                yield True
                return
        finally:
            os.close(fd)


# ---------------------------------------------------------------- HTTP

class _HTTPConnection(http.client.HTTPConnection):
    """Connects within the request timeout, then waits at most `read_timeout` per read."""

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        conn = functools.partial(_HTTPConnection, read_timeout=self._read_timeout)
        return self.do_open(conn, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__(context=ssl.create_default_context())
        self._read_timeout = read_timeout

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        conn = functools.partial(_HTTPSConnection, read_timeout=self._read_timeout)
        return self.do_open(conn, req, context=self._context)  # type: ignore[attr-defined]


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """urllib turns a redirected HEAD into a GET; a revalidation must stay a HEAD."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


def _is_loopback(url: str) -> bool:
    host = (urllib.parse.urlparse(url).hostname or "").lower()
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _open(url: str, method: str, timeouts: Timeouts) -> http.client.HTTPResponse:
    """Open `url` (redirects and *_proxy variables honoured); errors become LimaErrors."""
    handlers: list[urllib.request.BaseHandler] = [
        _HTTPHandler(timeouts.read), _HTTPSHandler(timeouts.read), _RedirectHandler()]
    if _is_loopback(url):
        # As Go's ProxyFromEnvironment: a proxy cannot reach this machine's loopback.
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, method=method,
                                 headers={"User-Agent": f"limapy/{__version__}"})
    try:
        resp: http.client.HTTPResponse = opener.open(req, timeout=timeouts.connect)
        return resp
    except urllib.error.HTTPError as exc:
        exc.close()
        msg = f"{url}: HTTP {exc.code} {exc.reason}"
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise TemporaryError(msg, RETRY_DELAY) from None
        raise PermanentError(msg) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise TemporaryError(f"{url}: no connection within {timeouts.connect:g} s",
                                 RETRY_DELAY) from None
        if isinstance(reason, str) and "unknown url type" in reason:
            raise PermanentError(f"{url}: unsupported URL scheme") from None
        raise TemporaryError(f"{url}: {reason}", RETRY_DELAY) from None
    except TimeoutError:
        raise TemporaryError(f"{url}: no response within {timeouts.read:g} s",
                             RETRY_DELAY) from None
    except (OSError, http.client.HTTPException) as exc:
        raise TemporaryError(f"{url}: {exc}", RETRY_DELAY) from None
    except ValueError as exc:  # urllib's "unknown url type" for malformed URLs
        raise PermanentError(f"{url}: {exc}") from None


def fetch_small(url: str, limit: int) -> bytes:
    """GET `url` in full, no cache (a template for `limactl create|start URL`); at most
    `limit` bytes, else a LimaError naming the limit."""
    resp = _open(url, "GET", Timeouts.from_env())
    with resp:
        data = resp.read(limit + 1)
    if len(data) > limit:
        raise PermanentError(f"{url}: larger than {limit // (1024 * 1024)} MiB; nothing was "
                             "created")
    return data


def _same_time(cached: str, remote: str) -> bool:
    """Compare two Last-Modified values as times when both parse, else as strings."""
    try:
        return email.utils.parsedate_to_datetime(cached) == \
            email.utils.parsedate_to_datetime(remote)
    except (TypeError, ValueError):
        return cached == remote


# ---------------------------------------------------------------- the cache

def download(url: str, *, digest: str | None = None, description: str | None = None,
             timeouts: Timeouts | None = None) -> Fetched:
    """Make `url` available in the cache and return its entry.

    With `digest`, cached data is used when its recorded digest matches; otherwise
    (no digest) when the server's Last-Modified still equals the cached one. A
    download whose digest differs is deleted and raises PermanentError; network
    trouble raises TemporaryError. Never leaves a partial `data`.
    """
    expected = parse_digest(digest) if digest else None
    timeouts = timeouts or Timeouts.from_env()
    entry = entry_dir(url)
    with _locked(entry, url):
        hit = _cached(url, entry, expected, timeouts)
        if hit is not None:
            log.debug("%s: using the cached %s", url, hit.path)
            return hit
        return _fetch(url, entry, expected, description or url, timeouts)


def _cached(url: str, entry: Path, expected: tuple[str, str] | None,
            timeouts: Timeouts) -> Fetched | None:
    data = entry / DATA
    if not data.is_file():
        return None
    hit = Fetched(data, "used-cache", _digests(entry), _read_text(entry / TIME),
                  _read_text(entry / TYPE))
    # One pass over data: the algorithm asked for, and one recorded at download time to
    # prove the bytes are still the ones downloaded.
    check = expected[0] if expected and expected[0] in hit.digests else \
        next(iter(sorted(hit.digests)), None)
    algos = {a for a in (check, expected[0] if expected else None) if a}
    actual = hash_file(data, algos) if algos else {}
    if check is not None and actual[check] != hit.digests[check]:
        log.warning("%s: the cached %s has %s, not the %s recorded when it was downloaded "
                    "(changed since): downloading again", url, data, actual[check],
                    hit.digests[check])
        _forget(entry)
        return None
    if expected is not None:
        algo, hexd = expected
        want = f"{algo}:{hexd}"
        recorded = hit.digests.get(algo, "")
        if not recorded:
            # Written by a tool that did not record this algorithm: record it now.
            recorded = actual[algo]
            _write_text(entry / f"{algo}.digest", recorded)
            hit = Fetched(data, hit.status, _digests(entry), hit.last_modified,
                          hit.content_type)
        if recorded == want:
            return hit
        log.info("%s: the cached data has %s, not %s: downloading again", url, recorded, want)
        return None
    if not hit.last_modified:
        log.info("%s: cached without Last-Modified and no digest given: downloading again", url)
        return None
    try:
        with _open(url, "HEAD", timeouts) as resp:
            remote = resp.headers.get("Last-Modified", "")
    except LimaError as exc:
        # As Lima does: an unreachable server should not make a good cache unusable.
        log.info("could not revalidate %s (%s): using the cached copy", url, exc)
        return hit
    if remote and _same_time(hit.last_modified, remote):
        return hit
    log.info("%s: Last-Modified changed (cached %r, server %r): downloading again",
             url, hit.last_modified, remote or "<none>")
    return None


def _fetch(url: str, entry: Path, expected: tuple[str, str] | None, description: str,
           timeouts: Timeouts) -> Fetched:
    tmp = entry / (DATA + TMP_SUFFIX)
    tmp.unlink(missing_ok=True)
    _write_text(entry / URL, url)
    hashers = _hashers(expected[0] if expected else None)
    try:
        with _open(url, "GET", timeouts) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            last_modified = resp.headers.get("Last-Modified", "")
            content_type = resp.headers.get("Content-Type", "")
            bar = progress.start("Downloading", description, total)
            ok = False
            try:
                with tmp.open("wb") as out:
                    received = _pump(resp.readinto, out, hashers, bar)
                    if total is not None and received != total:
                        raise TemporaryError(
                            f"{url}: transfer cut short: got {received} of {total} bytes",
                            RETRY_DELAY)
                    out.flush()
                    os.fsync(out.fileno())
                ok = True
            finally:
                bar.close(ok)
    except TimeoutError:
        tmp.unlink(missing_ok=True)
        raise TemporaryError(f"{url}: transfer stalled (no data for {timeouts.read:g} s)",
                             RETRY_DELAY) from None
    except (OSError, http.client.HTTPException) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _LOCAL_WRITE_ERRORS:
            raise PermanentError(f"{url}: cannot write {tmp}: {exc.strerror}") from None
        raise TemporaryError(f"{url}: transfer failed: {exc!r}", RETRY_DELAY) from None
    except BaseException:  # KeyboardInterrupt included: never leave partial bytes
        tmp.unlink(missing_ok=True)
        raise
    digests = {name: f"{name}:{h.hexdigest()}" for name, h in hashers.items()}
    if expected is not None:
        try:
            check_digest(url, f"{expected[0]}:{expected[1]}", digests)
        except PermanentError:
            tmp.unlink(missing_ok=True)
            _forget(entry)
            raise
    # Facts of the old data go first, so a crash in between leaves data without facts
    # (revalidated or re-hashed next time), never facts that lie about data.
    _forget(entry)
    tmp.chmod(0o444)  # instances get copies; this keeps a non-root writer off it too
    os.replace(tmp, entry / DATA)
    for name, value in digests.items():
        _write_text(entry / f"{name}.digest", value)
    _write_text(entry / TIME, last_modified)
    _write_text(entry / TYPE, content_type)
    return Fetched(entry / DATA, "downloaded", digests, last_modified, content_type)


def cache_entries() -> dict[str, Path]:
    """{cache key: entry directory} for every entry in the download cache."""
    root = paths.download_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}


def prune(keep: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """Delete every cache entry whose key is not in `keep`: (removed keys, busy keys).

    An entry another process is downloading right now is left alone (busy).
    """
    removed: list[str] = []
    busy: list[str] = []
    for key, entry in cache_entries().items():
        if key in keep:
            continue
        with _locked(entry, key, wait=False) as got:
            if not got:
                busy.append(key)
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(key)
    root = paths.download_dir()
    if not keep and not busy and root.is_dir():
        for stray in root.iterdir():  # files that are not entries: nothing refers to them
            if not stray.is_dir():
                stray.unlink(missing_ok=True)
    return removed, busy
