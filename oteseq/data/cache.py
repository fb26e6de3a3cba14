"""The download cache: one folder, atomic downloads, clear errors when offline.

Files live under ``$OTESEQ_DATA`` (default ``~/.cache/oteseq/data``). A file is downloaded at
most once: into a temporary file in the same folder, checked, then renamed into place, so a
failed or partial download never replaces (or masquerades as) a good file. Set
``OTESEQ_OFFLINE=1`` to forbid downloads altogether.
"""
from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .._atomic import replacing, write_text
from ..errors import OfflineError

DEFAULT_DIR = Path("~/.cache/oteseq/data")
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


def fetch(name: str, url: str, *, check: Callable[[Path], None] | None = None,
          timeout: float = 60.0, hint: str = TOY_HINT) -> Path:
    """The cached file ``name`` (a path relative to :func:`data_dir`), downloaded if missing.

    ``check(path)`` validates a file (raising on bad content); a fresh download is checked
    before it is moved into place. Raises :class:`~oteseq.errors.OfflineError` when the file is
    missing and cannot be downloaded.
    """
    path = data_dir() / name
    if path.exists():
        return path
    if os.environ.get("OTESEQ_OFFLINE"):
        raise OfflineError(offline_message(url, path, "OTESEQ_OFFLINE is set", hint))
    with replacing(path) as tmp:
        try:
            _download(url, tmp, timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OfflineError(offline_message(url, path, str(exc), hint)) from exc
        if check is not None:
            check(tmp)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``oteseq._atomic.write_text``)."""
    write_text(path, text)


__all__ = ["data_dir", "fetch", "offline_message", "write_atomic"]
