"""Hparams validates every field when it is built (from code or from a saved dict)."""
import math

import pytest

from oteseq.errors import OptionError
from oteseq.methods import Hparams


def test_defaults_and_a_round_trip_are_valid():
    hp = Hparams(layers=(1, 2), fact_token="last", context_templates=((5, 2), (10, 0)))
    assert Hparams.from_dict(hp.to_dict()) == hp


@pytest.mark.parametrize("fact_token", ["subject-last", "first", "", None])
def test_unknown_fact_token(fact_token):
    with pytest.raises(OptionError, match="fact_token"):
        Hparams(fact_token=fact_token)


@pytest.mark.parametrize("field, value", [
    ("lam", -1.0), ("lam", math.inf), ("lam", math.nan), ("lam", "20000"),
    ("v_lr", 0.0), ("v_lr", -0.5), ("v_num_grad_steps", 0), ("v_num_grad_steps", 2.5),
    ("v_num_grad_steps", True), ("clamp_norm_factor", 0.0), ("kl_factor", -1e-3),
    ("v_weight_decay", -0.5), ("mom2_n_samples", 0), ("mom2_n_samples", 10.0),
    ("nullspace_threshold", -1.0), ("ridge", -1e-9), ("ridge", None),
])
def test_bad_numbers_name_the_field(field, value):
    with pytest.raises(OptionError, match=f"Hparams.{field}="):
        Hparams(**{field: value})


def test_bounds_themselves():
    Hparams(lam=0.0, kl_factor=0.0, v_weight_decay=0.0, ridge=0, nullspace_threshold=0.0,
            v_num_grad_steps=1, mom2_n_samples=1)


@pytest.mark.parametrize("pairs", [((0, 5),), ((10, -1),), ((10, 5, 1),)])
def test_bad_context_templates(pairs):
    with pytest.raises(OptionError, match="context_templates"):
        Hparams(context_templates=pairs)


def test_replace_validates():
    with pytest.raises(OptionError, match="Hparams.v_lr"):
        Hparams().replace(v_lr=-1.0)
