"""Shared plumbing for the ``cpi`` command line and the three research packages.

``cpi`` holds what ``theory``, ``fullscale`` and ``mechinterp`` all need and none
of them owns: validated config dataclasses, atomic result writing with run
metadata, user-facing errors and progress bars. It imports nothing heavy.
"""

from cpi.config import Config
from cpi.errors import ConfigError, CpiError
from cpi.io import atomic_write_table, atomic_write_text, run_metadata, save_run

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "CpiError",
    "atomic_write_table",
    "atomic_write_text",
    "run_metadata",
    "save_run",
    "__version__",
]
