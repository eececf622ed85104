"""The ``zssr`` command: parse, build config, call a library function.

One module per subcommand, each with ``add_parser`` and ``run(args) -> int``:
``pipeline/cmd_*.py`` for the pipeline's own, and any module published under the
entry-point group ``zssr.commands`` (``zssr batch`` is ``workflows.cmd_batch``: the
arrow runs from workflows to pipeline, never back).  Errors become one line on stderr and the exit code
of their class (:mod:`pipeline.errors`); ``-v`` adds the traceback.  Control
characters in a message (a newline in a file name) are escaped, so the line is whole.

SIGTERM (timeout, cron, systemd) and SIGHUP raise :class:`~pipeline.errors.Terminated`
in the main thread, like Ctrl-C's KeyboardInterrupt: the same ``with`` blocks abort
the writers and release the locks, and the exit code is 128 + the signal (143, 129).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from types import ModuleType

from io_adapters.vsi import CredentialFilter
from pipeline.errors import Terminated, exit_code, one_line
from pipeline.runs.allocator import keep_freed_memory

from . import cmd_eval, cmd_run, cmd_steps, cmd_upscale

__all__ = ["main", "build_parser"]

SUBCOMMANDS = [cmd_upscale, cmd_run, cmd_eval, cmd_steps]
COMMANDS_GROUP = "zssr.commands"  # entry points: name -> module with add_parser and run
log = logging.getLogger("pipeline")


def subcommands() -> list[ModuleType]:
    """The pipeline's own subcommands, then those published under ``zssr.commands``."""
    own = {mod.__name__.rpartition(".cmd_")[2] for mod in SUBCOMMANDS}
    extra = [ep.load() for ep in sorted(importlib_metadata.entry_points(group=COMMANDS_GROUP),
                                        key=lambda ep: ep.name) if ep.name not in own]
    return [*SUBCOMMANDS, *extra]


def build_parser() -> argparse.ArgumentParser:
    from zssr import __version__

    parser = argparse.ArgumentParser(
        prog="zssr", description="Zero-Shot Super-Resolution for large satellite, medical and "
        "plain images (Shocher, Cohen & Irani, CVPR 2018).")
    parser.add_argument("--version", action="version", version=f"zssr-pipeline {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug); tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in subcommands():
        mod.add_parser(sub, parents=[common])
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.captureWarnings(True)  # library warnings are log lines too (hidden by -q)
    for handler in logging.getLogger().handlers:  # no credential in any log line (-vv too)
        if not any(isinstance(f, CredentialFilter) for f in handler.filters):
            handler.addFilter(CredentialFilter())
    if not verbose:  # pydicom logs decoder failures with a traceback; our error says it
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
                handler.addFilter(_QuietLibraries())
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _log_gdal_unraisable


def _log_gdal_unraisable(unraisable) -> None:
    """rasterio's GDAL message callback fails on messages that are not UTF-8 (a damaged
    file's bytes quoted in them) and Python prints the failure on stderr: log it instead."""
    if "rasterio" in repr(unraisable.object) or "rasterio" in str(unraisable.err_msg):
        log.debug("undecodable GDAL message: %s", unraisable.exc_value)
    else:
        sys.__unraisablehook__(unraisable)


class _QuietLibraries(logging.Filter):
    """Drop the log records of libraries whose failures our own one-line errors report."""

    NAMES = ("pydicom",)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] not in self.NAMES


def _gdal_to_logging():
    """For the whole command, GDAL's messages go to logging (``rasterio._env``; shown
    with ``-v``) instead of raw ``Warning 1:`` lines on stderr, and GDAL's block cache is
    capped so memory stays flat in the scene size."""
    import rasterio

    from io_adapters.base import GDAL_CACHE_MB

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    The first signal raises; later ones are ignored so the cleanup it starts (abort the
    writers, close the cluster) runs to its end.  The previous handlers come back on exit.

    Python drops an exception raised inside a weakref callback or a ``__del__`` (it goes
    to :data:`sys.unraisablehook`), and a signal's handler runs wherever the main thread
    happens to be.  A :class:`Terminated` that lands there is delivered again, a moment
    later, to the main thread, so the stop is never lost and the job never runs on to exit 0.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    main_thread = threading.main_thread().ident

    def stop(signum: int, frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum, signal.Signals(signum).name)

    hook_before = sys.unraisablehook

    def redeliver(unraisable) -> None:
        exc = unraisable.exc_value
        if not isinstance(exc, Terminated):
            hook_before(unraisable)
            return
        log.debug("%s raised where Python drops exceptions (%s); delivering it again",
                  exc.name, unraisable.object)
        signal.signal(exc.signum, stop)
        timer = threading.Timer(0.01, signal.pthread_kill, (main_thread, exc.signum))
        timer.daemon = True
        timer.start()

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = hook_before
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    keep_freed_memory()  # training steps reuse heap pages instead of faulting them in
    try:
        with stop_signals_as_interrupts(), _gdal_to_logging():
            return int(args.func(args) or 0)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        code = exit_code(exc)
        if isinstance(exc, KeyboardInterrupt):
            # a stop mid-write leaves zarr's async chunk tasks pending; asyncio reports each
            # at exit ("Task was destroyed but it is pending!"): noise after our one line
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        if args.verbose or code == 10:
            traceback.print_exc()
        msg = one_line(str(exc)) if str(exc) else type(exc).__name__
        if code == 10:
            msg = f"internal error: {type(exc).__name__}: {msg}"
        print(f"zssr {args.command}: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
