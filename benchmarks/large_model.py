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
  against a full load + merge + first forward of the same checkpoint (``load_checkpoint``: the path before
  swapping); with ``--swap-previous 1`` (default) also the previous implementation of the swap (whole-weight
  float32 deltas, :func:`_previous_apply`), timed in the same process in alternating order, and both
  outputs compared bitwise (with each other and with the merged checkpoint).

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
    """Records every forward (or generate) call into a HF model: the replayable bare baseline.

    A call given a KV cache (a ``transformers`` ``Cache``, as the shared-prefix log-prob scorer passes the
    prompt's cache to the answers' forward, keyword ``cache``) is recorded with a copy of the cache as it was
    before the call, and replayed on a fresh copy made before the timer starts: the forward extends the
    cache in place (replaying the recorded object itself, as the first version of this script did, ran each
    replay on a cache already holding the answers, longer with every repeat).
    The outputs (logits, or generated ids) of the recording call are kept, and :meth:`replay` says
    whether the replay gave the same ones (``torch.equal``).
    """

    def __init__(self, model, generate: bool) -> None:
        self.model, self.calls, self.outputs, self.active = model, [], [], True
        if generate:
            original = model.generate

            def recording(*a, **kw):
                if self.active:
                    self.calls.append(("generate", _detach(a), _detach(kw)))
                    self.active = False
                    try:
                        out = original(*a, **kw)
                    finally:
                        self.active = True
                    self.outputs.append(_output(out))
                    return out
                return original(*a, **kw)

            model.generate = recording
            self.original_generate = original
        else:
            self.handles = [model.register_forward_pre_hook(self._hook, with_kwargs=True),
                            model.register_forward_hook(self._out_hook)]

    def _hook(self, module, args, kwargs):
        if self.active:
            self.calls.append(("forward", _detach(args), _detach(kwargs)))

    def _out_hook(self, module, args, out):
        if self.active:
            self.outputs.append(_output(out))

    def stop(self) -> None:
        self.active = False

    def prepared(self) -> list:
        """Fresh copies of the recorded calls' caches (outside the timed replay)."""
        import copy

        return [(kind, a, {k: copy.deepcopy(v) if _is_cache(v) else v for k, v in kw.items()})
                for kind, a, kw in self.calls]

    def replay(self, calls: list) -> list:
        """Replays ``calls`` (from :meth:`prepared`); returns their outputs."""
        import torch

        outs = []
        with torch.inference_mode():
            for kind, a, kw in calls:
                if kind == "generate":
                    outs.append(self.original_generate(*a, **kw))
                else:
                    outs.append(self.model(*a, **kw))
        return outs

    def same_outputs(self, outs: list) -> bool:
        import torch

        return len(outs) == len(self.outputs) and all(
            torch.equal(_output(o), ref) for o, ref in zip(outs, self.outputs))


def _output(out):
    """The logits of a forward's output, the ids of a ``generate`` output (a copy)."""
    if hasattr(out, "logits"):
        return out.logits.detach().clone()
    return getattr(out, "sequences", out).detach().clone()


def _detach(obj):
    import copy

    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_detach(o) for o in obj)
    if isinstance(obj, list):
        return [_detach(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return copy.deepcopy(obj) if _is_cache(obj) else obj


def _is_cache(obj) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(obj, Cache)


def _majflt() -> int:
    """Major page faults of this process so far (a read from disk: a mapped weight page not in the cache)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


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
    cmd_times, rep_times, same, faults = [], [], [], {"replay": 0, "command": 0}
    for _ in range(args.repeats):  # paired: replay, then the command, each after the other is warm
        calls = rec.prepared()
        f0, t0 = _majflt(), time.perf_counter()
        outs = rec.replay(calls)
        rep_times.append(time.perf_counter() - t0)
        faults["replay"] += _majflt() - f0
        same.append(rec.same_outputs(outs))
        del outs, calls
        f0, t0 = _majflt(), time.perf_counter()
        command()
        cmd_times.append(time.perf_counter() - t0)
        faults["command"] += _majflt() - f0
    res.update(calls=len(rec.calls), replay_same_outputs=all(same), major_faults=faults,
               command_s=statistics.median(cmd_times), bare_s=statistics.median(rep_times),
               command_per_item_s=statistics.median(cmd_times) / len(items),
               bare_per_item_s=statistics.median(rep_times) / len(items),
               ratios=[round(c / b, 3) for c, b in zip(cmd_times, rep_times)])
    res["ratio"] = res["command_s"] / res["bare_s"]
    res["peak_gib"] = _peak(args.device) / (1 << 30)
    res["peak_over_weights"] = res["peak_gib"] / res["weight_gib"]
    return res


def _previous_apply(swapper, ckpt, plan) -> None:
    """The swap before row chunks (commit 59e5232), the baseline of ``swap``: per weight a full float32
    delta ``mm(B, A) * scaling``, plus the whole base tensor read through a mapping of its file, copied
    into the weight; the restore of weights only the previous adapter touched by whole-tensor copies."""
    from safetensors import safe_open

    import torch

    targets = {m + ".weight" for m in plan.modules}
    with torch.no_grad():
        for pname in sorted(swapper.touched - targets):
            with safe_open(str(swapper.files[pname]), framework="pt") as fh:
                swapper.params[pname].copy_(fh.get_tensor(pname))
    swapper.touched = set()
    handles = {}
    try:
        with torch.no_grad(), safe_open(str(plan.folder / "adapter_model.safetensors"), framework="pt") as fh:
            for module, prefix in plan.modules.items():
                a = fh.get_tensor(prefix + ".lora_A.weight")
                b = fh.get_tensor(prefix + ".lora_B.weight")
                pname = module + ".weight"
                w, f = swapper.params[pname], swapper.files[pname]
                if f not in handles:
                    handles[f] = safe_open(str(f), framework="pt").__enter__()
                dev = w.device
                delta = torch.mm(b.to(dev, torch.float32), a.to(dev, torch.float32)).mul_(plan.scaling)
                delta.add_(handles[f].get_tensor(pname).to(dev, w.dtype))
                w.copy_(delta)
                swapper.touched.add(pname)
                del delta
    finally:
        for h in handles.values():
            h.__exit__(None, None, None)


def _swap(args: argparse.Namespace, res: dict) -> dict:
    """Per LoRA checkpoint: the swap (and, with ``--swap-previous``, the previous implementation, the two in
    alternating order) against a full load + merge + first forward; every output compared bitwise."""
    import gc

    import torch

    from cpi.fingerprint import checkpoint_fingerprint
    from fullscale.adapters import SwappedBase, adapter_plan
    from fullscale.checkpoints import discover_checkpoints, load_checkpoint

    ckpts = discover_checkpoints(args.lora or f"{args.model}-lora")
    x = torch.tensor([[1] + [100] * 15])
    merged_s, merged_first, refs = [], [], {}
    for ck in ckpts[: args.merge_checkpoints]:  # the path before swapping: a full load + merge per checkpoint
        t0 = time.perf_counter()
        model, tok = load_checkpoint(ck, device=args.device, dtype=args.dtype)
        merged_s.append(time.perf_counter() - t0)
        with torch.inference_mode():
            refs[ck.name] = model(input_ids=x.to(model.device)).logits[0, -1].float()
        merged_first.append(time.perf_counter() - t0)
        del model
        gc.collect()
    res["merge_peak_gib"] = _peak(args.device) / (1 << 30)
    t0 = time.perf_counter()
    base_plan = adapter_plan(ckpts[0])
    model, tok = load_checkpoint(base_plan.base, device=args.device, dtype=args.dtype)
    swapper = SwappedBase(model, tok, base_plan.base, checkpoint_fingerprint(base_plan.base))
    res["base_load_s"] = time.perf_counter() - t0
    impls = {"chunked": swapper.apply}
    if args.swap_previous:
        impls["previous"] = lambda ck, plan: _previous_apply(swapper, ck, plan)
    times: dict[str, list[float]] = {k: [] for k in impls}
    faults: dict[str, int] = {k: 0 for k in impls}
    equal_merged, equal_previous = [], []
    for i, ck in enumerate(ckpts):
        plan = adapter_plan(ck)
        order = list(impls) if i % 2 else list(reversed(impls))  # the previous one first on even checkpoints
        outs = {}
        for name in order:
            f0, t0 = _majflt(), time.perf_counter()
            impls[name](ck, plan)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
            faults[name] += _majflt() - f0
            with torch.inference_mode():
                outs[name] = model(input_ids=x.to(model.device)).logits[0, -1].float()
        if ck.name in refs:
            equal_merged.append(bool(torch.equal(outs["chunked"], refs[ck.name])))
        if "previous" in outs:
            equal_previous.append(bool(torch.equal(outs["chunked"], outs["previous"])))
    full = min(merged_first)
    res.update(checkpoints=len(ckpts), merge_load_s=merged_s, merge_load_and_forward_s=merged_first,
               swap_s=times["chunked"], swap_over_full_load=statistics.median(times["chunked"]) / full,
               swapped_equals_merged=equal_merged, major_faults=faults, peak_gib=_peak(args.device) / (1 << 30))
    if args.swap_previous:
        res.update(previous_swap_s=times["previous"],
                   previous_over_full_load=statistics.median(times["previous"]) / full,
                   chunked_over_previous=[round(c / p, 3) for c, p in zip(times["chunked"], times["previous"])],
                   chunked_equals_previous=equal_previous)
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
        t0, load_start = time.perf_counter(), os.getloadavg()[0]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(json.dumps({"what": what, "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - t0
        row["load_average"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]  # at the start, at the end
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
    m.add_argument("--swap-previous", type=int, default=1, choices=(0, 1),
                   help="swap: also time the previous implementation (paired, alternating order); 0 for the "
                        "peak memory of the current one alone")
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
