"""``python -m sklat`` is the ``sklat`` command."""

import sys

from .cli import main

sys.exit(main())
