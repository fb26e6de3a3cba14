"""``python -m oteseq.toy train|report``: rebuild the shipped toy model, or measure its quality.

train   trains a version's recipe (``--version toy-v2``: ``TrainConfig`` defaults;
        ``toy-v1``: ``train.V1``; fields overridable with ``--set key=value``) and writes the
        model, tokenizer and training report to ``--out`` (default: the version's folder in
        the package).
report  loads a model (default: the version's shipped one), measures recall per prompt kind
        and fluency, writes ``quality_report.json`` next to it and prints it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path


def _parse_overrides(pairs: list[str]) -> dict:
    from .train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown setting {key!r}; known: {', '.join(fields)}")
        out[key] = json.loads(value)
    return out


def main(argv: list[str] | None = None) -> int:
    from .versions import VERSIONS

    parser = argparse.ArgumentParser(prog="python -m oteseq.toy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("train", "report"))
    parser.add_argument("--version", choices=sorted(VERSIONS), default="toy-v2",
                        help="which packaged toy model: its recipe and folder")
    parser.add_argument("--out", type=Path, default=None, help="model folder")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="override TrainConfig fields, e.g. steps=100 n_layer=4")
    parser.add_argument("--n-facts", type=int, default=None, help="report: facts to sample")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    version = VERSIONS[args.version]
    out = args.out if args.out is not None else version.path
    if args.command == "train":
        from .train import V1, TrainConfig, train

        recipe = V1 if version.name == "toy-v1" else TrainConfig()
        cfg = dataclasses.replace(recipe, **_parse_overrides(args.set))
        _, _, report = train(cfg, out, progress=True)
        summary = {k: report[k] for k in ("train_seconds", "wall_seconds", "cpu_seconds",
                                          "tokens_per_second", "n_parameters", "recall_curve")}
    else:
        from ..loading import load_model
        from .report import quality_report
        from ._world import world

        model, tok = load_model(str(out) if args.out is not None else version.name)
        cfg = json.loads((out / "training_report.json").read_text())["config"]
        summary = quality_report(model, tok, world(cfg["seed"], cfg["n_subjects"]),
                                 n_facts=args.n_facts)
        (out / "quality_report.json").write_text(json.dumps(summary, indent=1))
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
