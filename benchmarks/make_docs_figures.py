"""The README's figure made again: docs/paper_keypoint_ids.png, the PCK per keypoint id of two runs.

    python benchmarks/make_docs_figures.py

Evaluates the tests' 24 colour-coded SPair-71k pairs twice with the real engine (tests/paper_runs.py:
argmax, and the window soft-argmax K3 T0.1) in a temporary folder, draws their comparison figures at
PCK@0.1 with comparison.write_figures (as `report.py --figures --compare` does) and copies its
keypoint_ids.png to docs/. No weights or dataset needed; a few seconds on the CPU.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from paper_runs import spair_runs  # noqa: E402

from semcorr.report import comparison  # noqa: E402
from semcorr.runs.folders import read_run  # noqa: E402

LABELS = ("argmax", "soft-argmax K3 T0.1")
ALPHA = 0.1
FIGURE = REPO / "docs" / "paper_keypoint_ids.png"


def main() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = (read_run(path) for path in spair_runs(Path(tmp)))
        written = comparison.write_figures(a, b, LABELS, Path(tmp) / "figures", ALPHA)
        shutil.copyfile(next(p for p in written if p.name == "keypoint_ids.png"), FIGURE)
    print(f"wrote {FIGURE}")
    return FIGURE


if __name__ == "__main__":
    main()
