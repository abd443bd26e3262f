"""Files: atomic writes (a temporary file beside the target, renamed into place) and checksums.

A reader never sees a half-written file, and a failure leaves no file under the final name.
"""

from __future__ import annotations

import hashlib
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
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, directory / name) from err
    os.fchmod(fd, 0o666 & ~umask())
    return fd, Path(tmp)


def _naming(err: OSError, path: Path) -> OSError:
    """`err` naming the file the user asked for, not the temporary one."""
    return type(err)(err.errno, err.strerror, str(path))


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    fd, tmp = make_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _naming(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
