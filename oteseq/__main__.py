"""Command line: ``python -m oteseq edit ...`` runs one sequential-editing experiment.

    python -m oteseq edit --model toy --data toy-counterfact --n 2000 --batch 100 \\
        --method memit-seq --out runs/toy
    python -m oteseq edit --model gpt2-xl --data counterfact ...   # the same at full scale
    python -m oteseq edit --resume runs/toy                         # continue a stopped run

The run is :func:`oteseq.experiments.run_sequential` (one protocol for the library, the book
and this command; recorded in the result file): every record is evaluated on the unedited
model, the first ``n`` records are edited in batches of ``batch``, one after the other, never
restored, then every record is evaluated on the final model. A batch ends early where a record
re-edits an id already in it (the re-edit then replaces the earlier one,
``on_conflict="replace"``). ``results.json`` has :class:`oteseq.experiments.Result`'s schema
(``load_result`` reads it) plus ``complete``.

Every argument is checked before the model loads (a one-line error, exit code 2). After every
batch the editor state and the results so far are written to ``OUT/checkpoint`` (crash-safe,
see :mod:`oteseq.editor_state`) and ``OUT/results.json``; Ctrl-C finishes the current write,
keeps every finished batch and exits with 130; ``--resume OUT`` continues and ends with the
same weights as an uninterrupted run. At the end ``results.json`` and ``plot.png`` are written.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from ._types import Model, Tokenizer

CHECKPOINT, RESULTS = "checkpoint", "results.json"
RUN_OPTIONS = {"model": "toy", "data": "toy-counterfact", "n": 2000, "batch": 100,
               "method": "memit-seq", "seed": 0, "hparams": None}


class Interrupted(Exception):
    """Ctrl-C during a run; every finished batch is in the checkpoint."""


def _parser() -> argparse.ArgumentParser:
    from .methods import METHODS
    parser = argparse.ArgumentParser(prog="oteseq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    edit = sub.add_parser("edit", help="run a sequential editing experiment")
    edit.add_argument("--model", help="'toy' (default), a hub id or a local folder")
    edit.add_argument("--data", help="counterfact, mcf, zsre, toy-counterfact (default), "
                                     "toy-zsre, toy-conflicts")
    edit.add_argument("--n", type=int, help="records to edit (default 2000)")
    edit.add_argument("--batch", type=int, help="edits per sequential step (default 100)")
    edit.add_argument("--method", choices=sorted(METHODS), help="default memit-seq")
    edit.add_argument("--out", help="folder for the checkpoint, results.json and plot.png")
    edit.add_argument("--resume", metavar="OUT", help="continue the run saved in OUT")
    edit.add_argument("--seed", type=int, help="default 0")
    edit.add_argument("--eval", action="store_true",
                      help="accepted for old command lines: every run evaluates all records "
                           "before and after editing")
    edit.add_argument("--device", default=None, help="e.g. cuda; default: cuda if available")
    edit.add_argument("--hparams", default=None,
                      help='JSON overrides of the default hparams, e.g. \'{"lam": 5000}\'')
    edit.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


# ----------------------------------------------------------------- argument checks
def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults (or the saved settings with --resume) and check every argument."""
    if args.resume is not None:
        _resume_settings(parser, args)
    else:
        for key, default in RUN_OPTIONS.items():
            if getattr(args, key) is None:
                setattr(args, key, default)
        if not args.out:
            parser.error("--out is required (or --resume OUT to continue a run)")
    from .data import NAMES
    if args.data not in NAMES:
        parser.error(f"--data {args.data!r} is unknown; choose one of {', '.join(NAMES)}")
    if args.batch < 1:
        parser.error(f"--batch {args.batch}: give a positive number of edits per batch")
    if args.n < 1:
        parser.error(f"--n {args.n}: give a positive number of records to edit")
    _check_hparams(parser, args)
    _check_device(parser, args.device)
    _check_out(parser, Path(args.out), resuming=args.resume is not None)
    return args


def _resume_settings(parser, args) -> None:
    from .editor_state import read_manifest
    from .errors import OteseqError
    given = [f"--{k}" for k in RUN_OPTIONS if getattr(args, k) is not None]
    if given:
        parser.error(f"--resume continues with the saved settings; drop {', '.join(given)}")
    if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        parser.error("--resume OUT writes into OUT; drop --out or make it the same folder")
    try:
        saved = read_manifest(Path(args.resume) / CHECKPOINT).get("extra", {}).get("cli")
    except OteseqError as exc:
        parser.error(f"--resume {args.resume}: {exc}")
    if not isinstance(saved, dict) or set(saved) != set(RUN_OPTIONS):
        parser.error(f"--resume {args.resume}: the checkpoint was not written by `oteseq edit`")
    for key, value in saved.items():
        setattr(args, key, value)
    args.out = args.resume


def _check_hparams(parser, args) -> None:
    if args.hparams is None:
        return
    try:
        overrides = json.loads(args.hparams)
    except ValueError as exc:
        parser.error(f"--hparams is not valid JSON ({exc}); e.g. --hparams '{{\"lam\": 5000}}'")
    if not isinstance(overrides, dict):
        parser.error("--hparams must be a JSON object, e.g. '{\"lam\": 5000}'")
    from .errors import OptionError
    from .methods import default_hparams
    try:
        default_hparams("toy", args.method).replace(**overrides)
    except (OptionError, TypeError, ValueError) as exc:
        parser.error(f"--hparams: {exc}")


def _check_device(parser, device: str | None) -> None:
    if device is None:
        return
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        parser.error(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            parser.error(f"--device {device}: CUDA is not available here ({count} GPU(s)); "
                         "use --device cpu or leave it out")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        parser.error(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        parser.error(f"--device {device}: use cpu, cuda, cuda:N or mps")


def _check_out(parser, out: Path, resuming: bool) -> None:
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; give a folder")
    if not resuming and (out / CHECKPOINT).exists():
        parser.error(f"--out {out} already holds a run; continue it with --resume {out} or "
                     "choose another folder")
    if resuming and not (out / CHECKPOINT).exists():
        parser.error(f"--resume {out}: no checkpoint there")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".oteseq-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        parser.error(f"--out {out} is not writable ({exc.strerror or exc}); choose another folder")


# ----------------------------------------------------------------- the run
def _evaluate_name(data_name: str) -> str:
    return "zsre" if data_name.endswith("zsre") else "counterfact"


@contextmanager
def _no_interrupt():
    """Hold Ctrl-C until the block (a checkpoint write) is done, then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _checkpoint(editor, result, cli: dict, out: Path, complete: bool) -> dict:
    """Editor state (with the result inside) and ``results.json``: :class:`Result`'s JSON
    schema plus ``complete``. Both writes are atomic; Ctrl-C waits for them."""
    from . import _atomic
    body = {**result.to_dict(), "complete": complete}
    with _no_interrupt():
        editor.save(out / CHECKPOINT, extra={"result": body, "cli": cli})
        _atomic.write_json(out / RESULTS, body)
    return body


def _saved_run(out: Path, model: Model, tok: Tokenizer, progress: bool):
    """The editor and partial result saved in OUT (``--resume``)."""
    from .editor import Editor
    from .errors import StateMismatchError
    from .experiments import Result
    editor = Editor.load(out / CHECKPOINT, model, tok, progress=progress)
    try:
        partial = Result.from_dict(editor.extra["result"])
    except (KeyError, TypeError, StateMismatchError) as exc:
        raise StateMismatchError(f"--resume {out}: the checkpoint holds no oteseq result "
                                 f"({exc}); start the run again in a new folder") from None
    return editor, partial


def run_edit(args) -> dict:
    """The experiment behind ``oteseq edit`` (arguments already checked):
    :func:`oteseq.experiments.run_sequential` with a checkpoint after every batch. Returns the
    result dictionary (also written). Raises :class:`Interrupted` on Ctrl-C after saving."""
    import torch

    import oteseq
    from . import data, methods
    from .errors import OptionError
    from .experiments import run_sequential

    oteseq.setup(args.seed)
    records = data.load(args.data, args.n, seed=args.seed, model=args.model)
    if len(records) < args.n:
        raise OptionError(f"--n {args.n}: {args.data} has only {len(records)} records; pass "
                          f"--n {len(records)} or fewer")
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    model, tok = oteseq.load_model(args.model, device=device)
    hp = methods.default_hparams(args.model if args.model == "toy" else model, args.method)
    if args.hparams:
        hp = hp.replace(**json.loads(args.hparams))
    out, cli = Path(args.out), {k: getattr(args, k) for k in RUN_OPTIONS}
    editor, partial = (_saved_run(out, model, tok, not args.no_progress)
                       if args.resume is not None else (None, None))
    state = {"editor": editor, "batches": len(partial.batches) if partial else 0, "n": 0}

    def checkpoint(ed, t, result) -> None:
        state.update(editor=ed, batches=t, n=result.config["n_batches"])
        _checkpoint(ed, result, cli, out, complete=False)

    try:
        result = run_sequential(
            model, tok, records, method=args.method, batch_size=args.batch, hparams=hp,
            evaluate=_evaluate_name(args.data), seed=args.seed, progress=not args.no_progress,
            restore=False, data=args.data, split_repeated=True, on_batch=checkpoint,
            editor=editor, partial=partial)
    except KeyboardInterrupt:
        saved = (f"{state['batches']} of {state['n']} batches are saved in "
                 f"{out / CHECKPOINT}; continue with `python -m oteseq edit --resume {out}`"
                 if (out / CHECKPOINT).exists() else "nothing was edited yet")
        raise Interrupted(f"interrupted: {saved}") from None
    body = _checkpoint(state["editor"], result, cli, out, complete=True)
    _plot(body, out / "plot.png")
    return body


def _plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = result["batches"]
    x = [b["first"] + b["size"] for b in batches]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for phase in ("values", "keys", "solve"):
        axes[0].plot(x, [b["timings"].get(phase, 0.0) for b in batches], marker=".", label=phase)
    axes[0].set(xlabel="records so far", ylabel="seconds per batch", title="time per phase")
    axes[0].legend()
    axes[1].plot(x, [b["mean_loss"] for b in batches], marker=".")
    axes[1].set(xlabel="records so far", ylabel="mean value loss", title="value optimisation")
    pre, post = result["metrics"]["pre"], result["metrics"]["post"]
    if post:
        keys = [k for k in ("efficacy", "generalization", "specificity")
                if isinstance(post.get(k), float) and isinstance(pre.get(k), float)]
        text = "\n".join(f"{k}: {pre[k]:.3f} → {post[k]:.3f}" for k in keys)
        axes[1].text(0.98, 0.95, text, transform=axes[1].transAxes, ha="right", va="top")
    fig.suptitle(f"{result['config']['method']} on {result['config']['model']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    """Entry point of ``python -m oteseq`` and the ``oteseq`` script."""
    parser = _parser()
    args = _checked(parser, parser.parse_args(argv))
    from .errors import OteseqError
    try:
        result = run_edit(args)
    except Interrupted as stop:
        print(f"oteseq: {stop}", file=sys.stderr)
        return 130
    except OteseqError as error:
        print(f"oteseq: error: {error}", file=sys.stderr)
        return 2
    summary = {k: round(v, 4) for k, v in result["metrics"]["post"].items()
               if isinstance(v, float)}
    print(json.dumps({"out": args.out, "n_edits": sum(b["n_edits"] for b in result["batches"]),
                      "timings": {k: round(v, 1) for k, v in result["timings"].items()},
                      "metrics": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
