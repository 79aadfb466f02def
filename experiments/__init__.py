"""Experiments built on every package: ``theory``, ``fullscale`` and ``mechinterp``.

``experiments.organism`` is the model organism (``cpi run``, ``cpi organism ...``): a small
Llama-style model pretrained on a synthetic world, instruction-finetuned, evaluated and probed
with the same code a user runs on a 7B checkpoint. This package sits on top of the dependency
graph ``cpi <- theory, fullscale <- mechinterp <- experiments``; nothing below imports it.
"""

__all__ = ["organism"]
