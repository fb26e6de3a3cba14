"""The download cache: one folder, atomic downloads, clear errors when offline.

Files live under ``$OTESEQ_DATA`` (default ``~/.cache/oteseq/data``). A file is downloaded at
most once: into a temporary file in the same folder, checked, then renamed into place, so a
failed or partial download never replaces (or masquerades as) a good file. Set
``OTESEQ_OFFLINE=1`` to forbid downloads altogether.

Integrity: a file whose SHA-256 is pinned (``fetch(..., sha256=)`` or :data:`PINNED`) is
checked before it lands and whenever it is first read in a process. A file with no pin gets
its digest recorded beside it at download (``<name>.sha256``, trust on first use) and is
checked against that record afterwards, so a file changed on disk is caught; copy the digest
into :data:`PINNED` to pin it for everyone.
"""
from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .._atomic import replacing, sha256_file, write_text
from ..errors import ChecksumError, OfflineError

DEFAULT_DIR = Path("~/.cache/oteseq/data")
# SHA-256 of the published files, by cache name. Empty: this project's machines have no network,
# so no digest of the real files could be taken here; a digest recorded at a user's first
# download (``<name>.sha256``) is what to copy in.
PINNED: dict[str, str] = {}
_VERIFIED: set[tuple[str, int, int]] = set()   # (path, size, mtime_ns) checked this process
TOY_HINT = "or work offline with the toy world: oteseq.toy.counterfact(n) / oteseq.toy.zsre(n)"


def data_dir() -> Path:
    """The cache folder: ``$OTESEQ_DATA`` if set, else ``~/.cache/oteseq/data``."""
    return Path(os.environ.get("OTESEQ_DATA") or DEFAULT_DIR).expanduser()


def offline_message(url: str, path: Path, reason: str, hint: str = TOY_HINT) -> str:
    """What to download from where, and where to put it."""
    return (f"cannot download {url} ({reason}). Download that file yourself and save it as "
            f"{path} (set OTESEQ_DATA to use another folder), {hint}.")


def _download(url: str, target: Path, timeout: float) -> None:
    """Stream ``url`` into ``target``; raise on a short read when the length is known."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
        expected = response.headers.get("Content-Length") if response.headers else None
    if expected is not None and target.stat().st_size != int(expected):
        raise OSError(f"truncated download: {target.stat().st_size} of {expected} bytes")


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _expected(name: str, path: Path, sha256: str | None) -> tuple[str | None, str]:
    """The digest ``path`` must have and where it comes from (pin, record, or none)."""
    if sha256 or name in PINNED:
        return (sha256 or PINNED[name]).lower(), "pinned"
    record = _record(path)
    if record.is_file():
        return record.read_text().split()[0].lower(), f"recorded in {record}"
    return None, ""


def _verify(path: Path, expected: str | None, source: str, url: str, fresh: bool) -> str:
    """Check ``path`` against ``expected`` (once per process for a cached file); its digest."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if not fresh and (expected is None or key in _VERIFIED):
        return expected or ""
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        fix = ("nothing was saved; the file at the URL is not the one pinned: retry, and if it "
               "changed on purpose pass the new sha256= (or update oteseq.data.cache.PINNED, or "
               "delete the .sha256 record beside the file)"
               if fresh else f"the cached file changed on disk: delete {path} (and its "
               f".sha256 record) to download it again")
        raise ChecksumError(f"{url}: SHA-256 {digest} is not the {expected} {source}; {fix}")
    _VERIFIED.add(key)
    return digest


def fetch(name: str, url: str, *, check: Callable[[Path], None] | None = None,
          sha256: str | None = None, timeout: float = 60.0, hint: str = TOY_HINT) -> Path:
    """The cached file ``name`` (a path relative to :func:`data_dir`), downloaded if missing.

    ``check(path)`` validates a file (raising on bad content); a fresh download is checked,
    and its SHA-256 compared with ``sha256`` (or :data:`PINNED`), before it is moved into
    place. Raises :class:`~oteseq.errors.OfflineError` when the file is missing and cannot be
    downloaded, :class:`~oteseq.errors.ChecksumError` when its digest is not the expected one.
    """
    path = data_dir() / name
    expected, source = _expected(name, path, sha256)
    if path.exists():
        _verify(path, expected, source, url, fresh=False)
        return path
    if os.environ.get("OTESEQ_OFFLINE"):
        raise OfflineError(offline_message(url, path, "OTESEQ_OFFLINE is set", hint))
    with replacing(path) as tmp:
        try:
            _download(url, tmp, timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OfflineError(offline_message(url, path, str(exc), hint)) from exc
        digest = _verify(tmp, expected, source or "pinned", url, fresh=True)
        if check is not None:
            check(tmp)
    write_text(_record(path), f"{digest}  {path.name}\n")
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``oteseq._atomic.write_text``)."""
    write_text(path, text)


__all__ = ["PINNED", "data_dir", "fetch", "offline_message", "write_atomic"]
