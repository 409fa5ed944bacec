"""`python -m mechlab.cli`, as `mechlab`."""

import sys

from mechlab.cli import main

sys.exit(main())
