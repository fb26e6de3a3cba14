"""oteseq.profiles: a model's corpus, templates, general ability and defaults come from its
registered profile; the core modules never name the toy world."""
from __future__ import annotations

import pytest
from test_imports import import_graph
from tiny_models import tiny_model

from oteseq import methods, profiles, stats
from oteseq.model_reads import templates
from oteseq.errors import OptionError
from oteseq.experiments import _protocol
from oteseq.toy.versions import VERSIONS

CORE = ("oteseq.stats", "oteseq.editor_inputs", "oteseq.model_reads", "oteseq.methods",
        "oteseq.evaluate.glue", "oteseq.experiments._protocol", "oteseq.editor")


@pytest.fixture
def own_profile():
    """A profile for the tiny gpt2 test model, removed again afterwards."""
    calls = []

    def ability(model, tok, exclude=()):
        calls.append(sorted(exclude))
        return {"recall": 0.25}

    profile = profiles.register(profiles.Profile(
        name="tiny-gpt2", matches=lambda m: getattr(getattr(m, "config", None), "name_or_path",
                                                    m) == "tiny-gpt2",
        hparams={"layers": (0, 1), "lam": 7.0}, alphaedit_ridge=0.5,
        corpora=(profiles.Corpus("mine", 3, lambda seed: f"mine-{seed}",
                                 lambda n, seed: [f"text {i} {seed}" for i in range(n)]),),
        templates={"mine": lambda: ["First", "Second", "Third"]},
        general_ability=ability, general_name="mine"))
    yield profile, calls
    profiles.unregister(profile.name)
    assert profiles.find("tiny-gpt2") is None


def test_core_modules_do_not_import_the_toy_world():
    graph = import_graph()
    for name in CORE:
        assert not any(t.startswith("oteseq.toy") for t in graph[name]), name


def test_toy_versions_register_their_own_data():
    v1, v2 = (profiles.find(name) for name in VERSIONS)
    assert (v1.name, v2.name) == ("toy-v1", "toy")          # the default version is "toy"
    assert profiles.find("toy") is v2 and profiles.find("gpt2-xl") is None
    assert dict(v2.hparams) == dict(VERSIONS["toy-v2"].hparams)  # the values, verbatim
    # a corpus named without a model is the default model's
    assert stats.resolve_corpus("toy", 4, seed=1)[0] == "toy-preserve-seed1-people5000"
    assert v1.corpora[0].key(1) == "toy-preserve-seed1"


def test_a_users_profile_supplies_everything(own_profile):
    profile, calls = own_profile
    model, tok = tiny_model("gpt2")
    hp = methods.default_hparams(model, "memit-seq")
    assert (hp.layers, hp.lam) == ((0, 1), 7.0)
    assert methods.default_hparams(model, "alphaedit").ridge == 0.5
    corpus_id, n, load = stats.resolve_corpus("mine", None, seed=2, model=model)
    assert (corpus_id, n, load()) == ("mine-2", 3, ["text 0 2", "text 1 2", "text 2 2"])
    got = templates(model, tok, hp.replace(template_source="mine",
                                           context_templates=((5, 2),)), seed=0)
    assert [t.split(".")[0] for t in got[1:]] == ["First", "Second"] and got[0] == "{}"
    assert _protocol._general(model, tok, exclude={("a", "b")}) == {"recall": 0.25}
    assert calls == [[("a", "b")]]
    config = _protocol._config(model, "memit-seq", hp, 2, 4, 0, "counterfact", "toy", 1, 1,
                               "replace", "p")
    assert config["model"] == "tiny-gpt2" and config["curves"]["general"] == "mine"


def test_unknown_names_are_option_errors():
    with pytest.raises(OptionError, match="corpus='c4'.*toy"):
        stats.resolve_corpus("c4", None)
    with pytest.raises(OptionError, match="template_source='nope'"):
        methods.Hparams(template_source="nope")
