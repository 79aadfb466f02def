"""transformers' LOAD REPORT table becomes one warning line on the command line (cpi.library_logs)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpi.library_logs import REPORT_LOGGERS, condense_load_reports, summarize_load_report, with_load_summary

ROOT = Path(__file__).resolve().parents[2]
REPORT = ("\x1b[1mLlamaForCausalLM LOAD REPORT\x1b[0m from: /ckpt\nKey | Status | \n----+----+-\n"
          "model.layers.1.mlp.up_proj.weight | MISSING | \nmodel.layers.1.mlp.down_proj.weight | MISSING | \n"
          "model.layers.{0, 1}.mlp.up_proj.weight | MISMATCH | ckpt: [64, 32] vs model:[128, 32]\n\nNotes:\n- MISSING: ...")


def test_summary_counts_each_status_and_names_the_first_key():
    line = summarize_load_report(REPORT)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("LlamaForCausalLM weights from /ckpt: 2 MISSING (newly initialised; first "
                           "model.layers.1.mlp.up_proj.weight), 1 MISMATCH (shape mismatch; first "
                           "model.layers.{0, 1}.mlp.up_proj.weight)")
    assert line.endswith("-v shows the full load report")


@contextlib.contextmanager
def _records(name: str):
    """The records logged on logger ``name`` inside the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield logger, records
    finally:
        logger.removeHandler(handler)


def test_filter_rewrites_only_load_reports_and_can_be_removed():
    with _records(REPORT_LOGGERS[0]) as (logger, records):
        condense_load_reports(True)
        condense_load_reports(True)  # idempotent
        assert sum(f.__class__.__name__ == "_Condense" for f in logger.filters) == 1
        logger.warning("%s", REPORT)
        logger.warning("something else\non two lines")
        held = with_load_summary("cannot load: For details look at the above report!")
        again = with_load_summary("other error, see the above report")  # used once
        condense_load_reports(False)
        logger.warning("%s", REPORT)
    (other, full) = (r.getMessage() for r in records)  # the report with a MISMATCH row is held back ...
    assert other == "something else\non two lines" and full == REPORT
    assert held == "cannot load: (" + summarize_load_report(REPORT).split("; -v")[0] + ")"  # ... for its error
    assert again == "other error, see the above report"


def test_report_without_an_error_after_it_is_one_warning_line():
    with _records(REPORT_LOGGERS[1]) as (logger, records):
        condense_load_reports(True)
        logger.warning("%s", REPORT.replace("| MISMATCH |", "| UNEXPECTED |"))
        condense_load_reports(False)
    (line,) = (r.getMessage() for r in records)
    assert "\n" not in line and "2 MISSING (newly initialised" in line and "1 UNEXPECTED (ignored" in line


@pytest.mark.slow
def test_failing_load_ends_with_the_error_line_and_verbose_keeps_the_table(tmp_path):
    from tests.fullscale.ft_helpers import conflict_records, corpus, write_jsonl
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    ckpt = make_tiny_checkpoint(tmp_path / "ck", "llama", tokenizer=make_tokenizer("bpe", corpus=corpus()))
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] *= 2  # every MLP weight mismatches: transformers logs the table, then raises
    (ckpt / "config.json").write_text(json.dumps(cfg))
    data = write_jsonl(tmp_path / "c.jsonl", conflict_records())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CPI_PROGRESS": "0"}

    def run(*flags):
        cmd = [sys.executable, "-m", "cpi.cli", *flags, "evaluate", "--checkpoints", str(ckpt), "--datasets",
               str(data), "--out", str(tmp_path / f"ev{len(flags)}"), "--modes", "logprob", "--no-plot"]
        res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        lines = [ln for ln in res.stderr.replace("\r", "\n").splitlines() if ln.strip() and "it/s]" not in ln]
        return res.returncode, lines

    code, lines = run()
    assert code == 2 and "Traceback" not in "\n".join(lines)
    assert len(lines) == 1 and lines[0].startswith("cpi: error: ")  # one line: no table, no warning before it
    assert "MISMATCH (shape mismatch; first model.layers." in lines[0] and "above report" not in lines[0]
    code, lines = run("-v")
    assert code == 2 and lines[-1].startswith("cpi: error: ") and "above report" in lines[-1]
    assert sum("| MISMATCH" in ln for ln in lines) >= 1  # -v: the full table
