"""docs/api.md: every public name of every package is listed, and the page's examples run."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "api.md"
PACKAGES = ["cpi", "theory", "fullscale", "mechinterp", "experiments"]


def sections() -> dict[str, str]:
    """Package name -> the text of its ``## `package`...`` section."""
    parts = re.split(r"^## `([a-z_.]+)`.*$", PAGE.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_listed(package):
    text = sections()[package]
    listed = {name for row in re.findall(r"^\|([^|]+)\|", text, flags=re.M) for name in re.findall(r"`(\w+)`", row)}
    missing = sorted(set(importlib.import_module(package).__all__) - listed)
    assert not missing, f"docs/api.md, section {package}: not listed: {missing}"


def test_the_listing_check_can_fail(monkeypatch, tmp_path):
    page = tmp_path / "api.md"
    page.write_text("## `cpi`: plumbing\n\n| name | what |\n|---|---|\n| `Config` | base |\n")
    monkeypatch.setattr(sys.modules[__name__], "PAGE", page)
    with pytest.raises(AssertionError, match="not listed: .*'CpiError'"):
        test_every_public_name_is_listed("cpi")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), flags=re.M | re.S)


@pytest.mark.slow
def test_the_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    namespace: dict = {"__name__": "api_examples"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i}", "exec", dont_inherit=True), namespace)  # noqa: S102 - the docs own code
    assert (tmp_path / "out" / "probe" / "probe.csv").is_file()
    assert sorted(os.listdir(tmp_path / "out" / "ft")) != []
