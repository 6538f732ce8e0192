"""``python -m abstopk_mini <command>``: see :mod:`abstopk_mini.runs.cli`."""

import sys

from .runs.cli import main

sys.exit(main())
