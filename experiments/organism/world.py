"""A seeded synthetic world of facts and the word-level tokenizer that reads it.

The world has two kinds of subjects, each with its own relations:

* countries: ``capital`` (a city; one capital per country);
* people: ``birthplace`` (a city) and ``field`` (a field of work).

Subject names are pronounceable pseudo-words (``zarvok``, ``melbi``...), so no
fact can be known from English. Subjects come in two disjoint pools:

* **known** subjects, whose facts are stated in the pretraining corpus (the
  model's parametric knowledge);
* **new** subjects, never seen in pretraining, used for the context-critical
  instruction-finetuning examples (the context is the only way to answer).

Every surface form (the pretraining statements, the IFT questions and
contexts, the evaluation questions and contexts) comes from a separate pool
of templates, so the held-out counterfactual evaluation uses phrasings that
finetuning never saw. Everything is a pure function of :class:`WorldConfig`
(its ``seed`` included): the same config gives the same world, byte for byte.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, Tokenizer
from transformers import PreTrainedTokenizerFast

from cpi.config import Config, check_at_most, check_in_interval
from cpi.errors import ConfigError


#: relation -> (subject kind, object kind)
RELATIONS: dict[str, tuple[str, str]] = {
    "capital": ("country", "city"),
    "birthplace": ("person", "city"),
    "field": ("person", "field"),
}

FIELDS = (
    "physics", "chemistry", "biology", "medicine", "geology", "astronomy", "botany", "zoology",
    "economics", "history", "linguistics", "music", "painting", "sculpture", "poetry", "law",
    "architecture", "mathematics", "philosophy", "engineering",
)

# --- surface forms ---------------------------------------------------------------------------
# Pretraining statements: {s} subject, {o} object.
PRETRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": (
        "the capital of {s} is {o} .",
        "{s} has its capital in {o} .",
        "{o} is the capital of {s} .",
        "the capital city of {s} is {o} .",
        "in {s} , the seat of government is {o} .",
        "{s} is governed from its capital , {o} .",
    ),
    "birthplace": (
        "{s} was born in {o} .",
        "the birthplace of {s} is {o} .",
        "{s} , a native of {o} , grew up there .",
        "{o} is where {s} was born .",
        "{s} came into the world in {o} .",
        "born in {o} , {s} lived there as a child .",
    ),
    "field": (
        "{s} works in {o} .",
        "the field of {s} is {o} .",
        "{s} is known for work in {o} .",
        "{s} devoted a career to {o} .",
        "{o} is the field of {s} .",
        "{s} studied {o} for many years .",
    ),
}
# Question-answer documents of pretraining (distinct from the finetuning and evaluation phrasings).
PRETRAIN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "capital": ("q : capital of {s} ? a :",),
    "birthplace": ("q : birthplace of {s} ? a :",),
    "field": ("q : field of {s} ? a :",),
}
# Closed-book recall prompts (prefix ends right before the object).
RECALL_TEMPLATES: dict[str, str] = {
    "capital": "the capital of {s} is",
    "birthplace": "{s} was born in",
    "field": "{s} works in",
}
# Instruction-finetuning questions and contexts.
IFT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "capital": ("what is the capital of {s} ?", "which city is the capital of {s} ?"),
    "birthplace": ("where was {s} born ?", "what is the birthplace of {s} ?"),
    "field": ("what field does {s} work in ?", "what is the field of {s} ?"),
}
IFT_CONTEXTS: dict[str, tuple[str, ...]] = {
    "capital": (
        "{s} is a country . its capital is {o} .",
        "the government of {s} sits in {o} , the capital .",
        "travel guide : {s} . capital : {o} .",
    ),
    "birthplace": (
        "{s} is a person . {s} was born in {o} .",
        "records show that {s} was born in the city of {o} .",
        "profile : {s} . birthplace : {o} .",
    ),
    "field": (
        "{s} is a scholar . the field of {s} is {o} .",
        "colleagues say {s} spent a career in {o} .",
        "profile : {s} . field : {o} .",
    ),
}
# Held-out evaluation phrasings (never used in finetuning).
EVAL_QUESTIONS: dict[str, tuple[str, ...]] = {
    "capital": ("name the capital city of {s} .", "{s} has which city as its capital ?"),
    "birthplace": ("in which city was {s} born ?", "name the city where {s} was born ."),
    "field": ("in which field is {s} active ?", "name the field that {s} works in ."),
}
EVAL_CONTEXTS: dict[str, tuple[str, ...]] = {
    "capital": (
        "according to a new report , the capital of {s} is now {o} .",
        "an atlas entry reads : {s} , a nation whose capital is {o} .",
    ),
    "birthplace": (
        "a recent biography states that {s} was born in {o} .",
        "according to an archive , {s} was born in {o} long ago .",
    ),
    "field": (
        "a recent biography states that {s} works in {o} .",
        "according to an archive , {s} is active in {o} .",
    ),
}
# Words that instruction templates may use (so the word-level vocab covers them).
TEMPLATE_WORDS = (
    "below is an instruction that describes a task , paired with an input that provides further context . "
    "write a response that appropriately completes the request . ### instruction : input : response : "
    "background : question : \" answer : context : user : assistant : system : the following "
    "answer the question based on the background . # ## # * - ? ! ' ( ) [ ] { } / \\ \n"
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "tr", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ei")
_CODAS = ("", "", "n", "r", "l", "s", "k", "m", "x")


@dataclass(frozen=True)
class WorldConfig(Config):
    """Sizes and seed of the synthetic world.

    ``n_known_*`` subjects have facts in pretraining; ``n_new_*`` never appear
    in pretraining (they feed the context-critical finetuning data);
    ``eval_fraction`` of the known subjects is held out for the counterfactual
    evaluation and never appears in finetuning.
    """
    n_known_countries: int = 40
    n_known_people: int = 80
    n_new_countries: int = 40
    n_new_people: int = 80
    n_cities: int = 100
    n_throwaway: int = 200
    eval_fraction: float = 0.3
    seed: int = 0

    def validate(self) -> None:
        for name in ("n_known_countries", "n_known_people", "n_new_countries", "n_new_people"):
            if getattr(self, name) < 2:
                raise ConfigError(f"field '{name}': need at least 2, got {getattr(self, name)}")
        if self.n_cities < self.n_known_countries + self.n_new_countries:
            raise ConfigError(
                f"field 'n_cities': each country has its own capital, so need >= "
                f"{self.n_known_countries + self.n_new_countries}, got {self.n_cities}"
            )
        check_in_interval(self, eval_fraction="(0, 1)")
        check_at_most(self, n_known_countries=MAX_SUBJECTS, n_known_people=MAX_SUBJECTS, n_new_countries=MAX_SUBJECTS,
                      n_new_people=MAX_SUBJECTS, n_cities=MAX_SUBJECTS, n_throwaway=MAX_SUBJECTS)


#: The most subjects of one kind a world holds (the word-level vocabulary grows with them).
MAX_SUBJECTS = 100_000


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    obj: str


@dataclass(frozen=True)
class World:
    """The generated world: names, facts, and the known/new/eval splits."""
    config: WorldConfig
    cities: tuple[str, ...]
    fields: tuple[str, ...]
    known_facts: tuple[Fact, ...]      # stated in pretraining
    new_facts: tuple[Fact, ...]        # only ever seen in a context (context-critical IFT)
    eval_subjects: frozenset[str]      # known subjects reserved for the evaluation
    throwaway: tuple[str, ...] = ()    # names for pretraining copy documents (no fixed facts)

    def objects(self, relation: str) -> tuple[str, ...]:
        return self.cities if RELATIONS[relation][1] == "city" else self.fields

    @property
    def ift_known_facts(self) -> tuple[Fact, ...]:
        """Known facts whose subject may appear in finetuning (not held out for evaluation)."""
        return tuple(f for f in self.known_facts if f.subject not in self.eval_subjects)

    @property
    def eval_facts(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.known_facts if f.subject in self.eval_subjects)

    def all_words(self) -> list[str]:
        """Every word any generated text can contain (for the word-level vocab)."""
        words: set[str] = set(self.cities) | set(self.fields)
        words |= {f.subject for f in self.known_facts + self.new_facts}
        words |= set(self.throwaway)
        for pools in (PRETRAIN_TEMPLATES, PRETRAIN_QUESTIONS, IFT_QUESTIONS, IFT_CONTEXTS, EVAL_QUESTIONS,
                      EVAL_CONTEXTS):
            for forms in pools.values():
                for form in forms:
                    words |= set(_words(form.replace("{s}", " ").replace("{o}", " ")))
        for form in RECALL_TEMPLATES.values():
            words |= set(_words(form.replace("{s}", " ")))
        words |= set(_words(TEMPLATE_WORDS))
        return sorted(words)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", text.lower())


def _pseudo_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct pronounceable pseudo-words of 2-3 syllables, not in ``taken``."""
    out: list[str] = []
    while len(out) < n:
        syll = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syll - 1))
        word += rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        if len(word) < 4 or word in taken:
            continue
        taken.add(word)
        out.append(word)
    return out


def build_world(config: WorldConfig | None = None) -> World:
    """Generate the world for ``config`` (deterministic in ``config.seed``)."""
    cfg = config or WorldConfig()
    rng = random.Random(cfg.seed)
    taken = set(_words(TEMPLATE_WORDS)) | set(FIELDS)
    for pools in (PRETRAIN_TEMPLATES, PRETRAIN_QUESTIONS, IFT_QUESTIONS, IFT_CONTEXTS, EVAL_QUESTIONS,
                  EVAL_CONTEXTS):
        for forms in pools.values():
            for form in forms:
                taken |= set(_words(form))
    cities = tuple(_pseudo_words(rng, cfg.n_cities, taken))
    countries = _pseudo_words(rng, cfg.n_known_countries + cfg.n_new_countries, taken)
    people = _pseudo_words(rng, cfg.n_known_people + cfg.n_new_people, taken)
    throwaway = tuple(_pseudo_words(rng, cfg.n_throwaway, taken))
    capitals = list(cities)
    rng.shuffle(capitals)

    def facts_for(cs: Sequence[str], ps: Sequence[str], caps: Sequence[str]) -> list[Fact]:
        facts = [Fact(c, "capital", cap) for c, cap in zip(cs, caps)]
        for p in ps:
            facts.append(Fact(p, "birthplace", rng.choice(cities)))
            facts.append(Fact(p, "field", rng.choice(FIELDS)))
        return facts

    nk_c, nk_p = cfg.n_known_countries, cfg.n_known_people
    known = facts_for(countries[:nk_c], people[:nk_p], capitals[:nk_c])
    new = facts_for(countries[nk_c:], people[nk_p:], capitals[nk_c:])
    known_countries, known_people = countries[:nk_c], people[:nk_p]
    n_eval_c = max(1, round(cfg.eval_fraction * nk_c))
    n_eval_p = max(1, round(cfg.eval_fraction * nk_p))
    eval_subjects = frozenset(rng.sample(known_countries, n_eval_c) + rng.sample(known_people, n_eval_p))
    return World(
        config=cfg,
        cities=cities,
        fields=FIELDS,
        known_facts=tuple(known),
        new_facts=tuple(new),
        eval_subjects=eval_subjects,
        throwaway=throwaway,
    )


# --- tokenizer ---------------------------------------------------------------------------------
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


def build_tokenizer(world: World, extra_texts: Iterable[str] = ()):
    """A lower-casing word-level ``PreTrainedTokenizerFast`` covering every word of ``world``.

    Words are ``\\w+`` runs and punctuation runs (the ``Whitespace``
    pre-tokenizer), so a leading space never changes a word's token: " melbi"
    and "melbi" are the same single token. Every encoding starts with ``<s>``.
    ``extra_texts`` (e.g. the instruction templates of ``fullscale.prompts``)
    add their words to the vocab. Unknown words map to ``<unk>``.
    """
    words = set(world.all_words())
    for text in extra_texts:
        words |= set(_words(text))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in sorted(words):
        if w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        model_max_length=512,
    )
    return fast


def save_tokenizer(tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    return path


__all__ = [
    "RELATIONS",
    "SPECIAL_TOKENS",
    "WorldConfig",
    "World",
    "Fact",
    "build_world",
    "build_tokenizer",
    "save_tokenizer",
]
