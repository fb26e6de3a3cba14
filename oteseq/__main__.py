"""Command line: ``python -m oteseq edit ...`` runs one sequential-editing experiment.

    python -m oteseq edit --model toy --data toy-counterfact --n 2000 --batch 100 \\
        --method memit-seq --out runs/toy --eval
    python -m oteseq edit --model gpt2-xl --data counterfact ...   # the same at full scale

Protocol (recorded in the result file): the first ``n`` records are edited in batches of
``batch``, one after the other, never restored; with ``--eval`` every record is evaluated once
on the final model (and once before editing). Writes ``results.json`` and ``plot.png``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

PROTOCOL = ("sequential: batches edited one after another without restoring weights; "
            "evaluation (if any) of all edited records once before and once after all batches")


def _parser() -> argparse.ArgumentParser:
    from .methods import METHODS
    parser = argparse.ArgumentParser(prog="oteseq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    edit = sub.add_parser("edit", help="run a sequential editing experiment")
    edit.add_argument("--model", default="toy", help="'toy', a hub id or a local folder")
    edit.add_argument("--data", default="toy-counterfact",
                      help="counterfact, mcf, zsre, toy-counterfact, toy-zsre, toy-conflicts")
    edit.add_argument("--n", type=int, default=2000, help="records to edit")
    edit.add_argument("--batch", type=int, default=100, help="edits per sequential step")
    edit.add_argument("--method", default="memit-seq", choices=sorted(METHODS))
    edit.add_argument("--out", required=True, help="folder for results.json and plot.png")
    edit.add_argument("--seed", type=int, default=0)
    edit.add_argument("--eval", action="store_true", help="evaluate before and after editing")
    edit.add_argument("--device", default=None, help="e.g. cuda; default: cuda if available")
    edit.add_argument("--hparams", default=None,
                      help='JSON overrides of the default hparams, e.g. \'{"lam": 5000}\'')
    edit.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


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
    import torch
    import transformers

    from . import __version__
    return {"oteseq": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def run_edit(args) -> dict:
    """The experiment behind ``oteseq edit``; returns the result dictionary (also written)."""
    import torch
    from tqdm.auto import tqdm

    import oteseq
    from . import data, methods
    from .editor import Editor

    oteseq.setup(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    model, tok = oteseq.load_model(args.model, device=device)
    records = data.load(args.data, args.n, seed=args.seed)
    requests = _requests(args.data, records)
    hp = methods.default_hparams(args.model if args.model == "toy" else model, args.method)
    if args.hparams:
        hp = hp.replace(**json.loads(args.hparams))
    result = {"config": {**vars(args), "hparams": hp.to_dict()}, "versions": _versions(),
              "seed": args.seed, "protocol": PROTOCOL, "device": str(next(model.parameters()).device)}
    result["metrics_pre"] = _metrics(model, tok, args.data, records) if args.eval else None
    start = time.perf_counter()
    editor = Editor(model, tok, args.method, hparams=hp, seed=args.seed,
                    progress=not args.no_progress)
    timings, batches = {"setup (stats, P, templates)": time.perf_counter() - start}, []
    steps = range(0, len(requests), args.batch)
    for first in tqdm(steps, desc=f"{args.method}: batches of {args.batch}",
                      disable=args.no_progress):
        report = editor.edit(requests[first: first + args.batch])
        batches.append({"first": first, "n_edits": report.n_edits, "skipped": len(report.skipped),
                        "conflicts": len(report.conflicts), "timings": report.timings,
                        "mean_loss": sum(report.losses) / max(len(report.losses), 1),
                        "update_norms": {str(k): v for k, v in report.update_norms.items()}})
    for phase in ("values", "keys", "solve"):
        timings[phase] = sum(b["timings"][phase] for b in batches)
    timings["total"] = time.perf_counter() - start
    result.update(timings=timings, batches=batches, n_edits=editor.n_edits)
    result["metrics"] = _metrics(model, tok, args.data, records) if args.eval else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    _plot(result, out / "plot.png")
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = result["batches"]
    x = [b["first"] + b["n_edits"] for b in batches]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for phase in ("values", "keys", "solve"):
        axes[0].plot(x, [b["timings"][phase] for b in batches], marker=".", label=phase)
    axes[0].set(xlabel="edits so far", ylabel="seconds per batch", title="time per phase")
    axes[0].legend()
    axes[1].plot(x, [b["mean_loss"] for b in batches], marker=".")
    axes[1].set(xlabel="edits so far", ylabel="mean value loss", title="value optimisation")
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
    args = _parser().parse_args(argv)
    from .errors import OteseqError
    try:
        result = run_edit(args)
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
