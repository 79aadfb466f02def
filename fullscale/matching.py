"""Answer matching: normalised, alias-aware, whole-word containment, and how a quote ends.

Both the generated text and the answers are normalised (:func:`normalize_text`: Unicode NFKD,
accents dropped, lower case, punctuation -> space, whitespace collapsed) and an answer counts only
as a run of *whole words*: ``"Rome"`` is not found in ``"Romeo"``. When a match of one side lies
inside a longer match of the other side (context ``"York"``, parametric ``"New York"``, output
``"New York"``) only the longer one counts (:func:`classify_output`).

Quote items (the Memo Trap task) are scored by how the continuation *ends the quote*
(:func:`classify_ending`: its first words after a short preamble or an echoed quote prefix), not by
whether the forced word occurs anywhere in a rambling continuation.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Iterable, Sequence

OUTCOMES = ("context", "parametric", "both", "neither")
DEFAULT_STOPS = ("\n\n", "###", "\nQuestion:", "\nBackground:", "<|")

# ---------------------------------------------------------------------------
# 1. normalised, alias-aware, word-boundary containment


def normalize_text(text: str) -> str:
    """Lower-case, accent-free, punctuation-free text with single spaces between words.

    ``"  São-Paulo!"`` -> ``"sao paulo"``. Used on both the output and the
    answers, so matching ignores case, accents and punctuation.
    """
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.lower()
    text = "".join(ch if (ch.isalnum() or ch.isspace()) else " " for ch in text)
    return " ".join(text.split())


def _word_matches(words: Sequence[str], answer_words: Sequence[str]) -> list[tuple[int, int]]:
    n = len(answer_words)
    if n == 0:
        return []
    return [(i, i + n) for i in range(len(words) - n + 1) if list(words[i:i + n]) == list(answer_words)]


def find_answer(output: str, answers: Iterable[str]) -> list[tuple[int, int, str]]:
    """Every occurrence ``(start_word, end_word, answer)`` of any accepted answer as whole words of ``output``."""
    words = normalize_text(output).split()
    found = []
    for ans in answers:
        aw = normalize_text(ans).split()
        found.extend((a, b, ans) for a, b in _word_matches(words, aw))
    return found


def match_answer(output: str, answers: Iterable[str] | str) -> bool:
    """True if any accepted answer occurs in ``output`` as whole words (normalised)."""
    if isinstance(answers, str):
        answers = (answers,)
    return bool(find_answer(output, answers))


def _strictly_inside(m: tuple[int, int, str], others: Sequence[tuple[int, int, str]]) -> bool:
    return any(o[0] <= m[0] and m[1] <= o[1] and (o[1] - o[0]) > (m[1] - m[0]) for o in others)


def classify_output(output: str, context_answers: Sequence[str], parametric_answers: Sequence[str]) -> dict[str, Any]:
    """Match both answer sets in ``output``; returns ``cf_correct``, ``param_correct``, ``outcome``, ``matched_*``.

    A match of one side that lies strictly inside a longer match of the other
    side is dropped (the output names the longer answer, not the shorter).
    """
    ctx = find_answer(output, context_answers)
    par = find_answer(output, parametric_answers)
    ctx_kept = [m for m in ctx if not _strictly_inside(m, par)]
    par_kept = [m for m in par if not _strictly_inside(m, ctx)]
    cf, pa = bool(ctx_kept), bool(par_kept)
    outcome = "both" if cf and pa else "context" if cf else "parametric" if pa else "neither"
    return {
        "cf_correct": cf,
        "param_correct": pa,
        "outcome": outcome,
        "matched_context": "|".join(sorted({m[2] for m in ctx_kept})),
        "matched_parametric": "|".join(sorted({m[2] for m in par_kept})),
    }


def cut_at_stops(text: str, stops: Sequence[str] = DEFAULT_STOPS) -> str:
    """``text`` up to the first stop string that is not at its very start (leading whitespace ignored)."""
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    cut = len(stripped)
    for s in stops:
        i = stripped.find(s, 1)
        if i != -1:
            cut = min(cut, i)
    return text[: offset + cut].strip()



# ---------------------------------------------------------------------------
# how a continuation ends a quote

#: A chat preamble before the quote itself ("Sure! Here is the quote:") is at most this many words.
PREAMBLE_WORDS = 12


def _starts_with(words: Sequence[str], answers: Iterable[str]) -> list[str]:
    out = []
    for ans in answers:
        aw = normalize_text(ans).split()
        if aw and list(words[: len(aw)]) == aw:
            out.append(ans)
    return out


def _ending_candidates(output: str, prefix: str) -> list[list[str]]:
    """Word lists the ending may start: the output itself, after a preamble, after an echoed quote prefix."""
    words = normalize_text(output).split()
    out = [words]
    head, colon, rest = output.partition(":")
    if colon and "\n" not in head.strip() and len(normalize_text(head).split()) <= PREAMBLE_WORDS:
        out.append(normalize_text(rest).split())
    pw = normalize_text(prefix).split()
    if pw:
        for cand in list(out):
            for i in range(min(len(cand) - len(pw), PREAMBLE_WORDS) + 1):
                if cand[i:i + len(pw)] == pw:
                    out.append(cand[i + len(pw):])
                    break
    return out


def classify_ending(output: str, prefix: str, context_answers: Sequence[str],
                    parametric_answers: Sequence[str]) -> dict[str, Any]:
    """Score a quote continuation by how it *ends the quote*: its first word(s), not containment.

    The continuation is normalised (:func:`normalize_text`: punctuation and quote marks gone) and
    its first words are compared with every accepted form of the forced (context) and the memorised
    (parametric) ending. If neither starts it, two readings are tried in turn: after a short
    preamble ending in a colon (at most :data:`PREAMBLE_WORDS` words, "Sure! Here it is:") and after
    the quote prefix echoed within the first words ("Absence makes the heart grow fonder" for the
    prefix "Absence makes the heart grow"). Returns ``cf_correct``, ``param_correct``, ``outcome``,
    ``matched_context``, ``matched_parametric`` (as :func:`classify_output`) and ``ending`` (the
    words taken as the ending: the matched answer's words, else the first word read).
    """
    candidates = _ending_candidates(output, prefix)
    for words in candidates:
        ctx, par = _starts_with(words, context_answers), _starts_with(words, parametric_answers)
        if ctx or par:
            n = max(len(normalize_text(a).split()) for a in (*ctx, *par))
            cf, pa = bool(ctx), bool(par)
            return {"cf_correct": cf, "param_correct": pa,
                    "outcome": "both" if cf and pa else "context" if cf else "parametric",
                    "matched_context": "|".join(sorted(ctx)), "matched_parametric": "|".join(sorted(par)),
                    "ending": " ".join(words[:n])}
    last = candidates[-1]
    return {"cf_correct": False, "param_correct": False, "outcome": "neither", "matched_context": "",
            "matched_parametric": "", "ending": last[0] if last else ""}
