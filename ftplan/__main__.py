"""``python -m ftplan ...`` = the ``ftplan`` command."""

import sys

from ftplan.cli import main

sys.exit(main())
