"""``python -m fastml``: the ``fastml`` command."""

import sys

from fastml.cli import main

sys.exit(main())
