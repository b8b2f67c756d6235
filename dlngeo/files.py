"""Files written whole: :func:`atomic_write` (a temporary sibling, then ``os.replace``)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all; return the path.

    The bytes go to a fresh temporary sibling (created with mode ``0o666``,
    so the umask applies as for an ordinary ``open``), are flushed to disk,
    and the sibling is renamed over ``path`` (``os.replace``, atomic on
    POSIX and Windows). A crash or a kill leaves either the old file or the
    new one, never a mixture; no other file is touched.
    """
    path = Path(path)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
