"""User-facing errors and the exit codes of the ``cpi`` command.

A :class:`CpiError` carries a one-line message that names the file, record or
field at fault. The CLI prints it as ``cpi: error: <message>`` and exits with
code 2; library callers can catch it like any exception.

An :class:`Interrupted` (SIGINT or SIGTERM) is printed as ``cpi: <message>``
(the message says how to resume) and exits with code 130, whichever signal it was.
"""

#: Exit code of bad input (any :class:`CpiError`).
EXIT_BAD_INPUT = 2
#: Exit code of a command stopped by SIGINT or SIGTERM (:class:`Interrupted`), for every command.
EXIT_INTERRUPTED = 130


class CpiError(Exception):
    """An error caused by the user's input (file, record, field, checkpoint)."""


class ConfigError(CpiError, ValueError):
    """A config field is unknown, of the wrong type, or violates an assumption."""


class LockedError(CpiError):
    """Another live process is writing into the same results folder."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a command; finished units are kept and the message says how to resume.

    A ``KeyboardInterrupt`` so that no ``except Exception`` in a library swallows it.
    """

    def __init__(self, message: str = "interrupted; run the same command again to resume",
                 signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"
