"""``python -m flows.cli``: the ``seqlm`` command."""

import sys

from flows.cli import main

sys.exit(main())
