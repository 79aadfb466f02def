"""docs/api/<package>.md: every public name of every package is listed on its page, and each page's examples run."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "docs" / "api.md"
PAGES = ROOT / "docs" / "api"
PACKAGES = ["cpi", "theory", "fullscale", "mechinterp", "experiments"]
#: pages whose examples load a model (seconds, but more than the fast suite's budget per test)
MODEL_PAGES = {"fullscale", "mechinterp", "experiments"}


def page(package: str) -> str:
    return (PAGES / f"{package}.md").read_text(encoding="utf-8")


def listed_names(text: str) -> set[str]:
    return {name for row in re.findall(r"^\|([^|]+)\|", text, flags=re.M) for name in re.findall(r"`(\w+)`", row)}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_listed(package):
    missing = sorted(set(importlib.import_module(package).__all__) - listed_names(page(package)))
    assert not missing, f"docs/api/{package}.md: not listed: {missing}"


def test_the_index_links_every_page_and_no_other():
    links = set(re.findall(r"\]\(api/([a-z_]+)\.md\)", INDEX.read_text(encoding="utf-8")))
    assert links == set(PACKAGES) == {p.stem for p in PAGES.glob("*.md")}


def test_the_listing_check_can_fail(monkeypatch, tmp_path):
    (tmp_path / "cpi.md").write_text("# `cpi`: plumbing\n\n| name | what |\n|---|---|\n| `Config` | base |\n")
    monkeypatch.setattr(sys.modules[__name__], "PAGES", tmp_path)
    with pytest.raises(AssertionError, match="not listed: .*'CpiError'"):
        test_every_public_name_is_listed("cpi")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def run_page(package: str, folder: Path, monkeypatch) -> dict:
    """Every ``python`` block of the package's page, in order, in one namespace, in ``folder``."""
    blocks = python_blocks(page(package))
    assert blocks, f"docs/api/{package}.md has no runnable example"
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(ROOT))
    namespace: dict = {"__name__": f"api_examples_{package}"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api/{package}.md block {i}", "exec", dont_inherit=True), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("package", [pytest.param(p, marks=pytest.mark.slow) if p in MODEL_PAGES else p
                                     for p in PACKAGES])
def test_the_examples_run(package, tmp_path, monkeypatch):
    namespace = run_page(package, tmp_path, monkeypatch)
    produced = {  # what each page's example leaves behind: the runs really ran
        "cpi": lambda: namespace["cfg"].batch_size == 4,
        "theory": lambda: (tmp_path / "out" / "sim" / "trajectory.csv").is_file(),
        "fullscale": lambda: (tmp_path / "out" / "ft" / "checkpoint-2").is_dir(),
        "mechinterp": lambda: (tmp_path / "out" / "probe" / "probe.csv").is_file(),
        "experiments": lambda: (tmp_path / "out" / "controlled" / "trajectory.csv").is_file(),
    }[package]
    assert produced()


def test_a_failing_example_fails_the_test(monkeypatch, tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "cpi.md").write_text("# `cpi`\n\n```python\nassert 1 == 2\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "PAGES", tmp_path / "pages")
    with pytest.raises(AssertionError):
        run_page("cpi", tmp_path, monkeypatch)
