"""Batched CounterFact / zsRE evaluation vs one prompt at a time, on the toy model.

    python bench/evaluation.py [--records 2000] [--small 100] [--threads 1] [--device cpu]

Prints the time of three ways to score the same toy CounterFact records — one sequence per
forward pass (batch_size=1), one record per call (the reference's per-record batching), and
everything batched (oteseq, batch_size=64) — their speed-up ratios, and the time to evaluate
``--records`` records without generation, so you can see it does not dominate an experiment,
and the time of the generation metrics (fluency) on ``--gen-records`` records.
Uses ``oteseq.load_model("toy")`` when the toy weights are installed, else a random GPT-2 of
the toy recipe's shape (6 layers, width 128) with a tokenizer fitted on toy text, so timings
are representative; the metric values of the random model are meaningless.
"""
from __future__ import annotations

import argparse
import time

import torch

import oteseq
import oteseq.evaluate as ev
from oteseq.toy import counterfact as toy_counterfact, zsre as toy_zsre


def _toy_shaped_random_model():
    """A random GPT-2 with the toy recipe's shape and a BPE tokenizer fitted on toy text."""
    from oteseq.toy.corpus import general_text
    from oteseq.toy.tokenizer import train_tokenizer
    from oteseq.toy.train import TrainConfig, make_model
    cfg = TrainConfig()
    texts = general_text(2000, 0) + [p for r in toy_counterfact(500, seed=9)
                                     for p in r["paraphrase_prompts"] + r["neighborhood_prompts"]]
    tok = train_tokenizer(texts, cfg.vocab_size)
    torch.manual_seed(0)
    return make_model(cfg, tok), tok


def _model(device: str):
    try:
        model, tok = oteseq.load_model("toy")
        label = "toy model (oteseq.load_model('toy'))"
    except Exception as exc:  # noqa: BLE001 - fall back to a random model of the same shape
        model, tok = _toy_shaped_random_model()
        label = f"random GPT-2 of the toy shape (toy weights unavailable: {type(exc).__name__})"
    return model.to(device).eval(), tok, label


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--small", type=int, default=100, help="records for the ratio runs")
    parser.add_argument("--gen-records", type=int, default=50,
                        help="records for the generation (fluency) timing")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    model, tok, label = _model(args.device)
    print(f"model: {label}; device: {args.device}; threads: {torch.get_num_threads()}")
    records = toy_counterfact(args.small, seed=0)
    n_prompts = sum(1 + len(r["paraphrase_prompts"]) + len(r["neighborhood_prompts"])
                    for r in records)
    ev.counterfact(model, tok, records[:4])  # warm-up
    t_one, one = _timed(lambda: ev.counterfact(model, tok, records, batch_size=1))
    t_rec, _ = _timed(lambda: [ev.counterfact(model, tok, [r], batch_size=64) for r in records])
    t_all, batched = _timed(lambda: ev.counterfact(model, tok, records, batch_size=64))
    assert abs(one["efficacy"] - batched["efficacy"]) < 1e-9
    print(f"CounterFact, {len(records)} records = {n_prompts} prompts = {2 * n_prompts} sequences")
    print(f"  one sequence per forward : {t_one:8.2f} s")
    print(f"  one record per call      : {t_rec:8.2f} s")
    print(f"  all batched (64)         : {t_all:8.2f} s")
    print(f"  speed-up batched vs one-at-a-time: {t_one / t_all:6.1f}x;"
          f" vs per-record: {t_rec / t_all:6.1f}x")
    big = toy_counterfact(args.records, seed=1)
    t_big, result = _timed(lambda: ev.counterfact(model, tok, big, batch_size=64))
    print(f"CounterFact, {len(big)} records, no generation: {t_big:.2f} s "
          f"(efficacy {result['efficacy']:.3f}, specificity {result['specificity']:.3f})")
    z_records = toy_zsre(args.records, seed=1)
    t_z, z = _timed(lambda: ev.zsre(model, tok, z_records, batch_size=64))
    print(f"zsRE, {len(z_records)} records: {t_z:.2f} s (efficacy {z['efficacy']:.3f})")
    gen = records[:args.gen_records]
    n_gen = sum(len(r["generation_prompts"]) for r in gen)
    t_gen, g = _timed(lambda: ev.counterfact(model, tok, gen, generation=True, batch_size=64))
    print(f"CounterFact with generation, {len(gen)} records ({n_gen} texts of 100 tokens): "
          f"{t_gen:.2f} s (fluency {g['fluency']:.1f})")


if __name__ == "__main__":
    main()
