"""Regenerate figures/theory_eta_star.png/.pdf (see docs/theory.md). Run: python figures/theory_eta_star.py [--quick]"""
import sys
from pathlib import Path

from theory.figures import eta_star_figure

if __name__ == "__main__":
    print(eta_star_figure(Path(__file__).resolve().parent, quick="--quick" in sys.argv))
