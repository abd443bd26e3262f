"""Atomic file writes: write a temporary file beside the target, then rename it into place.

A reader never sees a half-written file, and a failure leaves no file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp(directory: Path, name: str) -> tuple[int, Path]:
    """A new hidden temporary file for `name` in `directory` with the permissions a plain
    open() would give (mkstemp's are owner-only). Returns (fd, path)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~umask())
    return fd, Path(tmp)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    fd, tmp = make_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
