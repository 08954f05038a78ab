"""The `kdkeras` command: `demo`, `export`, `bench`.

Errors print one line (`kdkeras: error: ...`) and exit with status 1;
`--debug` shows the full traceback instead.
"""

import argparse
import os
import sys

# 3 also hides TensorFlow's start-up ERROR lines (such as a failed CUDA
# probe on a machine without GPU), which would bury one-line errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 1, like every other error."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message}\n")


def _build_parser():
    parser = _Parser(
        prog="kdkeras",
        description="Knowledge distillation for Keras.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from kdkeras import _cli_demo

    _cli_demo.add_parser(sub)
    try:
        from kdkeras import _cli_deploy
    except ImportError:
        _cli_deploy = None
    if _cli_deploy is not None:
        _cli_deploy.add_parsers(sub)
    return parser


def _import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up log lines kept off stderr.

    TensorFlow's native libraries print several informational lines while
    loading, before `TF_CPP_MIN_LOG_LEVEL` takes effect; they would bury the
    one-line error messages of this command. Stderr is restored at once, and
    an import error is still raised and reported.
    """
    import io

    try:
        saved = os.dup(2)
    except (OSError, io.UnsupportedOperation):
        import tensorflow  # noqa: F401

        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None):
    """Runs the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" not in argv:
        try:
            _import_tensorflow_quietly()
        except ImportError as e:
            print(f"kdkeras: error: cannot import TensorFlow ({e})", file=sys.stderr)
            return 1
    parser = _build_parser()
    args = parser.parse_args(argv)
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
