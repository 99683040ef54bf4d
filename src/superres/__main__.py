"""`python -m superres` runs the command line."""

import sys

from superres.cli import main

sys.exit(main())
