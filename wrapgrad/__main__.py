"""``python -m wrapgrad``."""

import sys

from wrapgrad.cli import main

sys.exit(main())
