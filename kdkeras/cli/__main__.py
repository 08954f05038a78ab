"""`python -m kdkeras.cli`: the `kdkeras` command."""

import sys

from kdkeras.cli.main import main

sys.exit(main())
