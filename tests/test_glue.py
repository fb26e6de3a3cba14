"""oteseq.glue: values stored for the book's prose in the format myst-nb reads back."""
from __future__ import annotations

import ast
import math

import numpy as np
import pytest
import torch

from oteseq import glue
from oteseq.errors import OptionError


class Recorder:
    """Stands in for IPython's display: records what glue() would show."""

    def __init__(self):
        self.calls = []

    def __call__(self, data, raw=False, metadata=None):
        self.calls.append((data, raw, metadata))


@pytest.fixture
def shown(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr("IPython.display.display", recorder)
    monkeypatch.setattr("IPython.get_ipython", lambda: object())
    return recorder.calls


def test_plain_turns_scalars_into_literals_myst_nb_can_read():
    for value, expected in [(np.float64(0.25), 0.25), (torch.tensor(3), 3),
                            (torch.tensor([1.5]), 1.5), (np.int64(7), 7), (True, True),
                            ("smaller", "smaller")]:
        out = glue.plain(value)
        assert out == expected and type(out) is type(expected)
        assert ast.literal_eval(repr(out)) == expected      # what myst-nb does with text/plain


def test_plain_rejects_what_the_prose_cannot_show():
    with pytest.raises(OptionError, match="non-finite"):
        glue.plain(float("nan"))
    with pytest.raises(OptionError, match="glue numbers or strings"):
        glue.plain([1, 2])


def test_glue_stores_a_hidden_record_under_its_name(shown):
    assert glue.glue("ci.memit-seq.efficacy", np.float64(79.0)) is None
    (data, raw, metadata), = shown
    assert raw is True
    assert data == {"application/papermill.record/text/plain": "79.0"}
    assert metadata == {"scrapbook": {"name": "ci.memit-seq.efficacy",
                                      "mime_prefix": "application/papermill.record/"}}


def test_glue_matches_myst_nb(shown):
    """The record is the one myst_nb.glue(..., display=False) writes, byte for byte."""
    myst_nb = pytest.importorskip("myst_nb")
    glue.glue("x", 0.5)
    ours = shown.pop()
    myst_nb.glue("x", 0.5, display=False)
    theirs = shown.pop()
    assert ours[0] == theirs[0] and ours[2] == theirs[2]


@pytest.mark.parametrize("name", ["", "1abc", "a:b", "a b", None])
def test_glue_rejects_names_the_role_cannot_address(name, shown):
    with pytest.raises(OptionError, match="glue name"):
        glue.glue(name, 1.0)
    assert not shown


def test_glue_outside_a_kernel_stores_nothing(monkeypatch):
    monkeypatch.setattr("IPython.get_ipython", lambda: None)
    calls = Recorder()
    monkeypatch.setattr("IPython.display.display", calls)
    glue.glue("a", 1.0)
    assert not calls.calls


def test_glue_all_flattens_nested_tables(shown):
    flat = glue.glue_all("ci", {"memit-seq (one-time)": {"efficacy": 64.0, "nll": None},
                                "P1412": {"recall": np.float32(0.5)}, "runs": [1, 2]})
    assert flat == {"ci.memit-seq-one-time.efficacy": 64.0, "ci.p1412.recall": 0.5}
    assert [m["scrapbook"]["name"] for _, _, m in shown] == list(flat)


def results_table():
    rows = []
    for label, efficacy, distance in [("memit", 0.5, 0.9), ("memit-seq", 0.75, 1.1),
                                      ("memit-seq (one-time)", 0.25, 0.0)]:
        rows.append({"label": label, "post": {"efficacy": efficacy, "score": efficacy / 2},
                     "general": {"recall": 0.5, "nll": 1.5, "recall_by_relation": {"P1": 1}},
                     "timings": {"edit": 10 * efficacy}, "se_vs_ote": {"1": distance / 2,
                                                                      "2": distance}})
    return {"pre": {"efficacy": 0.0, "score": 0.0}, "pre_general": {"recall": 1.0, "nll": 1.4},
            "rows": rows, "scale": {"n": 100, "batch_size": 25}, "wall_seconds": 120.0}


def test_results_numbers_are_in_the_printed_units():
    numbers = glue.results_numbers(results_table())
    assert numbers["memit-seq"]["efficacy"] == 75.0 and numbers["unedited"]["recall"] == 100.0
    assert numbers["memit"]["nll"] == 1.5 and numbers["memit"]["distance"] == 0.9
    assert "recall_by_relation" not in numbers["memit"]


def test_glue_results_quotes_ranges_over_the_sequential_editors(shown):
    glue.glue_results("ci", results_table())
    stored = {m["scrapbook"]["name"]: ast.literal_eval(d[glue.PREFIX + "text/plain"])
              for d, _, m in shown}
    assert stored["ci.protocol.batches"] == 4 and stored["ci.wall-minutes"] == 2.0
    assert stored["ci.distance-min"] == 0.9 and stored["ci.distance-max"] == 1.1   # no one-time
    assert math.isclose(stored["ci.edit-seconds-max"], 7.5)
    assert stored["ci.memit-seq-one-time.efficacy"] == 25.0


def test_summary_numbers_read_a_stored_seeds_summary_in_printed_units(shown):
    import json
    from importlib import resources

    path = resources.files("oteseq.toy") / "results" / "v2" / "counterfact-budget"
    summary = json.loads((path / "summary.json").read_text())
    numbers = glue.glue_summary("toy", summary)
    seq = summary["methods"]["memit-seq"]
    assert numbers["memit-seq"]["efficacy"] == pytest.approx(100 * seq["efficacy"]["mean"])
    assert numbers["memit-seq"]["recall-std"] == pytest.approx(100 * seq["general.recall"]["std"])
    assert numbers["memit-seq"]["nll"] == pytest.approx(seq["general.nll"]["mean"])  # nats
    assert numbers["memit-seq"]["distance"] == pytest.approx(seq["se_vs_ote"]["mean"])
    assert numbers["unedited"]["recall"] == pytest.approx(100.0)
    names = {metadata["scrapbook"]["name"] for _, _, metadata in shown}
    assert {"toy.memit-seq-one-time.efficacy", "toy.protocol.batches", "toy.rect.nll-std"} <= names
