"""Quiet TensorFlow start-up for the `kdkeras` command.

TensorFlow's native libraries print several lines while loading (oneDNN
notices, a failed CUDA probe on machines without a GPU), before
`TF_CPP_MIN_LOG_LEVEL` can hide them; they would bury the command's one-line
error messages. When the process is the `kdkeras` command, the package
imports TensorFlow with stderr pointed at /dev/null for the duration of the
import only, and sets `TF_CPP_MIN_LOG_LEVEL=3` unless the user set it.
Library users (`import kdkeras`) keep TensorFlow's usual behaviour.
"""

import os
import sys


def is_command():
    """Whether this process was started as `kdkeras ...` or `python -m kdkeras.cli`."""
    argv0 = sys.argv[0] if sys.argv else ""
    # While `python -m` imports the module's package, argv[0] is "-m".
    return (
        os.path.basename(argv0) == "kdkeras"
        or argv0 == "-m"
        or argv0.endswith(os.path.join("kdkeras", "cli.py"))
    )


def import_tensorflow_quietly():
    """Imports TensorFlow with stderr silenced during the import only.

    `--debug` on the command line leaves stderr alone. An import error is
    raised as usual (after stderr is restored).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "--debug" in sys.argv or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    try:
        saved = os.dup(2)
    except OSError:
        import tensorflow  # noqa: F401

        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
