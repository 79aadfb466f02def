"""Atomic result writing and run metadata.

Every result folder holds tidy tables plus a ``config.json`` that records the
config, the package version and the git hash of the code that produced it.
Files are written to a temporary name in the same folder and renamed into
place, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pandas is imported lazily: `import theory` stays light
    import pandas as pd

    from cpi.config import Config

PACKAGE_NAME = "context-parametric-inversion"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; results should be readable as usual
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_write_table(table: "pd.DataFrame", path: str | Path) -> Path:
    """Write a tidy table as CSV (or Parquet if ``path`` ends in ``.parquet``), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        import io

        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    return atomic_write_text(path, table.to_csv(index=False))


#: metadata that would make two saves of the same figure differ (dates, the writer's version), per format
_VOLATILE_FIGURE_METADATA: dict[str, dict[str, None]] = {
    "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
}


def atomic_save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix.

    PNG, PDF and SVG are byte-reproducible: the same figure saved twice gives the same bytes (no
    creation date or writer version in the file, fixed SVG ids; ``metadata=`` entries given by the
    caller are kept). Other formats are written as matplotlib writes them.
    """
    import io

    import matplotlib

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    metadata = {**_VOLATILE_FIGURE_METADATA.get(fmt, {}), **kwargs.pop("metadata", {})}
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "cpi"}):
        fig.savefig(buf, format=fmt, bbox_inches="tight", metadata=metadata or None, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def git_hash(start: str | Path | None = None) -> str | None:
    """The commit of the source checkout this package runs from, or ``None`` outside git."""
    where = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, check=False
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        from cpi import __version__

        return __version__


def run_metadata(**extra: Any) -> dict[str, Any]:
    """Package version, git hash, Python/torch versions and a UTC timestamp."""
    meta: dict[str, Any] = {
        "package": PACKAGE_NAME,
        "version": package_version(),
        "git_hash": git_hash(),
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    import sys

    if "torch" in sys.modules:
        meta["torch"] = sys.modules["torch"].__version__
    meta.update(extra)
    return meta


def save_run(
    out_dir: str | Path,
    config: "Config | Mapping[str, Any]",
    tables: "Mapping[str, pd.DataFrame]" = {},
    **meta: Any,
) -> Path:
    """Write ``config.json`` (config + metadata) and each table as ``<name>.csv`` into ``out_dir``.

    Tables are written first and ``config.json`` last, each atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        atomic_write_table(table, out / (name if "." in name else f"{name}.csv"))
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    atomic_write_json(out / "config.json", {"config": cfg, "meta": run_metadata(**meta)})
    return out
