"""User-facing errors.

A :class:`CpiError` carries a one-line message that names the file, record or
field at fault. The CLI prints it as ``cpi: error: <message>`` and exits with
code 2; library callers can catch it like any exception.
"""


class CpiError(Exception):
    """An error caused by the user's input (file, record, field, checkpoint)."""


class ConfigError(CpiError, ValueError):
    """A config field is unknown, of the wrong type, or violates an assumption."""
