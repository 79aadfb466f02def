"""Shared helpers for the evaluation tests (prompts, checkpoints, scoring, evaluate).

``item(...)`` builds a :class:`fullscale.conflicts.ConflictItem`.
"""

from __future__ import annotations


from fullscale.conflicts import ConflictItem


def item(id="w1", dataset="CF_Test", category="capital", context="In this story the capital of Germany is Lyon.",
         question="What is the capital of Germany?", context_answer="Lyon", parametric_answer="Berlin", **kw):
    return ConflictItem(id=id, dataset=dataset, category=category, context=context, question=question,
                        context_answer=context_answer, parametric_answer=parametric_answer, **kw)


def quote_item(id="q1", dataset="CF_Quotes"):
    return item(id=id, dataset=dataset, category="quote", context="Write a quote that ends in the word 'heavy':",
                question="Absence makes the heart grow", context_answer="heavy", parametric_answer="fonder",
                task="quote")


def sample_items(n=6, dataset="CF_Test"):
    facts = [("Germany", "Lyon", "Berlin"), ("France", "Rome", "Paris"), ("Italy", "Paris", "Rome"),
             ("Poland", "Ulm", "Warsaw"), ("Spain", "Warsaw", "Madrid"), ("Austria", "Madrid", "Vienna")]
    out = []
    for i in range(n):
        country, cf, par = facts[i % len(facts)]
        out.append(item(id=f"{dataset}-{i}", dataset=dataset, category="capital" if i % 2 == 0 else "city",
                        context=f"In this story the capital of {country} is {cf}. Everyone in {cf} agrees.",
                        question=f"What is the capital of {country}?", context_answer=cf, parametric_answer=par))
    return out


def one_torch_thread():
    """Generator for a module-scoped fixture: tiny models run far faster on one thread on a busy 2-core
    machine (thread hand-offs dominate a d_model=32 matmul); the previous setting is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
