"""Text of the toy world: fact sentences, general sentences (no facts) and filler prefixes.

General text comes from a small seeded grammar about weather, towns, markets and music. It
states no (subject, relation) fact, so it is what C0 statistics and perplexity are measured on.
"""
from __future__ import annotations

import random
from typing import Iterator, Literal

from ..errors import OptionError
from ._world import World

Split = Literal["train", "heldout"]

_ADJ = ("old", "quiet", "busy", "narrow", "bright", "cold", "small", "green", "long", "wet",
        "warm", "grey", "empty", "crowded", "distant", "steep", "wooden", "stone")
_NOUN = ("road", "market", "river", "bridge", "harbour", "square", "garden", "tower", "mill",
         "station", "library", "valley", "forest", "village", "orchard", "meadow", "inn",
         "lighthouse", "school", "chapel")
_VERB_PAST = ("opened", "closed", "filled", "emptied", "changed", "grew", "waited", "shone",
              "rested", "woke")
_TIME = ("in the morning", "at noon", "after the rain", "before dawn", "in the evening",
         "during the winter", "on market day", "all summer", "at night", "in spring")
_WEATHER = ("Rain", "Snow", "Mist", "Wind", "Sunlight", "Fog", "Frost", "Thunder")
_MOTION = ("fell over", "moved across", "drifted past", "settled on", "swept through")
_PEOPLE = ("travellers", "children", "fishermen", "merchants", "students", "neighbours",
           "musicians", "farmers")
_ACTION = ("gathered near", "walked to", "talked about", "sang beside", "waited at",
           "looked at", "painted", "cleaned")

# fixed filler prefixes for key averaging (MEMIT style: f"{prefix}. {{}}")
_PREFIXES = (
    "The market opened early", "Rain fell over the hills", "It was a quiet morning",
    "Therefore the road was closed", "Because the river rose", "I saw the old bridge",
    "You can hear the bells", "The wind changed at noon", "Some travellers waited at the inn",
    "After the long winter", "The library was full of students", "Fog settled on the harbour",
    "In the evening the square was empty", "The children sang beside the chapel",
    "Everyone talked about the weather", "The train left the station",
)


def _sentence(rng: random.Random, places: tuple[str, ...]) -> str:
    """One grammatical sentence with no fact in it."""
    form = rng.randrange(5)
    adj, noun, noun2 = rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_NOUN)
    if form == 0:
        return f"The {adj} {noun} {rng.choice(_VERB_PAST)} {rng.choice(_TIME)}."
    if form == 1:
        return f"{rng.choice(_WEATHER)} {rng.choice(_MOTION)} the {adj} {noun}."
    if form == 2:
        return f"The {rng.choice(_PEOPLE)} {rng.choice(_ACTION)} the {noun} {rng.choice(_TIME)}."
    if form == 3:
        return f"{rng.choice(places)} has a {adj} {noun} near the {noun2}."
    return f"The road from the {noun} to the {noun2} is {adj}."


def _places(world: World) -> tuple[str, ...]:
    return world.relations["P19"].objects + world.relations["P27"].objects


def general_text(n: int, seed: int = 0, split: Split = "train", *, world: World | None = None,
                 sentences_per_text: int = 4) -> list[str]:
    """``n`` short paragraphs of general (fact-free) text of the toy world.

    ``split="heldout"`` draws from a different random stream than ``"train"``, so the model
    never trained on those exact paragraphs; use it for perplexity and C0 statistics.
    """
    if split not in ("train", "heldout"):
        raise OptionError(f"split={split!r}: use 'train' or 'heldout'")
    from ._world import world as make_world

    places = _places(world if world is not None else make_world(0))
    rng = random.Random(f"oteseq-toy-general-{split}-{seed}")
    return [" ".join(_sentence(rng, places) for _ in range(sentences_per_text)) for _ in range(n)]


def preservation_text(n: int, seed: int = 0, *, world: World | None = None,
                      fact_fraction: float = 0.5) -> list[str]:
    """``n`` texts standing for the knowledge an edit must preserve: the toy analogue of
    MEMIT's Wikipedia sample, which is full of facts.

    A ``fact_fraction`` of the texts are statements of the world's facts (every template kind,
    object included), the rest general text. ``C0`` from general text alone covers only the
    few MLP directions that fact-free sentences use (effective rank ≈10 of 1,024 in the toy
    model), so an edit with it overwrites other facts freely; with the facts in the sample,
    recall of untouched facts after 30 ``memit-seq`` edits was 0.98 instead of 0.57.
    """
    from .versions import default_world

    world = world if world is not None else default_world()
    n_facts = int(round(n * fact_fraction))
    rng = random.Random(f"oteseq-toy-preservation-{seed}")
    examples = list(fact_examples(world))
    facts = [f"{prompt} {obj}." for _, prompt, obj in rng.sample(examples, min(n_facts,
                                                                                len(examples)))]
    texts = general_text(n - len(facts), seed, split="train", world=world) + facts
    rng.shuffle(texts)
    return texts


def context_prefixes() -> tuple[str, ...]:
    """Short filler sentences without final punctuation, used as ``f"{prefix}. {prompt}"``.

    They play the role of MEMIT's generated context templates for key averaging.
    """
    return _PREFIXES


def nq_question(question: str) -> str:
    """The zsRE ``loc`` form of a question: ``'nq question: '`` + lower-cased, no ``?``."""
    return "nq question: " + question[0].lower() + question[1:].rstrip("?")


def fact_prompts(world: World, subject: str, relation_id: str) -> dict[str, list[str]]:
    """All prompts that ask for one fact, by kind: canonical, paraphrase, question, nq."""
    rel = world.relations[relation_id]
    questions = [q.format(subject) for q in rel.questions]
    return {"canonical": [rel.canonical.format(subject)],
            "paraphrase": [p.format(subject) for p in rel.paraphrases],
            "question": questions,
            "nq": [nq_question(q) + "?" for q in questions]}


def fact_examples(world: World) -> Iterator[tuple[str, str, str]]:
    """Every (kind, prompt, object) of the world, the object to be read with a leading space."""
    for subject in world.subjects:
        for rid in world.relations:
            obj = world.facts[(subject, rid)]
            for kind, prompts in fact_prompts(world, subject, rid).items():
                for prompt in prompts:
                    yield kind, prompt, obj


__all__ = ["context_prefixes", "fact_examples", "fact_prompts", "general_text", "nq_question",
           "preservation_text"]
