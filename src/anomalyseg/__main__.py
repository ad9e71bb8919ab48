"""``python -m anomalyseg`` is the same as the ``anomalyseg`` console script."""

import sys

from anomalyseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
