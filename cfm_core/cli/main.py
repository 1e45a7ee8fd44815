"""``python -m cfm_core COMMAND ...`` — each command lives in its own module with ``configure(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help`` stays fast.

Errors reach the user as one line on stderr: a bad input (:class:`CFMError`) exits 2, Ctrl-C 130, SIGTERM during
``train`` 143 (after saving), an OS error (disk full, permission) or a bug 1. ``--debug`` or ``CFM_DEBUG=1`` adds
the Python traceback."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from ..errors import CFMError, first_line

COMMANDS = {
    "upscale": ("cfm_core.cli.upscale", "upscale images 2× or 4× with a CFM model (default: the bundled one)"),
    "train": ("cfm_core.train.train", "train a CFM (or baseline) model on a folder of images"),
    "evaluate": ("cfm_core.evaluate.evaluate", "PSNR/SSIM/SWD of models vs bicubic on held-out images"),
    "bench": ("cfm_core.bench.bench", "speed and memory benchmarks, ratios measured side by side"),
    "export": ("cfm_core.train.export", "write the EMA model of a training run at its last saved step"),
    "convert-official": ("cfm_core.cli.convert", "convert an official fm-boosting .ckpt to safetensors, safely"),
    "info": ("cfm_core.cli.info", "print a checkpoint's self-description"),
}
DEBUG_ENV = "CFM_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cfm_core", description=__doc__.split("—")[0].strip())
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (same as {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _tolerant_streams()
    state = {"debug": os.environ.get(DEBUG_ENV, "") not in ("", "0"), "signal": 0}
    if argv[:1] == ["--debug"]:
        state["debug"], argv = True, argv[1:]
    restore = _note_interrupts(state)
    try:
        return _main(argv, state)  # state["debug"] is read when an error arrives: `COMMAND ... --debug` sets it
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see _note_interrupts): partial files were removed
        signum = getattr(exc, "signum", 2)
        return _fail("interrupted" if signum == 2 else "terminated", 128 + signum, state)
    except BrokenPipeError:  # `cfm-boost info M | head -1`: the reader left; say nothing more
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the pipe
    except Exception as exc:
        if state["signal"]:  # Ctrl-C inside an import can surface as another error (numpy: ImportError)
            signum = state["signal"]
            return _fail("interrupted" if signum == 2 else "terminated", 128 + signum, state)
        message, code = _describe(exc)
        return _fail(message, code, state)
    finally:
        restore()


def _describe(exc: Exception) -> tuple[str, int]:
    """The one line and exit code for an error that reached the top."""
    if isinstance(exc, CFMError):  # the user's input: the message names it and the fix
        return f"error: {exc}", 2
    if isinstance(exc, MemoryError):
        return "error: out of memory; use smaller inputs (or --tile for upscale)", 1
    if isinstance(exc, OSError):  # disk full, permission denied, a vanished file: the machine's answer
        where = f" ({exc.filename!r})" if exc.filename else ""
        return f"error: {exc.strerror or first_line(exc)}{where}", 1
    return (f"error: internal error {type(exc).__name__}: {first_line(exc)} (rerun with --debug or {DEBUG_ENV}=1 "
            "for the traceback, and please report it)", 1)  # a bug: one line and how to report it


def _note_interrupts(state: dict):
    """Ctrl-C still raises KeyboardInterrupt, and is also remembered (see main); SIGTERM raises it too, so the
    ``.tmp-*`` file of an unfinished atomic write is removed rather than left behind. Returns the undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def interrupt(signum, frame):
        state["signal"] = signum
        stop = KeyboardInterrupt()
        stop.signum = signum
        raise stop

    # a handler someone else installed, or SIGINT ignored (a background job), is left alone
    if previous[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)
    if previous[signal.SIGTERM] == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


def _main(argv: list[str], state: dict) -> int:
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage / error and exits
        return 2
    module_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m cfm_core {argv[0]}", description=help_text)
    module.configure(parser)
    parser.add_argument("--debug", action="store_true", default=state["debug"],
                        help=f"show the Python traceback of an error (same as {DEBUG_ENV}=1)")
    args = parser.parse_args(argv[1:])
    state["debug"] = args.debug
    return int(module.run(args) or 0)


def _fail(message: str, code: int, state: dict) -> int:
    if state["debug"]:
        traceback.print_exc()
    print(" ".join(message.splitlines()), file=sys.stderr)  # a file name with a newline still makes one line
    return code


def _tolerant_streams() -> None:
    """Never fail on printing: undecodable file names (surrogate escapes) or a non-UTF-8 terminal get escapes."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # replaced streams (pytest's capture, io.StringIO) may not support it
            pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

