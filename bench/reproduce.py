"""Reproduce the paper's sequential-editing table on the toy world.

    python bench/reproduce.py --scale budget --seed 0     # toy-v2: 80 edits in 20 x 4 + OTE
    python bench/reproduce.py --model toy-v1 --scale paper  # 20 batches of 100 + OTE (E2000)
    python bench/reproduce.py --scale ci --methods memit memit-seq --out /tmp/results
    python bench/reproduce.py --conflicts                 # accumulate vs replace, conflicts.md
    python bench/reproduce.py --model toy-v2 --scale paper --seed 1 --evaluate zsre
    python bench/reproduce.py --model toy-v2 --scale budget --seed 0   # 80 edits in 20 x 4
    python bench/reproduce.py --aggregate oteseq/toy/results/v2/counterfact-paper

Every method edits the same records in T = n/B batches with the toy model's default
hyperparameters, then all records are evaluated on the final model
(``oteseq.experiments.run_sequential``); ``memit-seq`` also edits all n at once (one-time
editing, the reference). Writes into ``oteseq/toy/results/v1/<evaluate>-<scale>/``
(``--model toy-v1``) or ``oteseq/toy/results/v2/<evaluate>-<scale>/seed<seed>/`` (``--model
toy``, the default toy-v2), ``.../conflicts/`` for ``--conflicts``, or ``--out``:
``table.json`` (configuration, versions, metrics, timings, SE-vs-OTE weight distances per
method), ``table.md``, ``curves.png``, ``methods.png`` and ``runs/<method>.json`` (each full
Result). ``--seed`` picks the records and the run's seed; ``--aggregate DIR`` reads
``DIR/seed*/table.json`` and writes the mean ± std table and general-ability figure over seeds.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("memit", "memit-seq", "alphaedit", "alphaedit-nocache", "prune", "rect",
           "memit-seq-prune-err", "memit-seq-rect-err")
ONE_TIME_METHOD = "memit-seq"
CURVE_METRICS = ("efficacy", "generalization", "specificity", "general.recall")


@dataclass(frozen=True)
class Scale:
    """How many toy CounterFact records, in batches of which size, and how often to measure."""

    n: int
    batch_size: int
    seed: int = 0
    eval_every: int = 1        # batches between evaluations of the records edited so far
    general_every: int = 1     # batches between general-ability checks


CONFLICTS = {"n": 40, "rate": 0.25, "seed": 0, "batch_size": 1, "method": "memit-seq"}
SCALES = {"ci": Scale(n=100, batch_size=25), "paper": Scale(n=2000, batch_size=100,
                                                           eval_every=5, general_every=5)}
# toy-v2: general ability every 200 edits (the paper's Figure 1, right)
# budget: the edits toy-v2 has room for (bench/capacity.py: up to 80 edits its person keys leak
# no more than random keys in GPT-2 XL's 6,400-wide MLP at 2,000), in the paper's 20 batches
SCALES_V2 = {"ci": Scale(n=100, batch_size=25),
             "paper": Scale(n=2000, batch_size=100, eval_every=5, general_every=2),
             "budget": Scale(n=80, batch_size=4, eval_every=2, general_every=2)}


def records_for(model_name: str, n: int, seed: int, kind: str = "counterfact", **options):
    """The toy records (``kind``: counterfact, zsre, conflicts) a packaged model is edited with,
    and how they were made (for the table): its own world, one fact per person where it has
    room for that (``ToyModel.distinct_subjects``)."""
    from oteseq import toy
    from oteseq.toy.versions import toy_model
    version = toy_model(model_name)
    w = version.world()
    records = getattr(toy, kind)(n, seed, world=w, distinct_subjects=version.distinct_subjects,
                                 **options)
    args = "".join(f", {k}={v}" for k, v in options.items())
    return records, (f"oteseq.toy.{kind}(n={n}, seed={seed}{args}, world={version.name}'s "
                     f"{len(w.subjects)} people, distinct_subjects={version.distinct_subjects})")


def run_all(scale: Scale, methods, progress: bool = True, model_name: str = "toy",
            evaluate: str = "counterfact", one_time: bool = True) -> tuple[dict, list]:
    """Every method's sequential run and the one-time reference; returns (table, results)."""
    import oteseq
    from oteseq import experiments, methods as methods_module, stats

    model, tok = oteseq.load_model(model_name)
    checkpoint = toy_checkpoint(model_name)
    records, data = records_for(model_name, scale.n, scale.seed, evaluate)
    results, C0_cache, stats_seconds = [], {}, 0.0
    common = dict(eval_every=scale.eval_every, general_every=scale.general_every,
                  seed=scale.seed, progress=progress, data=data, evaluate=evaluate)
    runs = [(m, scale.batch_size) for m in methods] + ([(ONE_TIME_METHOD, scale.n)]
                                                       if one_time else [])
    for i, (method, B) in enumerate(runs):
        hp = methods_module.default_hparams(model, method)
        key = (hp.layers, hp.mom2_corpus, hp.mom2_n_samples)
        if key not in C0_cache:
            start = time.perf_counter()
            C0_cache[key] = stats.second_moments(model, tok, list(hp.layers),
                                                 corpus=hp.mom2_corpus,
                                                 n_samples=hp.mom2_n_samples, progress=progress)
            stats_seconds += time.perf_counter() - start
        logging.info("%s, batches of %d", method, B)
        result = experiments.run_sequential(model, tok, records, method=method, batch_size=B,
                                            hparams=hp, stats=C0_cache[key], **common)
        result.config["label"] = (f"{method} (one-time)" if one_time and i == len(runs) - 1
                                  else method)
        results.append(result)
    table = _table(scale, results, stats_seconds, one_time)
    cfg = model.config
    table["model_description"] = (f"a {cfg.n_layer}-layer GPT-2, d_model {cfg.n_embd}, d_ff "
                                  f"{cfg.n_inner}, trained on a synthetic world")
    table["evaluate"] = evaluate
    table["checkpoint"] = checkpoint
    table["stats_corpus"] = sorted({getattr(C0, "corpus", None) or "?" for C0 in C0_cache.values()})
    return table, results


def toy_checkpoint(model_name: str = "toy") -> dict:
    """Whether the shipped toy model is a partial (interim) checkpoint, and its last recall."""
    import json
    from oteseq.loading import toy_model_dir
    path = toy_model_dir(model_name) / "training_report.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    curve = report.get("recall_curve") or [[None, None]]
    return {"partial": bool(report.get("partial", False)), "step": curve[-1][0],
            "recall": curve[-1][1]}


def _row(result, one_time=None) -> dict:
    from oteseq import experiments
    post, general = result.metrics["post"], (result.metrics["post"].get("general") or
                                             _last_general(result))
    row = {"label": result.config["label"], "method": result.method,
           "batch_size": result.config["batch_size"], "config": result.config,
           "post": {k: post.get(k) for k in ("efficacy", "generalization", "specificity",
                                                "score")},
           "general": general, "timings": result.timings,
           "edits_written": sum(b["n_edits"] for b in result.batches),
           "edits_skipped": sum(b["skipped"] for b in result.batches)}
    row["se_vs_ote"] = ({} if one_time is None else
                        {str(l): v for l, v in
                         experiments.weight_distance(result, one_time).items()})
    return row


def _last_general(result):
    points = [p["general"] for p in result.metrics["curves"] if "general" in p]
    return points[-1] if points else None


def _table(scale: Scale, results, stats_seconds: float, with_one_time: bool = True) -> dict:
    from oteseq import experiments
    one_time = results[-1] if with_one_time else None
    first = results[0]
    return {"scale": asdict(scale), "protocol": experiments.PROTOCOL,
            "one_time_method": ONE_TIME_METHOD, "versions": experiments.versions(),
            "model": first.config["model"], "fingerprint": first.config["fingerprint"],
            "data": first.config["data"], "stats_seconds": stats_seconds,
            "pre": {k: first.metrics["pre"].get(k) for k in
                    ("efficacy", "generalization", "specificity", "score")},
            "pre_general": first.metrics["pre"].get("general"),
            "rows": [_row(r, one_time) for r in results]}


def _fmt(x, scale=100.0, digits=1) -> str:
    return "–" if x is None else f"{scale * x:.{digits}f}"


def markdown(table: dict) -> str:
    """The table the book shows, with the setting spelled out above it."""
    s = table["scale"]
    lines = [f"Toy world, {table['data']}: {s['n']} edits in batches of {s['batch_size']} "
             f"({-(-s['n'] // s['batch_size'])} batches, weights never restored), then all "
             f"{s['n']} records evaluated on the final model ({table['protocol']}). "
             "**These are toy-world numbers** ("
             + table.get("model_description", "a 6-layer GPT-2 trained on a synthetic world")
             + "), "
             "not the paper's GPT-2 XL / GPT-J / Llama-3 numbers."
             + (" Model: an interim training checkpoint (step "
                f"{table['checkpoint'].get('step')}), not the final toy model."
                if table.get("checkpoint", {}).get("partial") else ""), "",
             "| Method | Eff. | Gen. | Spe. | Score | Recall of untouched facts | Text NLL | "
             "max ‖W_seq−W_ote‖/‖W_ote−W0‖ | Edit time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    pre, pg = table["pre"], table.get("pre_general") or {}
    lines.append(f"| unedited | {_fmt(pre['efficacy'])} | {_fmt(pre['generalization'])} | "
                 f"{_fmt(pre['specificity'])} | {_fmt(pre['score'])} | "
                 f"{_fmt(pg.get('recall'))} | {_fmt(pg.get('nll'), 1, 3)} | – | – |")
    for row in table["rows"]:
        p, g = row["post"], row["general"] or {}
        dist = max(row["se_vs_ote"].values()) if row["se_vs_ote"] else None
        lines.append(f"| {row['label']} | {_fmt(p['efficacy'])} | {_fmt(p['generalization'])} | "
                     f"{_fmt(p['specificity'])} | {_fmt(p['score'])} | {_fmt(g.get('recall'))} "
                     f"| {_fmt(g.get('nll'), 1, 3)} | {_fmt(dist, 1, 3)} | "
                     f"{row['timings'].get('edit', 0.0):.0f} |")
    lines += ["", "Eff./Gen./Spe.: CounterFact success rates ×100 (P(new) > P(true) on the "
              "rewrite / paraphrase prompts, P(true) > P(new) on neighbourhood prompts); Score: "
              "their harmonic mean. Recall: teacher-forced exact match on 600 facts no edit "
              "touches; NLL: nats per token of held-out general text. The distance column is "
              "the largest over edited layers of the sequential weights' distance to the "
              "one-time (all edits in one batch) memit-seq weights, relative to the one-time "
              "update; 0 for exact OTE-SE equivalence with fixed keys and values."]
    return "\n".join(lines) + "\n"


def write(table: dict, results, out: Path) -> None:
    """table.json, table.md, curves.png, methods.png and runs/*.json under ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from oteseq import experiments

    for result in results:
        name = result.config["label"].replace(" ", "").replace("(", "-").replace(")", "")
        experiments.save_result(result, out / "runs" / f"{name}.json")
    experiments.save_json(table, out / "table.json")
    (out / "table.md").write_text(markdown(table))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, metric in zip(axes.flat, CURVE_METRICS):
        experiments.plot_curves([r for r in results if "one-time" not in r.config["label"]],
                                metric, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=80)
    fig = experiments.plot_methods(results, ["efficacy", "generalization", "specificity"])
    fig.set_size_inches(9, 4)
    fig.tight_layout()
    fig.savefig(out / "methods.png", dpi=80)
    plt.close("all")


def run_conflicts(progress: bool = True, model_name: str = "toy") -> dict:
    """``oteseq.toy.conflicts`` edited one request at a time with each conflict policy."""
    import oteseq
    from oteseq import experiments
    c = CONFLICTS
    model, tok = oteseq.load_model(model_name)
    records, data = records_for(model_name, c["n"], c["seed"], "conflicts", rate=c["rate"])
    checkpoint = toy_checkpoint(model_name)
    out = {"setting": c, "data": data,
           "n_pairs": len(experiments.latest_pairs(records)), "policies": {}}
    for policy in ("accumulate", "replace"):
        result = experiments.run_sequential(
            model, tok, records, method=c["method"], batch_size=c["batch_size"], seed=c["seed"],
            on_conflict=policy, progress=progress, data=out["data"],
            final_checks={"conflicts": lambda m, t: experiments.conflict_outcome(m, t, records)})
        out["policies"][policy] = {"outcome": result.metrics["final_checks"]["conflicts"],
                                   "config": result.config, "timings": result.timings}
    out["versions"], out["checkpoint"] = experiments.versions(), checkpoint
    return out


def conflicts_markdown(table: dict) -> str:
    """The conflict experiment as a small markdown table."""
    lines = [f"Toy world, {table['data']}, {table['setting']['method']}, one edit per batch; "
             f"{table['n_pairs']} re-edited (subject, relation) pairs, compared on the latest "
             "record's rewrite and paraphrase prompts (toy-world numbers"
             + (f"; interim model checkpoint, step {table['checkpoint'].get('step')}"
                if table.get("checkpoint", {}).get("partial") else "") + ").", "",
             "| on_conflict | latest target beats replaced one (%) | p(latest) | p(replaced) |",
             "|---|---|---|---|"]
    for policy, row in table["policies"].items():
        o = row["outcome"]
        lines.append(f"| {policy} | {_fmt(o['latest_wins'])} | {o['p_latest']:.3f} | "
                     f"{o['p_earlier']:.3f} |")
    return "\n".join(lines) + "\n"


def results_dir(model: str, evaluate: str, scale: str, seed: int, *,
                conflicts: bool = False) -> Path:
    """Where stored results go in the package: ``oteseq/toy/results/<version>/`` then
    ``conflicts/`` or ``<evaluate>-<scale>/`` (and ``seed<k>/`` for toy-v2, which has several)."""
    from oteseq.loading import toy_name
    version = toy_name(model)
    root = ROOT / "oteseq" / "toy" / "results" / version.removeprefix("toy-")
    if conflicts:
        return root / "conflicts"
    run = root / f"{evaluate}-{scale}"
    return run if version == "toy-v1" else run / f"seed{seed}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted({*SCALES, *SCALES_V2}), default="ci",
                        help="ci, paper, or budget (toy-v2 only: 80 edits in 20 x 4)")
    parser.add_argument("--model", default="toy",
                        help="toy (the default version), toy-v1 or toy-v2")
    parser.add_argument("--seed", type=int, default=0, help="records and run seed")
    parser.add_argument("--evaluate", choices=("counterfact", "zsre"), default="counterfact")
    parser.add_argument("--no-one-time", action="store_true", help="skip the one-time run")
    parser.add_argument("--aggregate", type=Path, default=None, metavar="DIR",
                        help="only summarise DIR/seed*/table.json as mean ± std")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--conflicts", action="store_true",
                        help="run only the conflicting-edits experiment (conflicts.json/.md)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch
    import transformers
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    if args.aggregate is not None:
        from seeds import aggregate
        print(aggregate(args.aggregate))
        return
    from oteseq.loading import toy_name
    v1 = toy_name(args.model) == "toy-v1"
    if v1 and args.scale not in SCALES:
        parser.error(f"--scale {args.scale} is for toy-v2 (its edit budget); toy-v1 has "
                     f"{sorted(SCALES)}")
    out = args.out or results_dir(args.model, args.evaluate, args.scale, args.seed,
                                  conflicts=args.conflicts)
    if args.conflicts:
        from oteseq import experiments
        table = run_conflicts(progress=not args.quiet, model_name=args.model)
        experiments.save_json(table, out / "conflicts.json")
        (out / "conflicts.md").write_text(conflicts_markdown(table))
        print(conflicts_markdown(table))
        return
    start = time.perf_counter()
    import dataclasses
    scale = dataclasses.replace((SCALES if v1 else SCALES_V2)[args.scale], seed=args.seed)
    table, results = run_all(scale, args.methods, progress=not args.quiet,
                             model_name=args.model, evaluate=args.evaluate,
                             one_time=not args.no_one_time)
    table["wall_seconds"] = time.perf_counter() - start
    write(table, results, out)
    print(markdown(table))
    print(f"wrote {out} in {table['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
