"""Regenerate figures/theory_phase_diagram.png/.pdf (see docs/theory.md). Run: python figures/theory_phase_diagram.py [--quick]"""
import sys
from pathlib import Path

from theory.figures import phase_diagram_figure

if __name__ == "__main__":
    print(phase_diagram_figure(Path(__file__).resolve().parent, quick="--quick" in sys.argv))
