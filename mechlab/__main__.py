"""``python -m mechlab``: the same command line as ``mechlab``."""

import sys

from mechlab.cli import main

sys.exit(main())
