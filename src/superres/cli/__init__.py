"""The `superres` command line: one sub-command per module in this package.

Each sub-command module has `add_parser(subparsers)` (declares its arguments) and
`run(args) -> int` (calls one pipeline and prints). `main` turns user errors into one line on
stderr and a non-zero exit code; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from superres.errors import SuperresError

# Sub-command name -> module in this package. Modules are imported lazily so that `superres --help`
# and light commands do not pay for importing torch-heavy pipelines they do not use.
COMMANDS = {
    "evaluate": "evaluate",
    "prepare": "prepare",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superres", description="Single-image super-resolution: evaluate, train, upscale."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _available_commands().values():
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except SuperresError as error:
        print(f"superres {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        print(f"superres {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"superres {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
