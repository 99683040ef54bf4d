"""Atomic file writes: every file superres writes appears whole or not at all.

The content goes to a temporary file beside the destination (same folder, so the same file
system), is flushed to disk, then renamed over the destination with `os.replace`. Readers see the
old file or the complete new one; on any failure the temporary file is removed and the old file
is left as it was. The temporary file is created with `os.open` and the user's umask, not with
`tempfile.mkstemp`, whose 0600 mode the renamed file would keep.

A process killed outright (SIGKILL, power loss) cannot remove its temporary file, so the name
carries the writer's process id: `remove_stale_temporaries` deletes those whose writer is gone.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

#: `<pid>-<random>` after `.NAME.tmp-`; names without a pid come from older versions.
_TEMPORARY_SUFFIX = re.compile(r"^(?:(?P<pid>[0-9]+)-)?[0-9a-f]{8}$")


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _create_temporary_beside(path: Path) -> tuple[Path, BinaryIO]:
    for _ in range(100):
        temporary = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return temporary, os.fdopen(descriptor, "wb")
    raise FileExistsError(f"no free temporary file name beside {path}")


def atomic_write(
    path: str | os.PathLike[str], write_to: Callable[[BinaryIO], object], *, replace: bool = True
) -> None:
    """Run `write_to` on a temporary file beside `path`, then rename it over `path`.

    The destination's folder must exist; errors (OSError and whatever `write_to` raises) propagate
    after the temporary file is removed. `replace=False`: never over an existing file, even one
    that appeared while `write_to` ran (another process writing the same name): the temporary is
    hard-linked to `path`, which the file system refuses atomically if the name exists, and
    FileExistsError is raised.
    """
    path = Path(path)
    temporary, stream = _create_temporary_beside(path)
    try:
        with stream:
            write_to(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            _link_no_clobber(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _link_no_clobber(temporary: Path, path: Path) -> None:
    """Give `temporary` the name `path` unless that name exists (FileExistsError)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a narrow race remains)
        if path.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        os.replace(temporary, path)
        return
    temporary.unlink()


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process, or we cannot tell: keep its file
    return True


def remove_stale_temporaries(path: str | os.PathLike[str], *, including_own: bool = False) -> int:
    """Delete the temporary files a killed writer of `path` left beside it; returns how many.

    Only files named by `atomic_write` for this very `path` are considered, and only those whose
    writing process no longer runs (or, for names without a process id, that are an hour old).
    `including_own`: this process's too (it is stopping while another thread writes `path`).
    """
    import time

    path = Path(path)
    prefix = _temporary_prefix(path)
    removed = 0
    try:
        candidates = [entry for entry in path.parent.iterdir() if entry.name.startswith(prefix)]
    except OSError:
        return 0  # no folder yet, or unreadable: nothing we could clean
    for entry in candidates:
        match = _TEMPORARY_SUFFIX.match(entry.name[len(prefix) :])
        if match is None:
            continue
        try:
            if match["pid"] is not None:
                pid = int(match["pid"])
                stale = (including_own and pid == os.getpid()) or (
                    pid != os.getpid() and not _process_is_alive(pid)
                )
            else:
                stale = time.time() - entry.stat().st_mtime > 3600
            if stale:
                entry.unlink()
                removed += 1
        except OSError:
            continue
    if removed:
        logger.info("removed %d stale temporary file(s) of %s", removed, path)
    return removed


def describe_os_error(error: OSError) -> str:
    """An OSError's reason without its file name, which may be the hidden temporary file."""
    return error.strerror or str(error)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically, creating the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: stream.write(data))
