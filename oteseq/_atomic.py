"""Crash-safe file writes: a file is either its old version or its complete new one.

``write_bytes`` / ``write_text`` / ``write_json`` write into a temporary file in the target's
folder, flush and ``fsync`` it, ``os.replace`` it over the target and ``fsync`` the folder (so
the rename itself survives a power cut); the temporary file is removed when anything fails.
``sha256_file`` streams a file through SHA-256 (constant memory). ``fsync_dir`` makes a folder's
entries (new files, renames) durable.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 22  # 4 MiB: large enough for full hashing speed, small enough to stream


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of folder ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; renames are durable there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it is synced and renamed over
    ``path`` (then the folder is synced); on an exception it is removed and ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically and durably."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: object, **kwargs) -> None:
    """Replace ``path`` by ``obj`` as JSON (``indent=1``; NaN refused) atomically and durably."""
    text = json.dumps(obj, indent=kwargs.pop("indent", 1), allow_nan=False, **kwargs)
    write_text(path, text + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, streamed in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["fsync_dir", "fsync_file", "replacing", "sha256_file", "write_bytes", "write_json",
           "write_text"]
