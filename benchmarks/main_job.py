"""Wall time and peak memory of the main job (``cpi run``), the whole process tree included.

``cpi run`` runs its seeds in worker processes, so the memory that counts against the budget
(≤ 6 GB) is the *sum* of the resident memory of the parent and its workers at the same instant, which
no single process's high-water mark shows. This script runs the command, samples that sum every
0.2 s with psutil, and prints the peak next to the per-stage table the command itself prints.

    python benchmarks/main_job.py                      # cpi run --quick into a fresh temporary folder
    python benchmarks/main_job.py -- cpi run --out runs/main_bench
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of ``proc`` and all its descendants now (processes that vanish count 0)."""
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(argv: list[str], interval: float = 0.2) -> tuple[int, float, int]:
    """Run ``argv``; return (exit code, wall seconds, peak summed RSS in bytes)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(argv)
    proc = psutil.Process(child.pid)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(proc))
            except psutil.NoSuchProcess:
                return
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = child.wait()
    stop.set()
    thread.join()
    return code, time.perf_counter() - t0, peak[0]


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else None
    with tempfile.TemporaryDirectory() as tmp:
        argv = argv or [sys.executable, "-m", "cpi.cli", "run", "--quick", "--out", f"{tmp}/main_quick"]
        code, wall, peak = measure(argv)
    print(f"command: {' '.join(argv)}")
    print(f"exit {code}; wall {wall:.0f} s; peak memory of the process tree {peak / 2**30:.2f} GiB "
          f"({psutil.cpu_count()} CPUs, load average now {psutil.getloadavg()[0]:.1f})")
    return code


if __name__ == "__main__":
    sys.exit(main())
