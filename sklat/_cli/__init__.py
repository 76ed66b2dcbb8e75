"""The ``sklat`` command line: one module per command.

``train`` and ``predict`` (:mod:`.train`, :mod:`.predict`), ``profile``
(:mod:`.profile`, with :mod:`.endpoint`), ``import`` (:mod:`.importing`),
``choose``, ``recalibrate``, ``check``, ``capacity`` and ``serve`` (:mod:`.serve`).
Each module declares its options and runs its command; the estimator and torch
load only when a command that needs them runs, so ``sklat --help`` and the
measuring commands stay light.
"""

import argparse
import sys
import warnings

from .._version import __version__
from .capacity import add_capacity_parser
from .check import add_check_parser
from .choose import add_choose_parser
from .importing import add_import_parser
from .predict import add_predict_parser
from .profile import add_profile_parser
from .recalibrate import add_recalibrate_parser
from .serve import add_serve_parser
from .train import add_train_parser

__all__ = ["build_parser", "main"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sklat",
        description="Learn per-position LLM decode latency from total decode "
        "latencies, and predict with it.",
    )
    parser.add_argument("--version", action="version", version=f"sklat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(sub)
    add_predict_parser(sub)
    add_profile_parser(sub)
    add_import_parser(sub)
    add_choose_parser(sub)
    add_recalibrate_parser(sub)
    add_check_parser(sub)
    add_capacity_parser(sub)
    add_serve_parser(sub)
    return parser


def main(argv=None):
    """Run the ``sklat`` command line.

    A user error (bad input, a missing or unreadable file, a path that cannot
    be written) is one line on stderr and exit status 2; Ctrl-C is exit
    status 130.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments after ``sklat``; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        The exit status: 0, 2 (user error) or 130 (interrupted).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line(args.command)
        try:
            return args.func(args, argv if argv is not None else sys.argv[1:])
        except (ValueError, TypeError, OSError, ImportError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                exc = "input nested too deeply"
            print(f"sklat {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"sklat {args.command}: interrupted; nothing was written", file=sys.stderr)
            return 130


def _warning_line(command):
    """``warnings.showwarning`` for a command: one line in the command's
    words, as its errors are, without the library's file, line and source
    that Python's format shows."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = f"sklat {command}: warning: {message} ({category.__name__})"
        print(text, file=sys.stderr if file is None else file)

    return show
