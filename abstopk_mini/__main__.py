"""``python -m abstopk_mini <command>``: see :mod:`abstopk_mini.cli`."""

import sys

from .cli import main

sys.exit(main())
