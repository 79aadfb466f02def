"""Regenerate figures/theory_trajectory.png/.pdf (see docs/theory.md). Run: python figures/theory_trajectory.py [--quick]"""
import sys
from pathlib import Path

from theory.figures import trajectory_figure

if __name__ == "__main__":
    print(trajectory_figure(Path(__file__).resolve().parent, quick="--quick" in sys.argv))
