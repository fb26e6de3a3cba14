"""Hostile inputs and faults (tests/hostile_cases.py): each raises its named oteseq error with a
message naming the problem, and leaves the editor, its memories, the model and the memory
exactly as they were."""
from __future__ import annotations

import pytest
from hostile_cases import CASES, World, copy_semantics_hold, same

from oteseq.errors import OteseqError


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_a_named_error_and_changes_nothing(world, case):
    before = world.snapshot()
    with pytest.raises(case.error, match=case.match) as info:
        case.run(world)
    assert isinstance(info.value, OteseqError)
    assert same(before, world.snapshot())


def test_copy_of_a_memory_is_independent(world):
    assert copy_semantics_hold(world)


def test_the_editor_still_works_after_every_case(world):
    from test_editor import EDITS, top1
    for case in CASES:
        try:
            case.run(world)
        except OteseqError:
            pass
    report = world.ed.edit([EDITS[1]])
    assert report.n_edits == 1 and top1(world.model, world.tok, EDITS[1])
