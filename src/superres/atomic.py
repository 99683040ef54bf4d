"""Atomic file writes: every file superres writes appears whole or not at all.

The content goes to a temporary file beside the destination (same folder, so the same file
system), is flushed to disk, then renamed over the destination with `os.replace`. Readers see the
old file or the complete new one; on any failure the temporary file is removed and the old file
is left as it was. The temporary file is created with `os.open` and the user's umask, not with
`tempfile.mkstemp`, whose 0600 mode the renamed file would keep.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _create_temporary_beside(path: Path) -> tuple[Path, BinaryIO]:
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return temporary, os.fdopen(descriptor, "wb")
    raise FileExistsError(f"no free temporary file name beside {path}")


def atomic_write(path: str | os.PathLike[str], write_to: Callable[[BinaryIO], object]) -> None:
    """Run `write_to` on a temporary file beside `path`, then rename it over `path`.

    The destination's folder must exist; errors (OSError and whatever `write_to` raises) propagate
    after the temporary file is removed.
    """
    path = Path(path)
    temporary, stream = _create_temporary_beside(path)
    try:
        with stream:
            write_to(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically, creating the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: stream.write(data))
