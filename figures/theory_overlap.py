"""Regenerate figures/theory_overlap.png/.pdf and its table theory_overlap.csv (see docs/theory.md). Run: python figures/theory_overlap.py [--quick]"""
import sys
from pathlib import Path

from theory.figures import overlap_figure

if __name__ == "__main__":
    print(overlap_figure(Path(__file__).resolve().parent, quick="--quick" in sys.argv))
