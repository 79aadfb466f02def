"""Run every benchmark in this folder, one after the other (``make bench``).

Each script compares the package against a baseline in the same run and prints
a ratio; see BENCHMARKS.md for the figures measured so far and the machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ["theory_sweep.py", "theory_adamw.py", "scoring_batched.py", "probe_overhead.py", "finetune_overhead.py",
           "organism_pretrain.py", "real_evaluate.py", "probe_real.py", "finetune_real.py", "response_logits.py",
           "train_throughput.py", "score_context.py", "main_job.py", "finetune_bf16.py", "knowledge_bf16.py",
           "generation_stop.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(here / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
