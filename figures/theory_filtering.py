"""Regenerate figures/theory_filtering.png/.pdf and its table theory_filtering.csv (see docs/theory.md). Run: python figures/theory_filtering.py [--quick]"""
import sys
from pathlib import Path

from theory.figures import filtering_figure

if __name__ == "__main__":
    print(filtering_figure(Path(__file__).resolve().parent, quick="--quick" in sys.argv))
