"""Wall time and peak memory per stage of a long run (the ``timings.csv`` of every experiment)."""

from __future__ import annotations

import datetime
import resource
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: the columns of a timings table
TIMING_COLUMNS = ("invocation", "stage", "wall_s", "peak_rss_mib")


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark so far, in MiB.

    Linux's ``VmHWM`` (``/proc/self/status``) where there is one: unlike ``ru_maxrss`` it is not
    inherited from the parent across fork + exec, so a spawned worker reports its own peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


@dataclass
class StageTimer:
    """Wall time and peak resident memory (process high-water mark, MiB) per stage of one invocation.

    >>> timer = StageTimer()
    >>> timer.run("add", lambda a, b: a + b, 2, 3)
    5
    >>> [row["stage"] for row in timer.rows]
    ['add']
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    started: str = field(default_factory=utc_now)  # UTC, labels this invocation's rows in timings.csv

    def run(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, recording its wall time and the peak memory after it as ``stage``."""
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        self.rows.append({"invocation": self.started, "stage": stage, "wall_s": time.perf_counter() - t0,
                          "peak_rss_mib": peak_rss_mib()})
        return result

    def table(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(TIMING_COLUMNS))


__all__ = ["StageTimer", "TIMING_COLUMNS", "peak_rss_mib", "utc_now"]
