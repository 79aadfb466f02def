"""7B-shaped checkpoints: write them, then measure each model command's time and memory against a bare forward.

Write (random weights, bf16, sharded, a real tokenizer; never a float32 copy; see
:mod:`fullscale.random_checkpoint`) a base model and a 4-step LoRA trajectory over it::

    python benchmarks/large_model.py write --shape llama2-7b --out /tmp/large/llama2-7b

Measure (each command in a fresh worker process, so its peak memory is its own)::

    python benchmarks/large_model.py measure --model /tmp/large/llama2-7b --items 4 --batch 2 \\
        --what load,probe,logprob,generate,knowledge,swap [--device cpu|cuda] [--dtype bfloat16]

- ``load``: :func:`fullscale.checkpoints.load_checkpoint` (memory-mapped safetensors), then one forward that
  touches every weight; peak resident memory / weight bytes.
- ``probe``, ``logprob``, ``generate``, ``knowledge``: the package's function for the command
  (``mechinterp.probe.probe_items`` through the TransformerLens bridge, ``fullscale.scoring.score_items`` with
  one mode, ``fullscale.knowledge.known_facts``) is run once while every forward call it makes into the
  Hugging Face model is recorded (inputs and keyword arguments; for generation the ``generate`` calls);
  the **bare baseline replays exactly those calls** on the same model (``model(**kwargs)`` /
  ``model.generate(**kwargs)`` under ``torch.inference_mode``). Ratio = command time / replay time, paired in
  one process: the first (recording) call of the command is its warm-up, then ``--repeats`` pairs of
  (replay, command), each timed.
- ``swap``: per LoRA checkpoint, the time to apply an adapter in place (:class:`fullscale.adapters.SwappedBase`)
  against a full load + merge of the same checkpoint (``load_checkpoint``: the previous path).

Peak memory: ``ru_maxrss`` of the worker on the CPU (memory-mapped weight pages that were touched count);
``torch.cuda.max_memory_allocated`` on a GPU. Prints one JSON line per command and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WHAT = ("load", "probe", "logprob", "generate", "knowledge", "swap")


def _write(args: argparse.Namespace) -> None:
    from fullscale.random_checkpoint import write_random_checkpoint, write_random_lora_trajectory

    t0 = time.perf_counter()
    base = write_random_checkpoint(args.out, args.shape, shard_bytes=int(args.shard_gb * (1 << 30)))
    steps = tuple(int(s) for s in args.lora_steps.split(",") if s)
    if steps:
        write_random_lora_trajectory(f"{args.out}-lora", base, steps=steps)
    print(json.dumps({"shape": args.shape, "out": str(base), "seconds": round(time.perf_counter() - t0, 1),
                      "peak_rss_gib": round(_peak_rss() / (1 << 30), 2)}))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return _peak_rss()


class _Recorder:
    """Records every forward (or generate) call into a HF model: the replayable bare baseline."""

    def __init__(self, model, generate: bool) -> None:
        self.model, self.calls, self.active = model, [], True
        if generate:
            original = model.generate

            def recording(*a, **kw):
                if self.active:
                    self.calls.append(("generate", _detach(a), _detach(kw)))
                    self.active = False
                    try:
                        return original(*a, **kw)
                    finally:
                        self.active = True
                return original(*a, **kw)

            model.generate = recording
            self.original_generate = original
        else:
            self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if self.active:
            self.calls.append(("forward", _detach(args), _detach(kwargs)))

    def stop(self) -> None:
        self.active = False

    def replay(self) -> None:
        import torch

        with torch.inference_mode():
            for kind, a, kw in self.calls:
                if kind == "generate":
                    self.original_generate(*a, **kw)
                else:
                    self.model(*a, **kw)


def _detach(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_detach(o) for o in obj)
    if isinstance(obj, list):
        return [_detach(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items() if k not in ("past_key_values",) or v is None}
    return obj


def _worker(args: argparse.Namespace) -> dict:
    import torch

    from fullscale.checkpoints import load_checkpoint
    from fullscale.conflicts import load_conflicts
    from fullscale.memory import weight_bytes

    torch.set_num_threads(args.threads)
    what, folder = args.worker, Path(args.model)
    res: dict = {"what": what, "model": folder.name, "device": args.device, "dtype": args.dtype,
                 "threads": args.threads, "items": args.items, "batch": args.batch}
    itemsize = {"bfloat16": 2, "float16": 2, "float32": 4}[args.dtype]
    res["weight_gib"] = weight_bytes(folder, itemsize) / (1 << 30)
    items = list(load_conflicts(args.dataset))[: args.items]
    if what == "swap":
        return _swap(args, res)
    t0 = time.perf_counter()
    model, tok = load_checkpoint(folder, device=args.device, dtype=args.dtype)
    res["load_s"] = time.perf_counter() - t0
    if what == "probe":
        from mechinterp.load import bridge_from_model

        bridge = bridge_from_model(model, tok, name=str(folder))
    warm = torch.tensor([[tok.bos_token_id or 1] + [100] * 15], device=model.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(input_ids=warm)  # touches every weight page once (read from disk if not cached)
    res["first_forward_s"] = time.perf_counter() - t0
    if what == "load":
        res["peak_gib"] = _peak(args.device) / (1 << 30)
        res["peak_over_weights"] = res["peak_gib"] / res["weight_gib"]
        return res

    if what == "probe":
        from mechinterp.probe import probe_items

        def command():
            probe_items(bridge, tok, items, batch_size=args.batch)
    elif what in ("logprob", "generate"):
        from fullscale.scoring import score_items

        def command():
            score_items(model, tok, items, modes=(what,), batch_size=args.batch, max_new_tokens=args.max_new_tokens)
    elif what == "knowledge":
        from fullscale.knowledge import known_facts

        def command():
            known_facts(model, tok, items, n_candidates=args.candidates, batch_size=args.batch)
    else:
        raise SystemExit(f"unknown --what {what}")
    rec = _Recorder(model, generate=what == "generate")
    t0 = time.perf_counter()
    command()  # records the calls; also the warm-up of the command's own shapes (reported, not compared)
    res["first_call_s"] = time.perf_counter() - t0
    rec.stop()
    cmd_times, rep_times = [], []
    for _ in range(args.repeats):  # paired: replay, then the command, each after the other is warm
        t0 = time.perf_counter()
        rec.replay()
        rep_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        command()
        cmd_times.append(time.perf_counter() - t0)
    res.update(calls=len(rec.calls), command_s=statistics.median(cmd_times), bare_s=statistics.median(rep_times),
               command_per_item_s=statistics.median(cmd_times) / len(items),
               bare_per_item_s=statistics.median(rep_times) / len(items),
               ratios=[round(c / b, 3) for c, b in zip(cmd_times, rep_times)])
    res["ratio"] = res["command_s"] / res["bare_s"]
    res["peak_gib"] = _peak(args.device) / (1 << 30)
    res["peak_over_weights"] = res["peak_gib"] / res["weight_gib"]
    return res


def _swap(args: argparse.Namespace, res: dict) -> dict:
    import gc

    import torch

    from cpi.fingerprint import checkpoint_fingerprint
    from fullscale.adapters import SwappedBase, adapter_plan
    from fullscale.checkpoints import discover_checkpoints, load_checkpoint

    ckpts = discover_checkpoints(args.lora or f"{args.model}-lora")
    x = torch.tensor([[1] + [100] * 15])
    merged_s, merged_first = [], []
    for ck in ckpts[: args.merge_checkpoints]:  # the previous path: a full load + merge per checkpoint
        t0 = time.perf_counter()
        model, tok = load_checkpoint(ck, device=args.device, dtype=args.dtype)
        merged_s.append(time.perf_counter() - t0)
        with torch.inference_mode():
            ref = model(input_ids=x.to(model.device)).logits[0, -1].float()
        merged_first.append(time.perf_counter() - t0)
        del model
        gc.collect()
    res["merge_peak_gib"] = _peak(args.device) / (1 << 30)
    t0 = time.perf_counter()
    base_plan = adapter_plan(ckpts[0])
    model, tok = load_checkpoint(base_plan.base, device=args.device, dtype=args.dtype)
    swapper = SwappedBase(model, tok, base_plan.base, checkpoint_fingerprint(base_plan.base))
    res["base_load_s"] = time.perf_counter() - t0
    swap_s = []
    for ck in ckpts:
        t0 = time.perf_counter()
        swapper.apply(ck, adapter_plan(ck))
        swap_s.append(time.perf_counter() - t0)
        with torch.inference_mode():
            out = model(input_ids=x.to(model.device)).logits[0, -1].float()
        if ck == ckpts[args.merge_checkpoints - 1]:
            res["last_merged_equals_swapped"] = bool(torch.equal(out, ref))
    res.update(checkpoints=len(ckpts), merge_load_s=merged_s, merge_load_and_forward_s=merged_first, swap_s=swap_s,
               swap_over_full_load=statistics.median(swap_s) / min(merged_first),
               peak_gib=_peak(args.device) / (1 << 30))
    res["peak_over_weights"] = res["peak_gib"] / res["weight_gib"]
    return res


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


def _wait_for_memory(gib: float, timeout_s: float) -> bool:
    """On a shared machine: wait until ``gib`` GiB are available (True), or give up after ``timeout_s``."""
    t0 = time.monotonic()
    while _available_gib() < gib:
        if time.monotonic() - t0 > timeout_s:
            return False
        time.sleep(15)
    return True


def _measure(args: argparse.Namespace) -> None:
    rows = []
    for what in args.what.split(","):
        if args.min_available_gib and not _wait_for_memory(args.min_available_gib, args.wait_s):
            print(json.dumps({"what": what, "skipped": f"less than {args.min_available_gib} GiB available for "
                                                      f"{args.wait_s} s"}), flush=True)
            continue
        cmd = [sys.executable, __file__, "measure", "--worker", what] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("func", "worker", "what", "min_available_gib", "wait_s", "log") and v is not None]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(json.dumps({"what": what, "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - t0
        row["load_average"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.log:
        with open(args.log, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(required=True)
    w = sub.add_parser("write")
    w.add_argument("--shape", default="llama2-7b")
    w.add_argument("--out", required=True)
    w.add_argument("--shard-gb", type=float, default=2.0)
    w.add_argument("--lora-steps", default="50,100,150,200")
    w.set_defaults(func=_write)
    m = sub.add_parser("measure")
    m.add_argument("--model", required=True)
    m.add_argument("--lora", default=None, help="LoRA trajectory folder (default: <model>-lora)")
    m.add_argument("--what", default=",".join(WHAT))
    m.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    m.add_argument("--dataset", default="CF_World_Facts")
    m.add_argument("--items", type=int, default=4)
    m.add_argument("--batch", type=int, default=2)
    m.add_argument("--max-new-tokens", type=int, default=8)
    m.add_argument("--candidates", type=int, default=4)
    m.add_argument("--repeats", type=int, default=1)
    m.add_argument("--merge-checkpoints", type=int, default=2)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", default="bfloat16")
    m.add_argument("--log", default=None)
    m.add_argument("--min-available-gib", type=float, default=0.0,
                   help="start each command only once this much memory is available (shared machines)")
    m.add_argument("--wait-s", type=float, default=1800.0)
    m.set_defaults(func=_measure)
    args = ap.parse_args()
    if getattr(args, "worker", None):
        print(json.dumps(_worker(args)))
        return
    args.func(args)


if __name__ == "__main__":
    main()
