"""``python -m selfdistill ...`` is the ``selfdistill`` command (what ``torchrun -m selfdistill`` needs)."""

import sys

from selfdistill.cli import run

sys.exit(run())
