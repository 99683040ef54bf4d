"""One training process per run folder: an advisory lock file, `RUN_DIR/.lock`.

Two `superres train` processes writing one run folder interleave its history and leave the config
of one beside the weights of the other, so the second to start is refused, with one line naming
the holder. The lock is an `flock` on the file: the kernel drops it when its holder exits however
it exits (even SIGKILL), so a dead process never leaves the folder stuck; the file itself only
tells who holds it and is removed on a clean exit, with the folder if the run left it empty.
Where `fcntl` does not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from superres.errors import ConfigError

LOCK_FILENAME = ".lock"


def _holder_description(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextmanager
def hold_run_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold RUN_DIR's lock while the block runs (creating RUN_DIR); ConfigError if it is held."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unlocked rather than not at all
        yield
        return
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_FILENAME
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ConfigError(
                f"{run_dir} is in use by {_holder_description(lock_path)}; wait for that run to "
                "end or choose another run folder"
            ) from None
        # The previous holder may have removed the file between our open and our lock: then we
        # hold a lock on a name nobody else sees, and must take the new file's instead.
        try:
            same_file = os.fstat(descriptor).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(descriptor)
    holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    os.ftruncate(descriptor, 0)
    os.write(descriptor, holder.encode("utf-8"))
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while still locked, so no one takes a dying file
        os.close(descriptor)
        if created:
            with contextlib.suppress(OSError):  # a run that could not start leaves no folder
                run_dir.rmdir()
