"""Every ``cpi ...`` command shown in README.md and docs/*.md works.

Three checks:

1. every documented command line parses with the real ``cpi`` parser (placeholders such as ``DIR``
   are plain strings to argparse; ``[optional]`` groups are dropped), and every documented
   ``--set KEY=VALUE`` names a real field of the command's config;
2. every documented subcommand has a smoke case below (or an entry, with its reason, in
   :data:`SKIPPED` / :data:`COVERED_ELSEWHERE`), so a command added to the docs without a test fails;
3. each smoke case runs its subcommand in-process on tiny inputs (tiny checkpoints from
   ``tests/tiny_models.py``, the shipped conflict sets cut to a few items, a tiny organism) and
   checks the exit code and the files it writes.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from cpi.cli import build_parser, main
from cpi.cli_config import set_assignments

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GROUPS = {"theory", "data", "organism", "models", "controlled"}  # subcommands with their own sub-subcommands

#: documented subcommands not run here, and why
SKIPPED = {
    "run": "the full `cpi run` takes ~15 min; `cpi run --quick` runs the same code (see COVERED_ELSEWHERE)",
}
#: documented subcommands whose exact command a test elsewhere runs, checking exit code and outputs
COVERED_ELSEWHERE = {
    "run --quick": ("tests/experiments/test_controlled_real.py", '["run", "--quick", "--out", str(out)]'),
    "theory prove": ("tests/theory/test_cli.py", '"theory", "prove"'),
    # offline, on a tiny GGUF in local wheels; the real models in tests/fullscale/test_models_real.py
    "models list": ("tests/fullscale/test_models.py", '["models", "list"]'),
    "models fetch": ("tests/fullscale/test_models.py", '["models", "fetch", "tiny-llama"]'),
    "controlled run": ("tests/experiments/test_controlled.py", '"controlled", "run"'),
    "controlled sweep": ("tests/experiments/test_controlled.py", '"controlled", "sweep"'),
    "controlled regime": ("tests/experiments/test_regime.py", '"controlled", "regime"'),
    "controlled compare": ("tests/experiments/test_agreement.py", '"controlled", "compare"'),
}
#: launcher lines (`accelerate launch ... -m cpi.cli finetune`, `torchrun ...`): parsed, not launched
#: here (GPU / multi-process); tests/fullscale/test_finetune.py runs the same finetune code path.


# ------------------------------------------------------------------ reading the docs


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every ``cpi`` command in the docs' code blocks and inline code."""
    found: list[tuple[str, str]] = []
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        in_block, pending, start = False, "", 0
        for no, line in enumerate(lines, 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            if in_block:
                text = (pending + " " + line.strip()) if pending else line.strip()
                if text.endswith("\\"):
                    pending, start = text[:-1].strip(), start if pending else no
                    continue
                pending = ""
                if text.startswith("cpi ") or "-m cpi.cli " in text:
                    cmd = text if text.startswith("cpi ") else "cpi " + text.split("-m cpi.cli ", 1)[1]
                    found.append((f"{path.name}:{start or no}", _strip_comment(cmd)))
                start = 0
            else:
                for cmd in re.findall(r"`(cpi [a-z][^`]*)`", line):
                    found.append((f"{path.name}:{no} (inline)", _strip_comment(cmd)))
    return found


def _strip_comment(cmd: str) -> str:
    return re.split(r"\s+#", cmd, maxsplit=1)[0].strip()


def subcommand(cmd: str) -> str:
    words = cmd.split()[1:]
    named = words[0] in GROUPS and len(words) > 1 and re.fullmatch(r"[a-z][a-z-]*", words[1])
    key = " ".join(words[:2]) if named else words[0]
    return "run --quick" if key == "run" and "--quick" in words else key


def concrete_argv(cmd: str) -> list[str] | None:
    """The command as argv for the parser, or None if it is an abbreviation (``cpi probe ...``)."""
    optional = r"(?<![=\[])\s*\[[^\[\]]*\]"  # `[--flag X]`; a list value (`--set seeds=[0]`) stays
    while re.search(optional, cmd):
        cmd = re.sub(optional, "", cmd)
    argv = shlex.split(cmd)[1:]
    if "..." in argv:
        if any(a == "..." and (i == 0 or not argv[i - 1].startswith("--")) for i, a in enumerate(argv)):
            return None
        argv = ["X" if a == "..." else a for a in argv]
    return [a.replace("<out>", "OUT") for a in argv]


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    subs = {subcommand(c) for _, c in COMMANDS}
    assert len(COMMANDS) > 30
    assert {"theory simulate", "data check", "evaluate", "probe", "probe-link", "finetune", "run",
            "organism sweep"} <= subs


@pytest.mark.parametrize("where,cmd", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, cmd):
    argv = concrete_argv(cmd)
    if argv is None:
        pytest.skip(f"abbreviated in the docs: {cmd}")
    if where.endswith("(inline)") and not any(a.startswith("--") for a in argv):
        pytest.skip(f"a command's name in the text, not a command line: {cmd}")
    if subcommand(cmd) in SKIPPED and argv[0] not in _registered():
        pytest.skip(f"{argv[0]}: not registered in this checkout ({SKIPPED[subcommand(cmd)]})")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{cmd}` does not parse (exit {exc.code})")
    sets = getattr(args, "set", None) or (set_assignments(args) if hasattr(args, "config_spec") else [])
    config_cls = _config_class(subcommand(cmd))
    if sets and config_cls is not None:
        config_cls().with_overrides(sets)  # a documented --set key that no longer exists raises ConfigError


def _registered() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return set(sub.choices)


def _config_class(sub: str):
    if sub in ("theory simulate", "theory sweep"):
        from theory.config import SimConfig

        return SimConfig
    if sub in ("organism run", "organism sweep"):
        from experiments.organism.experiment import OrganismConfig

        return OrganismConfig
    if sub in ("run", "run --quick"):
        from experiments.main_job import MainConfig

        return MainConfig
    if sub in ("controlled run", "controlled sweep"):
        from experiments.controlled.experiment import ControlledConfig

        return ControlledConfig
    return None


def test_every_documented_subcommand_has_a_smoke_case():
    documented = {subcommand(c) for _, c in COMMANDS} - GROUPS  # a group's bare name is not a command
    missing = sorted(documented - set(SMOKE) - set(SKIPPED) - set(COVERED_ELSEWHERE))
    assert not missing, f"documented commands without a smoke test: {missing}"
    for sub, (test_file, needle) in COVERED_ELSEWHERE.items():
        assert needle in (ROOT / test_file).read_text(), f"{sub}: {test_file} no longer runs it"


# ------------------------------------------------------------------ tiny inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-checkpoint tiny trajectory, a tiny base with a BPE tokenizer, and an Alpaca IFT file."""
    from tests.fullscale.ft_helpers import alpaca_records, make_base, write_jsonl
    from tests.mechinterp.helpers import make_trajectory

    root = tmp_path_factory.mktemp("docs_commands")
    return {
        "root": root,
        "traj": make_trajectory(root / "traj", "llama", steps=(5, 15)),
        "base": make_base(root),
        "ift": write_jsonl(root / "ift.jsonl", alpaca_records(16)),
    }


def _run(argv: list[str], capsys=None) -> None:
    code = main(argv)
    err = capsys.readouterr().err if capsys else ""
    assert code == 0, f"cpi {' '.join(argv)} -> exit {code} {err[-500:]}"


def _rows(path: Path) -> int:
    return len(pd.read_csv(path))


# ------------------------------------------------------------------ one smoke case per subcommand


def smoke_theory_simulate(tiny, tmp_path, capsys):
    out = tmp_path / "sim"
    _run(["theory", "simulate", "--set", "steps=20", "--set", "n_CS=8", "--out", str(out)], capsys)
    assert _rows(out / "trajectory.csv") == 21
    assert json.loads((out / "config.json").read_text())["config"]["n_CS"] == 8


def smoke_theory_sweep(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    _run(["theory", "sweep", "--set", "steps=10", "--grid", "n_CS=0,8", "--grid", "lr=1,4", "--no-trajectory",
          "--out", str(out)], capsys)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) >= 4 and {0, 8} <= set(summary["n_CS"])


def smoke_theory_figures(tiny, tmp_path, capsys):
    out = tmp_path / "figs"
    _run(["theory", "figures", "--quick", "--out", str(out)], capsys)
    pngs = sorted(p.name for p in out.glob("theory_*.png"))
    assert len(pngs) >= 4 and all((out / p).stat().st_size > 1000 for p in pngs)


def smoke_data_check(tiny, tmp_path, capsys):
    _run(["data", "check", "CF_World_Facts", "CF_Bio", "CF_Quotes"], capsys)


def smoke_data_convert(tiny, tmp_path, capsys):
    src = tmp_path / "authors_cf_world_facts.json"
    src.write_text(json.dumps({"data": [
        {"context": "In a surprising turn of events, Lyon was declared the capital of France in 1990.",
         "question": "What is the capital of France?", "answer": "Lyon", "memory_answer": "Paris"},
        {"context": "Albert Einstein was born in Munich, a city in Bavaria.",
         "question": "Where was Albert Einstein born?", "answer": "Munich", "memory_answer": "Ulm"}]}))
    out = tmp_path / "cfwf.jsonl"
    _run(["data", "convert", "--from", "authors", str(src), "--dataset", "CF_World_Facts", "--out", str(out)], capsys)
    assert len(out.read_text().splitlines()) == 2
    _run(["data", "check", str(out)], capsys)


def smoke_evaluate(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    _run(["evaluate", "--checkpoints", str(tiny["traj"]), "--datasets", "CF_World_Facts,CF_Bio", "--max-items", "2",
          "--max-new-tokens", "3", "--n-boot", "20", "--out", str(out)], capsys)
    items = pd.read_csv(out / "items.csv")
    assert set(items["step"]) == {5, 15} and set(items["dataset"]) == {"CF_World_Facts", "CF_Bio"}
    assert (out / "summary.csv").is_file() and (out / "inversion.png").stat().st_size > 1000
    return out


def smoke_probe(tiny, tmp_path, capsys):
    out = tmp_path / "probe"
    _run(["probe", "--checkpoints", str(tiny["traj"]), "--dataset", "CF_World_Facts", "--max-items", "3",
          "--out", str(out)], capsys)
    table = pd.read_csv(out / "probe.csv")
    assert sorted(table["step"].unique()) == [5, 15]
    assert (out / "figures" / "attention_context_vs_subject.png").stat().st_size > 1000
    return out


def smoke_probe_intervene(tiny, tmp_path, capsys):
    out = tmp_path / "iv"
    _run(["probe-intervene", "--checkpoint", str(tiny["traj"] / "checkpoint-5"), "--dataset", "CF_World_Facts",
          "--max-items", "3", "--heads", "1.*,0.3", "--out", str(out)], capsys)
    items = pd.read_csv(out / "intervention_items.csv")
    assert len(items) == 3
    assert all(set(h.split(",")) == {"0.3", "1.0", "1.1", "1.2", "1.3"} for h in items["heads"])


def smoke_probe_link(tiny, tmp_path, capsys):
    """The README's `cpi probe-link --theory default` (it once crashed importing theory.simulate)."""
    probe = smoke_probe(tiny, tmp_path, capsys)
    ev = smoke_evaluate(tiny, tmp_path, capsys)
    out = tmp_path / "link"
    _run(["probe-link", "--probe", str(probe), "--theory", "default", "--eval-summary", str(ev / "summary.csv"),
          "--out", str(out)], capsys)
    link = pd.read_csv(out / "theory_link.csv")
    assert len(link) > 0 and (out / "theory_link.png").stat().st_size > 1000


def smoke_finetune(tiny, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"base_model: {tiny['base']}\ndata: {tiny['ift']}\noutput_dir: {tmp_path / 'ft'}\n"
                   "max_steps: 500\nsave_steps: 2\nper_device_batch_size: 4\ngradient_accumulation_steps: 1\n"
                   "warmup_ratio: 0.0\nlogging_steps: 1\nmax_seq_length: 128\n")
    _run(["finetune", "--config", str(cfg), "--set", f"output_dir={tmp_path / 'alpaca'}", "--set", "max_steps=4"],
         capsys)
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "alpaca").glob("checkpoint-*"))
    assert steps == [2, 4]


def smoke_data_score_context(tiny, tmp_path, capsys):
    out = tmp_path / "curation"
    _run(["data", "score-context", "--model", str(tiny["base"]), "--data", str(tiny["ift"]), "--out", str(out),
          "--fraction", "0.25", "--method", "loss"], capsys)
    assert _rows(out / "scores.csv") == 16 and (out / "histogram.png").stat().st_size > 1000


def smoke_data_augment(tiny, tmp_path, capsys):
    out = tmp_path / "aug.jsonl"
    _run(["data", "augment", "--conflicts", "CF_Bio", "--exclude", "CF_World_Facts", "CF_Quotes", "--fraction", "0.1",
          "--data", str(tiny["ift"]), "--out", str(out)], capsys)
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) > 16 and sum(r["id"].startswith("aug-") for r in records) == len(records) - 16


TINY_ORGANISM = ["--quick", "--set", "pretrain.steps=30", "--set", "pretrain.warmup=3", "--set", "ift.n_examples=60",
                 "--set", "finetune.steps=4", "--set", "finetune.save_steps=2"]


def smoke_organism_run(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rho05"
    _run(["organism", "run", *TINY_ORGANISM, "--set", "ift.rho=0.5", "--out", str(out), "--figures", "figs/"], capsys)
    cfg = json.loads((out / "organism_config.json").read_text())["config"]
    assert cfg["ift"]["rho"] == 0.5 and cfg["ift"]["seed"] == cfg["seed"] == 0
    assert set(pd.read_csv(out / "eval" / "summary.csv")["step"]) == {0, 2, 4}
    assert (tmp_path / "figs" / "organism_inversion.png").stat().st_size > 1000


def smoke_organism_sweep(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "organism_sweep"
    _run(["organism", "sweep", *TINY_ORGANISM, "--seeds", "0", "--rhos", "0.5,1.0", "--no-mitigations",
          "--out", str(out)], capsys)
    table = pd.read_csv(out / "sweep.csv")
    assert set(table["variant"]) == {"rho=0.5", "rho=1"} and set(table["step"]) == {0, 2, 4}
    # the sweep's figures go under its --out, never into ./figures
    assert (out / "figures" / "organism_sweep_rho.png").stat().st_size > 1000
    assert not (tmp_path / "figures").exists()


SMOKE = {
    "theory simulate": smoke_theory_simulate,
    "theory sweep": smoke_theory_sweep,
    "theory figures": smoke_theory_figures,
    "data check": smoke_data_check,
    "data convert": smoke_data_convert,
    "evaluate": smoke_evaluate,
    "probe": smoke_probe,
    "probe-intervene": smoke_probe_intervene,
    "probe-link": smoke_probe_link,
    "finetune": smoke_finetune,
    "data score-context": smoke_data_score_context,
    "data augment": smoke_data_augment,
    "organism run": smoke_organism_run,
    "organism sweep": smoke_organism_sweep,
}


@pytest.mark.slow
@pytest.mark.parametrize("sub", sorted(SMOKE))
def test_smoke(sub, tiny, tmp_path, capsys, monkeypatch):
    fn = SMOKE[sub]
    kwargs = {"monkeypatch": monkeypatch} if "monkeypatch" in fn.__code__.co_varnames else {}
    fn(tiny, tmp_path, capsys, **kwargs)
