"""``python -m tests.reliability``: the soak (see ``soak.py``)."""

from __future__ import annotations

import sys

from .soak import main

if __name__ == "__main__":
    sys.exit(main())
