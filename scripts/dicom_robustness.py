"""Print the outcome table of the DICOM mutation corpus (docs/dicom_robustness.md) as Markdown.

Each real series of ../shared/data is copied, mutated as anonymisers do (tests/dicom_mutants.py), read,
compared with the unmutated series, and written as a DICOM SEG that dciodvfy checks (when installed).

Usage: python scripts/dicom_robustness.py > table.md
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dicom_mutants import MUTATIONS, SOURCES, copy_source, dciodvfy_errors, mutate, outcome  # noqa: E402


def main() -> int:
    """Run every mutant of every source and print one table row per mutation."""
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    shared = ROOT.parent / "shared" / "data"
    names = list(SOURCES)
    print("| mutation | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = {n: copy_source(shared, n, root / n / "source") for n in names}
        for mutation in MUTATIONS:
            cells = []
            for name in names:
                work = root / name / mutation.replace(":", "_")
                result = outcome(mutate(sources[name], work / "series", mutation), sources[name], work)
                if result.status == "reads":
                    errors = dciodvfy_errors(result.seg)
                    seg = "SEG ok" if errors == [] else f"SEG {len(errors)} dciodvfy error(s)" if errors else "SEG"
                    cells.append(f"reads, {seg}" + ("" if result.voxel_error == 0 else
                                                    f", values differ ({result.voxel_error:.1g})"))
                else:
                    reason = result.detail.split("): ", 1)[-1]
                    cells.append(f"{result.status}: {reason[:90]}")
            print(f"| {mutation} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
