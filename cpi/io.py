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
import re
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

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


def _has_carriage_return(table: "pd.DataFrame") -> bool:
    for name in table.columns:
        col = table[name]
        if col.dtype == object or str(col.dtype) in ("str", "string"):
            if col.map(lambda v: isinstance(v, str) and "\r" in v).any():
                return True
    return False


def table_to_csv(table: "pd.DataFrame") -> str:
    """The CSV text of ``table`` that ``pandas.read_csv`` reads back cell for cell, whatever the text.

    Quotes, commas, newlines, control characters and non-ASCII need nothing special (minimal
    quoting), but a bare carriage return is not quoted by the ``csv`` module when lines end in
    ``\n`` and would split the row on reading; a table holding one is written with every text
    cell quoted instead. Read tables back with ``keep_default_na=False, na_values=[""]`` so
    that text such as ``None`` or ``NA`` stays text.
    """
    import csv

    quoting = csv.QUOTE_NONNUMERIC if _has_carriage_return(table) else csv.QUOTE_MINIMAL
    return table.to_csv(index=False, quoting=quoting, lineterminator="\n")


def atomic_write_table(table: "pd.DataFrame", path: str | Path) -> Path:
    """Write a tidy table as CSV (or Parquet if ``path`` ends in ``.parquet``), atomically.

    Any text round-trips through the CSV (see :func:`table_to_csv`).
    """
    path = Path(path)
    if path.suffix == ".parquet":
        import io

        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    return atomic_write_text(path, table_to_csv(table))


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


def compute_environment() -> dict[str, Any]:
    """What decides the bits of a CPU/GPU computation besides the seed (see docs: "same seed, same numbers").

    ``torch`` (version), ``torch_build`` (BLAS, CPU capability and compiler of the build),
    ``cpu_capability`` (the kernel path in use: ``torch.backends.cpu.get_cpu_capability()``,
    changed by ``ATEN_CPU_CAPABILITY``), ``threads`` (intra-op threads), ``blas`` and the
    environment variables that change kernels (``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``,
    ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``CUBLAS_WORKSPACE_CONFIG``), the CPU model and,
    with a GPU, its name and the CUDA/cuDNN versions. Empty of torch fields if torch is not imported.
    """
    import sys

    env_keys = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
    info: dict[str, Any] = {"machine": platform.machine(), "cpu": _cpu_model(),
                            "env": {k: os.environ[k] for k in env_keys if k in os.environ}}
    torch = sys.modules.get("torch")
    if torch is None:
        return info
    info["torch"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch
        info["cpu_capability"] = None
    build = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", build)
    info["blas"] = blas.group(1) if blas else None
    info["torch_build"] = {"git_version": getattr(torch.version, "git_version", None),
                           "cuda": torch.version.cuda, "debug": bool(getattr(torch.version, "debug", False)),
                           "mkl": bool(torch.backends.mkl.is_available()),
                           "mkldnn": bool(torch.backends.mkldnn.is_available())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def run_metadata(**extra: Any) -> dict[str, Any]:
    """Package version, git hash, Python version, the compute environment and a UTC timestamp."""
    meta: dict[str, Any] = {
        "package": PACKAGE_NAME,
        "version": package_version(),
        "git_hash": git_hash(),
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    env = compute_environment()
    if "torch" in env:
        meta["torch"] = env["torch"]
    meta["environment"] = env
    meta.update(extra)
    return meta


def save_run(
    out_dir: str | Path,
    config: "Config | Mapping[str, Any]",
    tables: "Mapping[str, pd.DataFrame] | None" = None,
    **meta: Any,
) -> Path:
    """Write ``config.json`` (config + metadata) and each table as ``<name>.csv`` into ``out_dir``.

    Tables are written first and ``config.json`` last, each atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (tables or {}).items():
        atomic_write_table(table, out / (name if "." in name else f"{name}.csv"))
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    atomic_write_json(out / "config.json", {"config": cfg, "meta": run_metadata(**meta)})
    return out


# ---------------------------------------------------------------------------
# checks of output paths, made before anything is written


def _writable_dir(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, so it holds for root and read-only mounts)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".cpi-write-test."):
            return True
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(path: str | Path, what: str = "--out") -> Path:
    """Raise :class:`CpiError` unless ``path`` is (or can be made) a writable results folder.

    Checked before any work starts, so that a bad ``--out`` costs nothing and writes nothing.
    """
    from cpi.errors import CpiError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CpiError(f"{what} {path}: is a file, not a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise CpiError(f"{what} {path}: {base} is a file, so the folder cannot be made")
    if not _writable_dir(base):
        raise CpiError(f"{what} {path}: {base} is not writable")
    return path


def check_out_file(path: str | Path, what: str = "--out") -> Path:
    """Raise :class:`CpiError` unless ``path`` can be written as a file (not a folder, writable parent)."""
    from cpi.errors import CpiError

    path = Path(path)
    if str(path) in ("", ".") or path.is_dir():
        raise CpiError(f"{what} {path}: is a folder; give a file name")
    check_out_dir(path.parent, what=f"{what} {path}: parent folder")
    return path


def read_csv_rows(path: str | Path, columns: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of every data row of the CSV table ``path`` (the header is line 1).

    Raises :class:`CpiError` ``"WHAT PATH: ..."`` when the file cannot be read, lacks one of ``columns``
    or is malformed CSV, so every table reader names its file the same way.
    """
    import csv

    from cpi.errors import CpiError

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise CpiError(f"{what} {path}: missing column(s) {', '.join(missing)}")
            return list(enumerate(reader, start=2))
    except OSError as exc:
        raise CpiError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc
    except csv.Error as exc:
        raise CpiError(f"{what} {path}: malformed CSV: {exc}") from exc


def check_input_file(path: str | Path, what: str) -> Path:
    """Raise :class:`CpiError` if ``path`` is missing, a folder, or not UTF-8 text (binary data).

    Reads the whole file once (in blocks), so a bad byte anywhere is found before any work. A pipe
    or ``<(process substitution)`` is not read here (it can be read only once): its reader checks it.
    """
    import codecs

    from cpi.errors import CpiError

    path = Path(path)
    if not path.exists():
        raise CpiError(f"{what} {path}: file not found")
    if path.is_dir():
        raise CpiError(f"{what} {path}: is a folder, expected a file")
    if not path.is_file():  # a pipe or <(process substitution): readable once, so the reader checks it
        return path
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                if b"\x00" in block:
                    raise CpiError(f"{what} {path}: binary data, not a text file (NUL byte at {offset + block.index(0)})")
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    raise CpiError(f"{what} {path}: not UTF-8 text (byte {offset + exc.start}: {exc.reason})") from None
                offset += len(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise CpiError(f"{what} {path}: not UTF-8 text (ends inside a character: {exc.reason})") from None
    except OSError as exc:
        raise CpiError(f"{what} {path}: cannot read ({exc.strerror})") from exc
    return path


# ---------------------------------------------------------------------------
# reading JSON and JSONL as users give it


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text, split on ``\\n`` only (a trailing ``\\r`` dropped).

    Not :meth:`str.splitlines`, which also splits on U+2028, U+2029, U+0085 and other
    separators that are legal, unescaped, inside a JSON string (``json.dumps(ensure_ascii=False)``
    writes U+2028 raw).
    """
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def parse_json(text: str, where: str, *, line_known: bool = False) -> Any:
    """``json.loads(text)`` with every failure as a one-line :class:`~cpi.errors.CpiError` naming ``where``.

    Malformed JSON reads ``"WHERE: malformed JSON (reason at line L column C)"`` (only ``column C``
    when ``line_known``: ``where`` already names the line); JSON nested too deeply for the parser
    (a ``RecursionError`` inside :func:`json.loads`) reads ``"WHERE: JSON nested too deeply"``.
    """
    from cpi.errors import CpiError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if line_known else f"line {exc.lineno} column {exc.colno}"
        raise CpiError(f"{where}: malformed JSON ({exc.msg} at {at})") from None
    except RecursionError:
        raise CpiError(f"{where}: JSON nested too deeply to read") from None


def read_text_once(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path``, read once (so a pipe or ``<(process substitution)`` works too).

    Raises a one-line :class:`~cpi.errors.CpiError` naming ``what`` and the path for a missing file,
    a folder, binary data (a NUL byte) or text that is not UTF-8.
    """
    from cpi.errors import CpiError

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CpiError(f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise CpiError(f"{what} {path}: is a folder, expected a file") from None
    except OSError as exc:
        raise CpiError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if b"\x00" in data:
        raise CpiError(f"{what} {path}: binary data, not a text file (NUL byte at {data.index(0)})")
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark (Windows editors) is not data
    except UnicodeDecodeError as exc:
        raise CpiError(f"{what} {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
