"""``python -m cfm_core COMMAND ...``: the command line, :mod:`cfm_core.cli.main`."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
