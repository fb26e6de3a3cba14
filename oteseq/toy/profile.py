"""The packaged toy models as :class:`oteseq.profiles.Profile`\\ s: their editing defaults
(:mod:`.versions`), their preservation corpus ``"toy"``, the world's context prefixes
``"toy"`` and the toy general-ability suite. Imported by :func:`oteseq.profiles.registered`.
"""
from __future__ import annotations

from .. import profiles
from .corpus import context_prefixes, preservation_text
from .versions import DEFAULT, VERSIONS, ToyModel, find
from .._types import Model, Tokenizer

#: texts of the toy corpus when ``n_samples`` is not given
CORPUS_SIZE = 20_000


def _suite(model: Model, tok: Tokenizer, **options) -> dict:
    """:func:`oteseq.toy.general_ability` (loaded on first use: it needs torch)."""
    from .ability import general_ability

    return general_ability(model, tok, **options)


def _corpus(version: ToyModel) -> profiles.Corpus:
    """The toy world's preservation text, stated over the world this version knows; the cache
    key names the world's size (toy-v1's 1,000-person world keeps the plain key)."""
    def key(seed: int) -> str:
        people = len(version.world().subjects)
        return f"toy-preserve-seed{seed}" + ("" if people == 1000 else f"-people{people}")

    return profiles.Corpus(name="toy", default_n=CORPUS_SIZE, key=key,
                           texts=lambda n, seed: preservation_text(n, seed,
                                                                   world=version.world()))


def _profile(version: ToyModel) -> profiles.Profile:
    def ability(model: Model, tok: Tokenizer, **options) -> dict:
        options = {"world": version.world(), "untouched": version.untouched, **options}
        return _suite(model, tok, **options)

    def matches(model_or_name) -> bool:
        return find(model_or_name) is version

    return profiles.Profile(
        name="toy" if version.name == DEFAULT else version.name, matches=matches,
        hparams=version.hparams, alphaedit_ridge=version.alphaedit_ridge,
        corpora=(_corpus(version),), templates={"toy": context_prefixes},
        general_ability=ability, general_name="toy", suites={"toy": _suite})


# the default version first: a corpus or suite named without a model is the default model's
PROFILES = tuple(profiles.register(_profile(v)) for v in
                 sorted(VERSIONS.values(), key=lambda v: v.name != DEFAULT))

__all__ = ["CORPUS_SIZE", "PROFILES"]
