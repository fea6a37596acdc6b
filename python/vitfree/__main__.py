"""``python -m vitfree`` = the ``vitfree`` command."""

import sys

from vitfree.cli import main

sys.exit(main())
