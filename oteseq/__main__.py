"""Command line: ``python -m oteseq edit ...`` runs one sequential-editing experiment.

    python -m oteseq edit --model toy --data toy-counterfact --n 2000 --batch 100 \\
        --method memit-seq --out runs/toy --eval
    python -m oteseq edit --model gpt2-xl --data counterfact ...   # the same at full scale
    python -m oteseq edit --resume runs/toy                         # continue a stopped run

Protocol (recorded in the result file): the first ``n`` records are edited in batches of
``batch``, one after the other, never restored; a batch ends early where a record re-edits an
id already in it (the re-edit then replaces the earlier one, ``on_conflict="replace"``); with
``--eval`` every record is evaluated once on the final model (and once before editing).

Every argument is checked before the model loads (a one-line error, exit code 2). After every
batch the editor state and the results so far are written to ``OUT/checkpoint`` (crash-safe,
see :mod:`oteseq.editor_state`) and ``OUT/results.json``; Ctrl-C finishes the current write,
keeps every finished batch and exits with 130; ``--resume OUT`` continues and ends with the
same weights as an uninterrupted run. At the end ``results.json`` and ``plot.png`` are written.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

PROTOCOL = ("sequential: batches edited one after another without restoring weights; a batch "
            "ends early at an id already in it; evaluation (if any) of all edited records once "
            "before and once after all batches")
CHECKPOINT, RESULTS = "checkpoint", "results.json"
RUN_OPTIONS = {"model": "toy", "data": "toy-counterfact", "n": 2000, "batch": 100,
               "method": "memit-seq", "seed": 0, "eval": False, "hparams": None}


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
    edit.add_argument("--eval", action="store_true", default=None,
                      help="evaluate before and after editing")
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
def _requests(name: str, records: list) -> list:
    from .requests import Request
    convert = Request.from_zsre if name.endswith("zsre") else Request.from_counterfact
    return [convert(r) for r in records]


def _metrics(model, tok, name: str, records: list) -> dict:
    from . import evaluate
    if name.endswith("zsre"):
        return evaluate.zsre(model, tok, records)
    return evaluate.counterfact(model, tok, records)


def _versions() -> dict:
    from .experiments import versions
    return versions()


def batches_of(requests: list, size: int) -> list[list]:
    """Consecutive batches of at most ``size`` requests; a batch ends early before a request
    whose id is already in it, so a record and its re-edit are edited one after the other."""
    out, current, ids = [], [], set()
    for r in requests:
        if len(current) == size or r.id in ids:
            out.append(current)
            current, ids = [], set()
        current.append(r)
        ids.add(r.id)
    return out + [current] if current else out


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


def _finite(x):
    """NaN and infinities become None (JSON has neither)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _checkpoint(editor, result: dict, cli: dict, out: Path) -> None:
    from . import _atomic
    result.update(_finite(result))
    with _no_interrupt():
        editor.save(out / CHECKPOINT, extra={"result": result, "cli": cli})
        _atomic.write_json(out / RESULTS, result, default=str)


def _start(args, model, tok, records, hp, out: Path, cli: dict):
    """A fresh editor and result (pre-edit metrics first), or the ones saved in OUT."""
    from .editor import Editor
    if args.resume is not None:
        editor = Editor.load(out / CHECKPOINT, model, tok, progress=not args.no_progress)
        return editor, editor.extra["result"]
    result = {"config": {**cli, "out": str(out), "device": args.device, "hparams": hp.to_dict()},
              "versions": _versions(), "seed": args.seed, "protocol": PROTOCOL,
              "device": str(next(model.parameters()).device), "complete": False,
              "timings": {"setup (stats, P, templates)": 0.0}, "batches": [], "n_edits": 0}
    result["metrics_pre"] = _metrics(model, tok, args.data, records) if args.eval else None
    start = time.perf_counter()
    editor = Editor(model, tok, args.method, hparams=hp, seed=args.seed,
                    progress=not args.no_progress)
    result["timings"]["setup (stats, P, templates)"] = time.perf_counter() - start
    _checkpoint(editor, result, cli, out)  # batch 0: a run stopped in batch 1 can resume
    return editor, result


def run_edit(args) -> dict:
    """The experiment behind ``oteseq edit`` (arguments already checked); returns the result
    dictionary (also written). Raises :class:`Interrupted` on Ctrl-C after saving."""
    import torch
    from tqdm.auto import tqdm

    import oteseq
    from . import data, methods
    from .errors import OptionError

    oteseq.setup(args.seed)
    records = data.load(args.data, args.n, seed=args.seed)
    if len(records) < args.n:
        raise OptionError(f"--n {args.n}: {args.data} has only {len(records)} records; pass "
                          f"--n {len(records)} or fewer")
    requests = _requests(args.data, records)
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    model, tok = oteseq.load_model(args.model, device=device)
    hp = methods.default_hparams(args.model if args.model == "toy" else model, args.method)
    if args.hparams:
        hp = hp.replace(**json.loads(args.hparams))
    out, cli = Path(args.out), {k: getattr(args, k) for k in RUN_OPTIONS}
    batches = batches_of(requests, args.batch)
    result: dict = {"batches": []}
    try:
        editor, result = _start(args, model, tok, records, hp, out, cli)
        result["config"]["n_batches"] = len(batches)
        done = len(result["batches"])
        first = sum(len(b) for b in batches[:done])
        for batch in tqdm(batches[done:], desc=f"{args.method}: batches of {args.batch}",
                          disable=args.no_progress, initial=done, total=len(batches)):
            start = time.perf_counter()
            report = editor.edit(batch)
            result["batches"].append({
                "first": first, "size": len(batch), "n_edits": report.n_edits,
                "skipped": len(report.skipped), "conflicts": len(report.conflicts),
                "timings": report.timings, "seconds": time.perf_counter() - start,
                "mean_loss": sum(report.losses) / max(len(report.losses), 1),
                "update_norms": {str(k): v for k, v in report.update_norms.items()}})
            first += len(batch)
            result["n_edits"] = editor.n_edits
            _checkpoint(editor, result, cli, out)
    except KeyboardInterrupt:
        saved = (f"{len(result['batches'])} of {len(batches)} batches are saved in "
                 f"{out / CHECKPOINT}; continue with `python -m oteseq edit --resume {out}`"
                 if (out / CHECKPOINT).exists() else "nothing was edited yet")
        raise Interrupted(f"interrupted: {saved}") from None
    timings = result["timings"]
    for phase in ("values", "keys", "solve"):
        timings[phase] = sum(b["timings"].get(phase, 0.0) for b in result["batches"])
    timings["total"] = timings["setup (stats, P, templates)"] + sum(
        b["seconds"] for b in result["batches"])
    result["metrics"] = _metrics(model, tok, args.data, records) if args.eval else None
    result["complete"] = True
    _checkpoint(editor, result, cli, out)
    _plot(result, out / "plot.png")
    return result


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
    if result.get("metrics"):
        keys = [k for k in ("efficacy", "generalization", "specificity") if k in result["metrics"]]
        text = "\n".join(f"{k}: {result['metrics_pre'][k]:.3f} → {result['metrics'][k]:.3f}"
                         for k in keys)
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
    summary = {k: round(v, 4) for k, v in (result["metrics"] or {}).items()
               if isinstance(v, float)}
    print(json.dumps({"out": args.out, "n_edits": result["n_edits"],
                      "timings": {k: round(v, 1) for k, v in result["timings"].items()},
                      "metrics": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
