"""Editor state files: a save killed at any moment leaves the old or the new state, a failed
save leaves the old one, leftovers of killed saves are removed by the next save."""
from __future__ import annotations

import sys

import pytest
from hostile_cases import same
from kill_saves import kill_during_saves
from test_editor import EDITS, make_editor

from oteseq.editor import Editor
from oteseq.memory import LinearMemory


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + SIGKILL: Linux only")
def test_sigkill_during_saves_never_loses_a_state(tmp_path):
    outcome = kill_during_saves(tmp_path, kills=50, seed=0)
    assert outcome["lost"] == 0, outcome
    assert outcome["A"] + outcome["B"] == 50
    assert outcome["A"] > 0 and outcome["B"] > 0, outcome  # kills landed across the loop
    assert outcome["leftover folders after a clean save"] == 0


def test_a_save_failing_at_the_second_layer_keeps_the_old_state(tmp_path, monkeypatch):
    ed, model, tok = make_editor()
    ed.edit([EDITS[0]])
    ed.save(tmp_path / "s")
    old = {l: ed.memory(l).state_dict() for l in ed.layers}
    ed.edit([EDITS[1]])
    real, calls = LinearMemory.save, []

    def fail_second(self, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        real(self, path)

    monkeypatch.setattr(LinearMemory, "save", fail_second)
    with pytest.raises(OSError):
        ed.save(tmp_path / "s")
    assert len(list((tmp_path / "s").glob("state-*"))) == 1  # the new folder was removed
    ed.revert()
    loaded = Editor.load(tmp_path / "s", model, tok, stats=ed.stats, progress=False)
    assert same(old, {l: loaded.memory(l).state_dict() for l in loaded.layers})
    assert loaded.n_edits == 1


def test_save_round_trip_keeps_extra_and_replaces_the_old_folder(tmp_path):
    ed, model, tok = make_editor()
    ed.edit([EDITS[0]])
    ed.save(tmp_path / "s", extra={"batch": 1})
    ed.edit([EDITS[1]])
    ed.save(tmp_path / "s", extra={"batch": 2})
    assert len(list((tmp_path / "s").glob("state-*"))) == 1
    ed.revert()
    loaded = Editor.load(tmp_path / "s", model, tok, stats=ed.stats, progress=False)
    assert loaded.extra == {"batch": 2} and loaded.n_edits == 2
    assert loaded.ids == [EDITS[0].id, EDITS[1].id]


def test_a_version_1_save_still_loads(tmp_path):
    """The layout before checksums: layer folders and editor.json side by side."""
    import json

    from oteseq import models
    ed, model, tok = make_editor()
    ed.edit([EDITS[0]])
    for layer in ed.layers:
        ed.memory(layer).save(tmp_path / f"layer_{layer}")
    meta = {"format": "oteseq-editor", "version": 1, "fingerprint": ed.fingerprint,
            "model": "tiny-gpt2", "layer_names": [models.edited_name(model, l) for l in ed.layers],
            "method": ed.method, "hparams": ed.hparams.to_dict(), "templates": ed.templates,
            "on_conflict": ed.on_conflict, "n_edits": ed.n_edits,
            "rank_P": {str(l): r for l, r in ed.rank_P.items()}}
    (tmp_path / "editor.json").write_text(json.dumps(meta))
    state = {l: ed.memory(l).state_dict() for l in ed.layers}
    ed.revert()
    loaded = Editor.load(tmp_path, model, tok, stats=ed.stats, progress=False)
    assert same(state, {l: loaded.memory(l).state_dict() for l in loaded.layers})
    loaded.save(tmp_path)  # rewritten as version 2: the old layer folders go
    assert not list(tmp_path.glob("layer_*")) and len(list(tmp_path.glob("state-*"))) == 1
