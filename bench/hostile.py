"""Count what hostile inputs and SIGKILLs do to the documented entry points (README: Reliability).

Runs every case of ``tests/hostile_cases.py`` (Request, Editor, LinearMemory, state files),
every bad command line of ``tests/test_cli.py`` (in-process ``oteseq.__main__.main``) and the
SIGKILL-during-save loop of ``tests/kill_saves.py``, and classifies each outcome:

- named error: the expected ``oteseq.errors`` exception, its message naming the problem, and
  the editor, memories and model bit-for-bit unchanged (CLI: exit 2 with one ``error:`` line);
- silent acceptance: no error at all;
- generic traceback: an exception that is not an ``oteseq.errors`` one (CLI: a traceback or an
  exit code other than 2);
- wrong error or changed state: a named error of another kind or message, or state changed;
- states lost under SIGKILL: kills after which the folder did not load as exactly the old or
  exactly the new state.

    python bench/hostile.py [--kills 50] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile_cases import CASES, World, copy_semantics_hold, same  # noqa: E402

from oteseq.errors import OteseqError  # noqa: E402


def api_outcomes() -> tuple[Counter, list]:
    counts, notes = Counter(), []
    world = World()
    try:
        for case in CASES:
            before = world.snapshot()
            try:
                case.run(world)
                kind = "silent acceptance"
            except OteseqError as exc:
                ok = isinstance(exc, case.error) and re.search(case.match, str(exc))
                kind = "named error" if ok and same(before, world.snapshot()) else \
                    "wrong error or changed state"
            except Exception:  # noqa: BLE001 — what we count
                kind = "generic traceback"
            counts[kind] += 1
            if kind != "named error":
                notes.append(f"{case.name}: {kind}")
        copied = copy_semantics_hold(world)
        counts["copy.copy(LinearMemory) independent"] = int(copied)
    finally:
        world.close()
    return counts, notes


def cli_outcomes() -> tuple[Counter, list]:
    from test_cli import CASES as CLI_CASES
    from test_cli import _bad_args

    from oteseq import __main__ as cli
    counts, notes = Counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        table = _bad_args(Path(tmp))
        argvs = [table[name][0] for name in CLI_CASES] + [["--n", "100000", "--out",
                                                           str(Path(tmp) / "big")]]
        for name, argv in zip([*CLI_CASES, "n-larger-than-data"], argvs):
            err, code = io.StringIO(), None
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = cli.main(["edit", "--no-progress", *argv])
            except SystemExit as exit_:
                code = exit_.code
            except Exception:  # noqa: BLE001
                code = "traceback"
            text = err.getvalue()
            if code == 0:
                kind = "silent acceptance"
            elif code == 2 and "Traceback" not in text and "error:" in text:
                kind = "named error"
            else:
                kind = "generic traceback"
            counts[kind] += 1
            if kind != "named error":
                notes.append(f"cli {name}: {kind} (exit {code})")
    return counts, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--json", default=None, help="also write the counts here")
    args = parser.parse_args()
    api, api_notes = api_outcomes()
    cli, cli_notes = cli_outcomes()
    from kill_saves import kill_during_saves
    with tempfile.TemporaryDirectory() as tmp:
        kills = kill_during_saves(Path(tmp), kills=args.kills, seed=1)
    total = api + cli
    report = {
        "inputs tried": len(CASES) + sum(cli.values()),
        "API cases": len(CASES), "CLI cases": sum(cli.values()),
        "named errors": total["named error"],
        "silent acceptances": total["silent acceptance"],
        "generic tracebacks": total["generic traceback"],
        "wrong error or changed state": total["wrong error or changed state"],
        "copy.copy(LinearMemory) independent": bool(api["copy.copy(LinearMemory) independent"]),
        "SIGKILLs during saves": args.kills,
        "states lost under SIGKILL": kills["lost"],
        "loaded as old / new state": [kills["A"], kills["B"]],
        "leftover folders after a clean save": kills["leftover folders after a clean save"],
        "seconds per save (tiny model)": kills["seconds per save"],
        "problems": api_notes + cli_notes,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
