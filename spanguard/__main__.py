"""``python -m spanguard`` is the ``spanguard`` command."""

import sys

from spanguard.cli import main

sys.exit(main())
