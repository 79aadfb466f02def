"""Regenerate figures/theory_comparison.png/.pdf (see docs/theory.md). Run: python figures/theory_comparison.py [--quick]"""
import sys
from pathlib import Path

from theory.figures import comparison_figure

if __name__ == "__main__":
    print(comparison_figure(Path(__file__).resolve().parent, quick="--quick" in sys.argv))
