"""Command line: ``medt3d <command> ...``, a thin layer over the Python API.

Each command lives in ``medt3d/commands/<name>.py`` and exposes ``register(subparsers)``
(which adds its parser and sets ``func``). Errors that users cause (bad files, bad config: the
project's ``InputError``) are printed as one clear line with exit code 2, faults of the machine
(read-only or full disk, out of memory) with exit code 3, both without a traceback; ``--debug`` shows
it. Any other exception is a bug in medt3d: its traceback, then one line saying so, exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from medt3d import __version__
from medt3d.commands.logfile import attach_log, detach_log
from medt3d.errors import (
    ENVIRONMENT_ERRORS,
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    INTERNAL_ERROR,
    USER_ERRORS,
    Terminated,
    hint_of,
    is_environment_error,
)

#: Command modules, in the order ``medt3d --help`` lists them.
COMMANDS = ("inspect", "phantoms", "train", "distill", "evaluate", "score", "infer", "convert", "export", "demo", "bench", "config")



def build_parser() -> argparse.ArgumentParser:
    """The ``medt3d`` argument parser with every available command."""
    parser = argparse.ArgumentParser(prog="medt3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"medt3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"medt3d.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"medt3d.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medt3d`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    new_folders = _new_output_folders(args)
    code = EXIT_BAD_INPUT
    previous = _handle_sigterm()
    log = attach_log(args, argv)  # OUTPUT/<command>.log
    try:
        code = int(args.func(args) or 0)
        return code
    except (*USER_ERRORS, *ENVIRONMENT_ERRORS) as err:
        if args.debug:
            raise
        if not is_environment_error(err):
            text = str(err)
            if isinstance(err, OSError) and hint_of(text) is None:  # the OS's own "No such file or directory"
                text += "; check the path"
            print(f"medt3d {args.command}: error: {text}", file=sys.stderr)
            return EXIT_BAD_INPUT
        reason = "out of memory" if isinstance(err, MemoryError) else "system error"
        text = str(err) or type(err).__name__
        if hint_of(text) is None:
            text += f"; {_OOM_HINT}" if isinstance(err, MemoryError) else f"; {_DISK_HINT}"
        print(f"medt3d {args.command}: {reason}: {text}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt as err:
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"medt3d {args.command}: {how}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # not the user's input nor the machine: a bug in medt3d, shown as one
        if args.debug:
            raise
        if type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (GPU), a RuntimeError
            print(f"medt3d {args.command}: out of memory: {str(err).splitlines()[0] if str(err) else 'GPU'}; "
                  f"{_OOM_HINT}", file=sys.stderr)
            return EXIT_ENVIRONMENT
        traceback.print_exc()
        print(f"medt3d {args.command}: {INTERNAL_ERROR}: {type(err).__name__}; "
              "report it with the command and the traceback above", file=sys.stderr)
        return EXIT_BUG
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        detach_log(log, succeeded=code in (0, 1))  # 1: some cases of a batch failed, the others are written
        if code != 0:
            _remove_if_empty(new_folders, f"{args.command}.log")


def _raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM handler: stop like Ctrl-C (the case or epoch in progress is cleaned up, a summary written).
    Later SIGTERMs are ignored while that runs; a scheduler's SIGKILL still ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _handle_sigterm() -> Any:
    """Install :func:`_raise_terminated`; the previous handler (None outside the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        return None


#: What to do when memory runs out (docs/troubleshooting.md, "Out of memory").
_OOM_HINT = ("lower patch.roi_size or train.batch_size (train), --sw-batch-size or --roi-size (infer), or "
             "use --device cpu")
#: What to do about another fault of the machine (a full or read-only disk, a missing permission).
_DISK_HINT = "check that the disk has free space and the folder is writable, then run the command again"


#: Arguments that name a folder a command creates for its results.
_OUTPUT_ARGS = ("output", "out", "quality_dir")


def _new_output_folders(args: argparse.Namespace) -> list[Path]:
    """The output folders named on the command line that do not exist yet."""
    paths = [getattr(args, name, None) for name in _OUTPUT_ARGS]
    return [Path(p) for p in paths if isinstance(p, (str, Path)) and not Path(p).exists()]


def _remove_if_empty(folders: list[Path], log_name: str) -> None:
    """A failed command that wrote nothing but its log leaves no folder behind."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty, or already gone: leave it
            if [p.name for p in folder.iterdir()] == [log_name]:
                (folder / log_name).unlink()
            folder.rmdir()
