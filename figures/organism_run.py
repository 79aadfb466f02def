"""Figures of one organism run (inversion curve, probe figures, theory overlay).

    python figures/organism_run.py [RUN_DIR] [OUT_DIR]

RUN_DIR defaults to runs/organism (made by ``cpi organism run``; the run is resumed/completed first, so this
script also works on a fresh checkout), OUT_DIR to figures/. Writes organism_inversion,
organism_probe_attention, organism_probe_values, organism_probe_heads and organism_theory_overlay
(.png and .pdf).
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments.organism.experiment import OrganismConfig, run_organism
from experiments.organism.figures import make_organism_figures


def main(argv: list[str]) -> None:
    run_dir = Path(argv[0]) if argv else Path("runs/organism")
    out = Path(argv[1]) if len(argv) > 1 else Path("figures")
    cfg_file = run_dir / "organism_config.json"
    if cfg_file.is_file():
        import json

        cfg = OrganismConfig.from_stored(json.loads(cfg_file.read_text())["config"], source=str(cfg_file))
    else:
        cfg = OrganismConfig()
    run = run_organism(cfg.replace(out=str(run_dir)))  # resumes: finished stages are read back
    for p in make_organism_figures(run, out):
        print(p)


if __name__ == "__main__":
    main(sys.argv[1:])
