"""``python -m medt3d`` (also what ``torchrun -m medt3d`` runs)."""

from __future__ import annotations

import sys

from medt3d.cli import main

if __name__ == "__main__":
    sys.exit(main())
