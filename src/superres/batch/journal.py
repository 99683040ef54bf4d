"""Batches of files at scale: a resumable journal, deterministic shards, and an overlapped runner.

Journal: a JSON-lines file beside the outputs (`.superres-journal.jsonl`, or
`.superres-journal-<i>of<N>.jsonl` for a shard, so that shards on several machines never write
the same file). Its first line holds the settings that decide the pixels (model, scale,
self-ensemble, half); each further line names one output that was written completely, with its
input and size. A finished output is skipped on the rerun of the same command even with
`--overwrite`; a killed run's unfinished output has no line (outputs themselves are written
atomically, so it is absent, never half-written) and is redone. Lines are appended with one
`write` each and fsynced, so that a kill can tear at most the last line, which is ignored; on
opening, the journal is compacted and rewritten atomically (`superres.atomic`). Appending keeps a
batch of n files O(n) in journal writes where rewriting the whole file per image would be O(n^2).
A batch that ends without failures removes its journal: nothing is left to resume.

Shards: `Shard.parse("i/N")` (0 <= i < N) takes every N-th job of the batch sorted by input
name, starting at the i-th: deterministic from the names alone, balanced to one file, and every
file in exactly one shard, whatever order each machine lists the folder in.

Runner: `run_overlapped` decodes the next images on a reader thread and encodes the finished
ones on a writer thread while the calling thread computes, and hands the compute function runs
of consecutive images of one shape and type (small enough to share one tile's memory) as a
batch. Pillow's and zlib's codecs release the GIL, so the threads overlap with the network.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superres.errors import ConfigError, SuperresError

logger = logging.getLogger(__name__)

JOURNAL_SCHEMA = "superres.journal/1"
JOURNAL_STEM = ".superres-journal"
#: Decoded images waiting for compute, and finished ones waiting for the encoder: memory bound.
QUEUE_DEPTH = 4


# --------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """The `index`-th of `count` deterministic parts of a batch (0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"i/N"` -> Shard(i, N); a ConfigError naming the text otherwise."""
        try:
            index_text, count_text = text.split("/")
            index, count = int(index_text), int(count_text)
        except ValueError:
            index, count = -1, 0
        if not 0 <= index < count:
            raise ConfigError(f"--shard must be i/N with 0 <= i < N (e.g. 0/4), got '{text}'")
        return cls(index, count)

    @property
    def suffix(self) -> str:
        """What tells this shard's files apart: "" for the whole batch, "-1of4" for a part."""
        return "" if self.count == 1 else f"-{self.index}of{self.count}"

    def select(self, jobs: Sequence[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
        """This shard's (input, output) jobs: every count-th by input name, from the index-th."""
        ordered = sorted(jobs, key=lambda job: job[0].as_posix())
        return ordered[self.index :: self.count]


# --------------------------------------------------------------------------- journal


class Journal:
    """What a batch has finished, in a JSON-lines file (see the module docstring)."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        # Through JSON and back: the settings compare equal to what the file holds (tuples
        # become lists there).
        self.settings = json.loads(json.dumps({"schema": JOURNAL_SCHEMA, **settings}))
        self._done: dict[str, dict[str, Any]] = {}
        self._load_and_compact()

    @classmethod
    def beside(cls, outputs: Sequence[Path], settings: dict[str, Any], shard: Shard) -> Journal:
        """The journal in the folder that holds all `outputs` (their common parent)."""
        folders = {str(output.absolute().parent) for output in outputs} or {os.getcwd()}
        folder = Path(os.path.commonpath(sorted(folders)))
        return cls(folder / f"{JOURNAL_STEM}{shard.suffix}.jsonl", settings)

    def _load_and_compact(self) -> None:
        from superres.atomic import atomic_write_bytes

        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{self.path}: cannot read the batch journal ({error})") from error
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line a kill tore while it was being appended
        if not records or records[0] != self.settings:
            logger.info("%s: other settings than this run's; starting the batch afresh", self.path)
            self.path.unlink(missing_ok=True)
            return
        self._done = {record["output"]: record for record in records[1:] if "output" in record}
        body = "".join(json.dumps(record) + "\n" for record in [self.settings, *self._done.values()])
        atomic_write_bytes(self.path, body.encode())

    def _key(self, output: Path) -> str:
        return os.path.relpath(output.absolute(), self.path.parent)

    def is_done(self, input_path: Path, output: Path) -> bool:
        """Whether `output` was finished from `input_path` by this batch and is still as written."""
        record = self._done.get(self._key(output))
        if record is None or record["input"] != str(input_path):
            return False
        try:
            return output.stat().st_size == record["bytes"]
        except OSError:
            return False

    def record(self, input_path: Path, output: Path) -> None:
        """Note `output` (written completely) as done: one appended, fsynced line."""
        record = {"output": self._key(output), "input": str(input_path), "bytes": output.stat().st_size}
        self._done[record["output"]] = record
        header = "" if self.path.exists() else json.dumps(self.settings) + "\n"
        data = (header + json.dumps(record) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(descriptor, data)  # one write: a kill tears at most this line
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def finish(self, failed: bool) -> None:
        """End of the batch: without failures nothing is left to resume, so the journal goes."""
        if not failed:
            self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- overlapped runner


@dataclass
class Decoded:
    """One job after the reader thread: the decoded image, or why it could not be read."""

    input_path: Path
    output_path: Path
    image: Any = None  # superres.images.LoadedImage
    error: str | None = None


def _decode(job: tuple[Path, Path], read: Callable[[Path], Any]) -> Decoded:
    input_path, output_path = job
    try:
        return Decoded(input_path, output_path, image=read(input_path))
    except (SuperresError, OSError) as error:
        return Decoded(input_path, output_path, error=describe_failure(input_path, error))


def describe_failure(input_path: Path, error: Exception) -> str:
    """One line for a failed image: ours name the file already; OS errors may name a temporary."""
    from superres.atomic import describe_os_error

    if isinstance(error, SuperresError):
        return str(error)
    return f"{input_path}: {describe_os_error(error)}" if isinstance(error, OSError) else str(error)


#: Seconds between the calling thread's looks at a future it waits on (see `_result`).
SIGNAL_POLL_SECONDS = 0.2


def _result(future: Future) -> Any:
    """`future.result()`, waited for in short slices.

    A process-directed SIGTERM or Ctrl-C may be delivered to any thread, e.g. the reader or writer.
    CPython then runs the handler on the main thread only when that thread next runs Python code,
    and a plain `result()` blocked on a lock would not run any until the stalled read or write
    ends. Between slices it does, so an interrupt takes effect at once whichever thread got it.
    """
    while not future.done():
        wait([future], timeout=SIGNAL_POLL_SECONDS)
    return future.result()


def _decoded_ahead(
    jobs: Sequence[tuple[Path, Path]], read: Callable[[Path], Any], reader: _DaemonThread
) -> Iterator[Decoded]:
    """The jobs decoded in order, QUEUE_DEPTH of them ahead of the consumer."""
    pending: deque[Future] = deque()
    upcoming = iter(jobs)
    for job in upcoming:
        pending.append(reader.submit(_decode, job, read))
        if len(pending) >= QUEUE_DEPTH:
            break
    while pending:
        decoded = _result(pending.popleft())
        next_job = next(upcoming, None)
        if next_job is not None:
            pending.append(reader.submit(_decode, next_job, read))
        yield decoded


def _runs(decoded: Iterator[Decoded], can_join: Callable[[Any, Any, int], bool]) -> Iterator[list[Decoded]]:
    """Consecutive readable images that `can_join(first.image, next.image, run length)` groups."""
    run: list[Decoded] = []
    for item in decoded:
        if item.error is not None:
            yield [item]
            continue
        if run and not can_join(run[0].image, item.image, len(run)):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


class _DaemonThread:
    """One daemon thread running submitted calls in order, each with a Future.

    Not a ThreadPoolExecutor: the interpreter joins those at exit, so a SIGTERM or Ctrl-C would
    wait for a stalled read or write. A daemon thread dies with the process, and what it was
    writing is only ever a temporary file, which the caller removes. When the work ends normally
    the thread is joined (`stop(wait=True)`): one still alive when the interpreter shuts down
    can take the process down with a C++ `terminate` (exit code 134 instead of the batch's own).
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, function, args = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as error:  # handed to whoever waits on the future
                    future.set_exception(error)

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._calls.put((future, function, args))
        return future

    def stop(self, *, wait: bool) -> None:
        """End the thread after the calls already submitted; `wait` joins it."""
        self._calls.put(None)
        if wait:
            self._thread.join()


def run_overlapped(
    jobs: Sequence[tuple[Path, Path]],
    *,
    read: Callable[[Path], Any],
    compute: Callable[[list[Any]], list[Any]],
    write: Callable[[Decoded, Any], None],
    can_join: Callable[[Any, Any, int], bool],
    on_done: Callable[[Decoded], None],
    on_failed: Callable[[Decoded, str], None],
) -> None:
    """Read, compute and write `jobs` with decoding and encoding off the calling thread.

    `compute(images)` runs on the calling thread on each run of images `can_join` groups and
    returns one result per image; `write(item, result)` runs on the writer thread and must write
    atomically (`superres.atomic`). Each job ends in exactly one `on_done` or
    `on_failed(item, one-line reason)`, both called on this thread. An exception here (SIGTERM,
    Ctrl-C) removes the temporary files of the writes still in flight before it propagates.
    """
    from superres.atomic import remove_stale_temporaries

    reader, writer = _DaemonThread("superres-read"), _DaemonThread("superres-write")
    writes: deque[tuple[Decoded, Future]] = deque()

    def settle(until: int) -> None:
        # Finished writes are settled at once, so the journal lags the files by as little as it can.
        while writes and (len(writes) > until or writes[0][1].done()):
            item, future = writes[0]
            try:
                _result(future)
            except (SuperresError, OSError) as error:
                on_failed(item, describe_failure(item.input_path, error))
            else:
                on_done(item)
            writes.popleft()
            item.image = None  # written (or not): free the decoded pixels early

    try:
        for run in _runs(_decoded_ahead(jobs, read, reader), can_join):
            if run[0].error is not None:
                on_failed(run[0], run[0].error)
                continue
            try:
                results = compute([item.image for item in run])
            except (SuperresError, OSError) as error:
                for item in run:
                    on_failed(item, describe_failure(item.input_path, error))
                continue
            for item, result in zip(run, results, strict=True):
                writes.append((item, writer.submit(write, item, result)))
            settle(QUEUE_DEPTH)
        settle(0)
    except BaseException:
        reader.stop(wait=False)  # an interrupt must not wait for a stalled read or write
        writer.stop(wait=False)
        for item, _ in writes:
            remove_stale_temporaries(item.output_path, including_own=True)
        raise
    # Every future has been settled, so both threads are idle and join at once.
    reader.stop(wait=True)
    writer.stop(wait=True)


__all__ = ["Decoded", "Journal", "Shard", "describe_failure", "run_overlapped"]
