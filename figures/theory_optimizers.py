"""Regenerate figures/theory_optimizers.png/.pdf and its table theory_optimizers.csv (see docs/theory.md). Run: python figures/theory_optimizers.py [--quick]"""
import sys
from pathlib import Path

from theory.figures import optimizers_figure

if __name__ == "__main__":
    print(optimizers_figure(Path(__file__).resolve().parent, quick="--quick" in sys.argv))
