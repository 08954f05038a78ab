"""The `kdkeras` command: `demo`, `distill`, `export`, `bench`.

Errors print one line (`kdkeras: error: ...`) and exit with status 1;
`--debug` shows the full traceback instead.
"""

import argparse
import sys

from kdkeras.cli import demo
from kdkeras.cli import deploy
from kdkeras.cli import distill

# TensorFlow's start-up lines are kept off stderr by kdkeras/__init__.py
# when the process is this command (see kdkeras/_startup.py).

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 1, like every other error."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message}\n")


def _build_parser():
    parser = _Parser(
        prog="kdkeras",
        description="Knowledge distillation for Keras.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo.add_parser(sub)
    distill.add_parser(sub)
    deploy.add_parsers(sub)
    return parser


def main(argv=None):
    """Runs the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # the command as typed, for reports
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("kdkeras: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI reports every failure
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"kdkeras: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
