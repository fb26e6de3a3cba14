"""SIGKILL during ``Editor.save``: a forked child saves two states alternately in a loop and is
killed at a random moment; after every kill the folder must load as exactly one of the two.

Shared by ``tests/test_state_files.py`` and ``bench/hostile.py``. POSIX only (fork, SIGKILL).
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

from hostile_cases import same
from test_editor import EDITS, make_editor

from oteseq import models
from oteseq.editor import Editor


def _save_loop(ed, states, path, ready) -> None:  # runs in the forked child until killed
    ready.set()
    i = 0
    while True:
        ed._memories, ed.n_edits = dict(states[i % 2][0]), states[i % 2][1]
        ed.save(path)
        i += 1


def _state(ed) -> tuple[dict, int]:
    return {l: copy.copy(ed.memory(l)) for l in ed.layers}, ed.n_edits


def kill_during_saves(folder: Path, kills: int = 50, seed: int = 0) -> Counter:
    """``Counter`` of outcomes over ``kills`` kills: "A" / "B" (the folder loaded as one of the
    two states the child alternates, bit for bit), "lost" (it did not load, or as neither)."""
    ed, model, tok = make_editor()
    ed.edit([EDITS[0]])
    state_a = _state(ed)
    ed.edit([EDITS[1]])
    state_b = _state(ed)
    refs = [{l: m.state_dict() for l, m in s[0].items()} for s in (state_a, state_b)]
    path = Path(folder) / "state"
    ed._memories, ed.n_edits = dict(state_a[0]), state_a[1]
    ed.save(path)
    start = time.perf_counter()
    for _ in range(3):
        ed.save(path)
    per_save = (time.perf_counter() - start) / 3
    rng, outcome = random.Random(seed), Counter()
    context = multiprocessing.get_context("fork")
    for _ in range(kills):
        ready = context.Event()
        child = context.Process(target=_save_loop, args=(ed, (state_b, state_a), path, ready))
        child.start()
        ready.wait(30)
        time.sleep(rng.uniform(0.0, 6.0) * per_save)  # within the child's first ~6 saves
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        for layer in ed.layers:  # the model unedited again, so either state may load into it
            models.write_weight(models.edited_module(model, layer), ed.original_weight(layer))
        try:
            loaded = Editor.load(path, model, tok, stats=ed.stats, progress=False)
            got = {l: loaded.memory(l).state_dict() for l in loaded.layers}
        except Exception:  # noqa: BLE001 — any failure to load is a lost state
            outcome["lost"] += 1
            continue
        which = [i for i, ref in enumerate(refs) if same(ref, got)]
        if len(which) == 1 and loaded.n_edits == (state_a, state_b)[which[0]][1]:
            outcome[("A", "B")[which[0]]] += 1
        else:
            outcome["lost"] += 1
    outcome["leftover folders"] = len(list(path.glob("state-*"))) - 1
    ed.save(path)  # a clean save removes what the killed ones left behind
    outcome["leftover folders after a clean save"] = len(list(path.glob("state-*"))) - 1
    outcome["seconds per save"] = round(per_save, 4)
    return outcome
