"""``python -m carlab`` runs the command line (see :mod:`carlab.cli`)."""

import sys

from carlab.cli import main

sys.exit(main())
