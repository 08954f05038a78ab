"""The `kdkeras` command: `demo`, `distill`, `export`, `bench`.

Argument parsing and printing only; the work is done by library calls
(`kdkeras.comparison`, `kdkeras.pipeline`, `kdkeras.deploy`). Errors print one line
(`kdkeras: error: ...`) and exit with status 1; `--debug` shows the
traceback.
"""

from kdkeras.cli.main import main

__all__ = ["main"]
