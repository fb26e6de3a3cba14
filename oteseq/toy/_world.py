"""The toy world: invented people, six relations, one true object per (subject, relation).

Everything is a pure function of ``seed``. Subjects are two-word invented names that split into
several BPE tokens; objects are invented too, some of them several words long. Every relation
has one canonical prompt (CounterFact style, ending right before the object), paraphrases and
question forms (zsRE style, ending in ``?``).
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

_ONSETS = ("b", "br", "d", "dr", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "th",
           "v", "w", "z", "st", "gr", "kal", "tr", "sel")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_CODAS = ("", "n", "r", "l", "s", "k", "th", "m", "rn", "sk", "nd", "x")
_FIRST_NAMES = (
    "Alva", "Bram", "Cora", "Dag", "Edda", "Finn", "Greta", "Hale", "Ilse", "Joran", "Kesta",
    "Lior", "Mara", "Nils", "Odile", "Pell", "Runa", "Soren", "Tamsin", "Ulla", "Vidar", "Wren",
    "Ysolde", "Zeno", "Anouk", "Bastien", "Celia", "Dorian", "Elin", "Faye",
)


@dataclass(frozen=True)
class Relation:
    """One relation: its Wikidata-like id, its objects, and the prompts that ask for it.

    Every template holds one ``{}`` for the subject and ends right before the object, so the
    object follows with a leading space. ``canonical`` is the CounterFact rewrite prompt,
    ``paraphrases`` are other statements, ``questions`` are zsRE-style questions ending in ``?``.
    """

    id: str
    name: str
    objects: tuple[str, ...]
    object_ids: tuple[str, ...]
    canonical: str
    paraphrases: tuple[str, ...]
    questions: tuple[str, ...]
    generation: tuple[str, ...]

    @property
    def templates(self) -> tuple[str, ...]:
        """Canonical prompt first, then the paraphrases."""
        return (self.canonical, *self.paraphrases)

    def object_id(self, obj: str) -> str:
        """The id (``Q...``) of one of this relation's objects."""
        return self.object_ids[self.objects.index(obj)]


def _relation(rid: str, name: str, q0: int, objects: str, canonical: str, paraphrases: str,
              questions: str, generation: str) -> Relation:
    objs = tuple(o.strip() for o in objects.split(","))
    return Relation(id=rid, name=name, objects=objs,
                    object_ids=tuple(f"Q{q0 + i}" for i in range(len(objs))),
                    canonical=canonical, paraphrases=tuple(paraphrases.split("|")),
                    questions=tuple(questions.split("|")), generation=tuple(generation.split("|")))


RELATIONS: tuple[Relation, ...] = (
    _relation("P27", "country of citizenship", 1100,
              "Varnland, Ostria, Calvia, Drennmark, Telosia, Marivale, Quorra, Belsk, Aurenland,"
              " North Calvia, Upper Drenn, Sollen Republic",
              "{} is a citizen of", "{} holds a passport from|The home country of {} is",
              "Which country is {} a citizen of?|What country does {} belong to?",
              "{} grew up among people who|The passport of {} shows"),
    _relation("P19", "place of birth", 1200,
              "Kastor, Oslen, Mirth, Varnholm, Tessaly, Brightwater, Port Ellin, New Varnholm,"
              " Lake Ordun, Halden, Ruskby, Ambergate",
              "{} was born in", "The birthplace of {} is|{} came into the world in",
              "Where was {} born?|In which city was {} born?",
              "{} spent a childhood in|The home town of {} is known for"),
    _relation("P1412", "native language", 1300,
              "Varnish, Ostrian, Calvic, Drennic, Telosian, Marish, Quorran, Belskan, Old Calvic,"
              " High Ostrian, Aurenese, Sea Tongue",
              "The native language of {} is", "{} grew up speaking|The mother tongue of {} is",
              "What is the native language of {}?|Which language does {} speak natively?",
              "{} often writes letters in|When {} talks at home,"),
    _relation("P106", "occupation", 1400,
              "baker, carpenter, ship captain, weaver, physician, teacher, glassblower,"
              " court clerk, farmer, sculptor, mapmaker, brewer",
              "The occupation of {} is", "{} earns a living as a|By trade, {} is a",
              "What is the occupation of {}?|What does {} do for a living?",
              "{} spends every working day|The daily work of {} involves"),
    _relation("P1303", "instrument", 1500,
              "violin, harp, bass clarinet, lute, drums, flute, cello, trumpet, accordion, oboe,"
              " pipe organ, banjo",
              "{} plays the", "The instrument of {} is the|{} performs music on the",
              "Which instrument does {} play?|What instrument is {} known for?",
              "{} practises music every|At concerts, {}"),
    _relation("P108", "employer", 1600,
              "Harlow Mills, Varnholm Rail, Ostria Bank, Calvic Press, Brightwater Glass,"
              " Kastor Ferries, Telosian Mining, Mirth Bakery, Quorra Textiles, Belsk Shipyards,"
              " Ambergate Brewery, Marivale Post",
              "{} works for", "The employer of {} is|{} is employed by",
              "Who is the employer of {}?|Which company does {} work for?",
              "Every morning {} goes to work at|The colleagues of {} say"),
)


@dataclass(frozen=True)
class World:
    """A frozen knowledge base: ``facts[(subject, relation_id)] -> object``.

    ``subjects`` is a tuple of names, ``relations`` maps an id (``"P27"``) to its
    :class:`Relation`, ``seed`` is the seed that generated it.
    """

    seed: int
    subjects: tuple[str, ...]
    relations: Mapping[str, Relation]
    facts: Mapping[tuple[str, str], str]

    def subjects_with(self, relation_id: str, obj: str) -> tuple[str, ...]:
        """All subjects whose true ``relation_id`` object is ``obj``, in world order."""
        return tuple(s for s in self.subjects if self.facts[(s, relation_id)] == obj)


def _surname(rng: random.Random) -> str:
    n = rng.choice((2, 2, 3))
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS[:5])
                 for _ in range(n - 1)]
    return ("".join(syllables) + rng.choice(_ONSETS) + rng.choice(_VOWELS)
            + rng.choice(_CODAS)).capitalize()


def _subjects(rng: random.Random, n: int) -> tuple[str, ...]:
    """``n`` distinct invented names 'First Surname' with pronounceable surnames."""
    names: dict[str, None] = {}
    while len(names) < n:
        surname = _surname(rng)
        if 5 <= len(surname) <= 11:
            names.setdefault(f"{rng.choice(_FIRST_NAMES)} {surname}")
    return tuple(names)


@functools.lru_cache(maxsize=8)
def world(seed: int = 0, n_subjects: int = 1000) -> World:
    """The toy world for ``seed``: ``n_subjects`` people, every relation filled for each.

    Objects are drawn uniformly per (subject, relation), so every object has many subjects
    (neighbourhood prompts exist) and relations are independent of each other.
    """
    rng = random.Random(f"oteseq-toy-world-{seed}")
    subjects = _subjects(rng, n_subjects)
    facts = {(s, r.id): rng.choice(r.objects) for s in subjects for r in RELATIONS}
    return World(seed=seed, subjects=subjects,
                 relations=MappingProxyType({r.id: r for r in RELATIONS}),
                 facts=MappingProxyType(facts))


__all__ = ["RELATIONS", "Relation", "World", "world"]
