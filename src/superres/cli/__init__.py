"""The `superres` command line: one sub-command per module in this package.

Each sub-command module has `add_parser(subparsers)` (declares its arguments) and
`run(args) -> int` (calls one pipeline and prints). `main` turns user errors into one line on
stderr and a non-zero exit code; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from superres.errors import SuperresError

# Sub-command name -> module in this package. Modules are imported lazily so that `superres --help`
# and light commands do not pay for importing torch-heavy pipelines they do not use.
COMMANDS = {
    "evaluate": "evaluate",
    "prepare": "prepare",
    "degrade": "degrade",
    "pack": "pack",
    "train": "train",
    "models": "models",
    "upscale": "upscale",
    "compare": "compare",
    "demo": "demo",
    "export": "export",
    "bench": "bench",
    "frontier": "frontier",
    "curves": "curves",
    "serve": "serve",
}


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"superres.cli.{module_name}")
        except ModuleNotFoundError as error:
            # Only skip sub-commands that are not written yet, never hide a broken import inside one.
            if error.name != f"superres.cli.{module_name}":
                raise
    return modules


def _version() -> str:
    """The installed distribution's version (pyproject.toml), without importing torch."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("superres")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superres", description="Single-image super-resolution: evaluate, train, upscale."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"superres {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _available_commands().values():
        module.add_parser(subparsers)
    return parser


# OS errors that are the machine's state, not a bug: they get one line like a user error.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE})


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that every `finally` and temporary-file cleanup runs."""


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` while a command runs (the default would kill the process
    without removing the temporary file of a write in progress)."""

    def on_terminate(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, on_terminate)
    except ValueError:  # not the main thread: signals cannot be caught here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tolerate_undecodable_names() -> None:
    """A file name that is not valid UTF-8 (kept as surrogates) must not crash a message about it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # a replaced stream without reconfigure: leave it
            pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _tolerate_undecodable_names()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    # -v is for superres's own debug lines; Pillow's (every PNG chunk it parses) drown them.
    logging.getLogger("PIL").setLevel(logging.INFO)
    try:
        with _sigterm_unwinds():
            return int(args.run(args) or 0)
    except SuperresError as error:
        print(f"superres {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        print(f"superres {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"superres {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"superres {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"superres {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
