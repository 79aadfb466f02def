"""Third-party log noise on the command line: transformers' weight-loading report as one line.

``from_pretrained`` logs a multi-line ``LOAD REPORT`` table (one row per missing, unexpected or
mismatched weight) as a WARNING; a command that then fails printed its one-line error after dozens
of table lines. :func:`condense_load_reports` (installed by :func:`cpi.cli.main` unless ``-v``)
rewrites that record into one line with the counts per status and the first key of each, so the
signal stays (a checkpoint with missing weights still says so). A report that transformers follows
with an error (shape mismatches, failed conversions: "For details look at the above report!") is
held back and its summary put into that error line instead (:func:`with_load_summary`, used by
:func:`cpi.cli.main`): a failing load prints one line. ``-v`` keeps the full table. Nothing here
imports transformers: the filter sits on the loggers by name.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REPORT_LOGGERS", "condense_load_reports", "pop_load_summary", "summarize_load_report", "with_load_summary"]

#: the transformers modules that log the loading report (utils/loading_report.log_state_dict_report callers)
REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.modeling_layers", "transformers.integrations.peft")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ROW = re.compile(r"^(?P<key>[^|]+?)\s*\|\s*(?P<status>[A-Z_]+)\s*\|")  # keys may read model.layers.{0, 1}.x
_NOTES = {"MISSING": "newly initialised", "UNEXPECTED": "ignored", "MISMATCH": "shape mismatch"}


def summarize_load_report(text: str) -> str:
    """One line for a transformers ``LOAD REPORT``: model, source, count and first key per status.

    >>> summarize_load_report("\\x1b[1mLlamaForCausalLM LOAD REPORT\\x1b[0m from: /m\\nKey | Status |\\n"
    ...                       "--+--\\nmodel.norm.weight | MISSING | \\na.b | MISSING |\\n")
    'LlamaForCausalLM weights from /m: 2 MISSING (newly initialised; first model.norm.weight); -v shows the full load report'
    """
    lines = _ANSI.sub("", text).splitlines()
    head = lines[0] if lines else ""
    model, _, source = head.partition(" LOAD REPORT")
    source = source.split("from:", 1)[-1].strip()
    counts: dict[str, list[str]] = {}
    for line in lines[1:]:
        m = _ROW.match(line.strip())
        if m and m.group("status") != "Status":
            counts.setdefault(m.group("status"), []).append(m.group("key"))
    parts = [f"{len(keys)} {status} ({_NOTES[status] + '; ' if status in _NOTES else ''}first {keys[0]})"
             for status, keys in counts.items()]
    return f"{model.strip() or 'model'} weights from {source}: {', '.join(parts) or 'see the load report'}; " \
           "-v shows the full load report"


#: transformers raises right after a report with these statuses ("... look at the above report!")
_FATAL = ("MISMATCH", "CONVERSION")
_PENDING: list[str] = []


class _Condense(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to logging
            return True
        if "LOAD REPORT" not in text:
            return True
        summary = summarize_load_report(text)
        if any(f" {status} (" in summary for status in _FATAL):  # an error follows: the summary goes into it
            _PENDING[:] = [summary]
            return False
        record.msg, record.args = summary, ()
        return True


def pop_load_summary() -> str | None:
    """The one-line summary of a load report held back because transformers raises after it (once)."""
    return _PENDING.pop() if _PENDING else None


def with_load_summary(message: str) -> str:
    """``message``, where it points at "the above report", with that report's one-line summary in its place."""
    if "above report" not in message:
        return message
    summary = pop_load_summary()
    if summary is None:
        return message
    return re.sub(r"For details look at the above report!?", f"({summary.split('; -v')[0]})", message)


_FILTER = _Condense()


def condense_load_reports(enabled: bool = True) -> None:
    """Install (or, with ``enabled=False``, remove) the one-line load-report filter; idempotent."""
    _PENDING.clear()
    for name in REPORT_LOGGERS:
        logger = logging.getLogger(name)
        if enabled and _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        elif not enabled and _FILTER in logger.filters:
            logger.removeFilter(_FILTER)
