"""One batch of edits: oteseq's Editor against a re-implementation of the research loop.

    python bench/reference_loop.py [--method alphaedit|memit-seq] [--n 20] [--steps 20]

Both sides edit a fresh GPT-2-small-shaped model with random weights (12 blocks, d 768,
d_ff 3072, vocab 50257; layers 2–4) with the same ``--n`` toy CounterFact requests, the same
six context templates (the bare prompt and five toy prefixes), the same synthetic C0 and the
same hyperparameters. Each side runs in its own subprocess, one after the other in one run,
so its peak resident memory (``ru_maxrss``) is its own; the table prints both and the ratios.

The reference is the research code's loop (MEMIT / AlphaEdit ``apply_*_to_model``), rewritten:

1. target values one request at a time: MEMIT's ``compute_z`` (a full forward with logits per
   Adam step, δ added by a hook; :func:`oteseq.values.one_at_a_time`), the model's parameters
   left requiring gradients as in the research code;
2. for each edited layer, on the partly edited model: the keys one request at a time (a full
   forward with logits over its templates, the edited module's input read by a hook, averaged
   ½ bare prompt + ½ mean of the prefixes), the current block output at the last edited layer
   one request at a time (a full forward), then the float32 dense solve
   (AlphaEdit: ``Δ = solve(P (K Kᵀ + C_p) + L2·I, P K Rᵀ)ᵀ``; MEMIT-seq:
   ``solve(lam C0 + C_p + K Kᵀ, K Rᵀ)ᵀ``) and the weight update;
3. the keys of every layer recomputed on the edited model, one request at a time, for the
   cache ``C_p += K Kᵀ``.

The projector P (AlphaEdit) is computed before the timed batch on both sides (its cost is
measured by ``bench/setup.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import (general_texts, load_average, random_gpt2, toy_requests,  # noqa: E402
                    toy_tokenizer)

from oteseq import hooks, keys, model_reads, models, stats, values  # noqa: E402
from oteseq.batching import pad_token_id, right_padded  # noqa: E402
from oteseq.editor import Editor  # noqa: E402
from oteseq.methods import default_hparams  # noqa: E402
from oteseq.projectors import cached_projector  # noqa: E402


def setup(method: str, n: int, steps: int):
    tok = toy_tokenizer()
    model = random_gpt2("gpt2", tok)
    hp = default_hparams("gpt2", method).replace(mom2_corpus="toy", template_source="toy",
                                                 v_num_grad_steps=steps)
    C0 = stats.second_moments(model, tok, hp.layers, corpus=general_texts(500), cache=False,
                              progress=False)
    templates = model_reads.templates(model, tok, hp, seed=0)
    return model, tok, hp, C0, templates, toy_requests(n)


# ----------------------------------------------------------------------------- the reference
def keys_one(model, tok, request, layer: int, templates, fact_token: str) -> torch.Tensor:
    """(d_in,) key of one request: a full forward (logits) over its template rows."""
    rows = keys._rows(tok, [request], templates, fact_token)
    ids, mask = right_padded([r[0] for r in rows], pad_token_id(tok), "cpu")
    name = models.edited_name(model, layer)
    with torch.no_grad(), hooks.TraceDict(model, [name], retain_input=True) as trace:
        logits = model(input_ids=ids, attention_mask=mask).logits  # the full model, as there
    del logits
    hidden = trace[name].input
    return sum(w * hidden[i, index] for i, (_, index, _, w) in enumerate(rows)).float()


def block_output_one(model, tok, request, layer: int, fact_token: str) -> torch.Tensor:
    ids = torch.tensor([tok(request.text).input_ids])
    index = keys.subject_last_index(tok, request.prompt, request.subject, mode=fact_token)
    with torch.no_grad(), hooks.Trace(models.block(model, layer)) as trace:
        logits = model(input_ids=ids).logits
    del logits
    return trace.output[0, index].float()


def reference_batch(model, tok, hp, C0, templates, requests, method: str, P: dict, cache: dict):
    t = {"values": 0.0, "keys": 0.0, "solve": 0.0}
    start = time.perf_counter()
    z = values.one_at_a_time(model, tok, requests, hp.layers[-1], hp, templates=templates).z
    t["values"] = time.perf_counter() - start
    for i, layer in enumerate(hp.layers):
        start = time.perf_counter()
        K = torch.stack([keys_one(model, tok, r, layer, templates, hp.fact_token)
                         for r in requests], dim=1)
        z_cur = torch.stack([block_output_one(model, tok, r, hp.layers[-1], hp.fact_token)
                             for r in requests], dim=1)
        t["keys"] += time.perf_counter() - start
        start = time.perf_counter()
        R = (z - z_cur) / (len(hp.layers) - i)
        module = models.edited_module(model, layer)
        W = models.read_weight(module).float()
        resid = R  # (d_out, n): the targets' residual spread over the remaining layers
        eye = torch.eye(K.shape[0])
        if method == "alphaedit":
            A = P[layer] @ (K @ K.T + cache[layer]) + hp.ridge * eye
            delta = torch.linalg.solve(A, P[layer] @ K @ resid.T).T
        else:
            A = hp.lam * C0[layer].float() + cache[layer] + K @ K.T
            delta = torch.linalg.solve(A, K @ resid.T).T
        models.write_weight(module, W + delta)
        t["solve"] += time.perf_counter() - start
    start = time.perf_counter()
    for layer in hp.layers:  # keys recomputed on the edited model for the cache
        K = torch.stack([keys_one(model, tok, r, layer, templates, hp.fact_token)
                         for r in requests], dim=1)
        cache[layer] += K @ K.T
    t["keys"] += time.perf_counter() - start
    return t


def side(name: str, method: str, n: int, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model, tok, hp, C0, templates, requests = setup(method, n, steps)
    if name == "reference":
        P = {l: cached_projector(C0[l], hp.nullspace_threshold, cache=False)[0].float()
             for l in hp.layers} if method == "alphaedit" else {}
        cache = {l: torch.zeros(C0[l].shape, dtype=torch.float32) for l in hp.layers}
        start, cpu = time.perf_counter(), time.process_time()
        t = reference_batch(model, tok, hp, C0, templates, requests, method, P, cache)
    else:
        ed = Editor(model, tok, method, hparams=hp, stats=C0, templates=templates,
                    progress=False)
        start, cpu = time.perf_counter(), time.process_time()
        t = dict(ed.edit(requests).timings)
    t["total"] = time.perf_counter() - start
    t["cpu"] = time.process_time() - cpu  # this process's CPU seconds: less sensitive to load
    t["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="alphaedit", choices=["alphaedit", "memit-seq"])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write both sides, the machine and the loads to PATH")
    parser.add_argument("--side", choices=["reference", "oteseq"], default=None,
                        help="run one side here and print it as JSON (used by the main run)")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args.side, args.method, args.n, args.steps, args.threads)))
        return
    print(f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"{args.method}, {args.n} requests, ≤ {args.steps} value steps, GPT-2-small shape; "
          f"load average {load_average()}",
          flush=True)
    results, loads = {}, {"start": load_average()}
    for name in ("reference", "oteseq"):
        out = subprocess.run([sys.executable, __file__, "--side", name, "--method", args.method,
                              "--n", str(args.n), "--steps", str(args.steps),
                              "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:>9}: total {r['total']:8.2f} s  values {r['values']:8.2f}  keys "
              f"{r['keys']:7.2f}  solve {r['solve']:6.2f}  (CPU {r['cpu']:8.2f} s)  peak RSS "
              f"{r['peak_mib']:6.0f} MiB; load average after {load_average()}",
              flush=True)
        loads[f"after {name}"] = load_average()
    ref, ote = results["reference"], results["oteseq"]
    print("  ratio (reference / oteseq): total {:.1f}×, values {:.1f}×, keys {:.1f}×, CPU "
          "seconds {:.1f}×; peak memory oteseq / reference {:.2f}".format(
              ref["total"] / ote["total"], ref["values"] / ote["values"],
              ref["keys"] / ote["keys"], ref["cpu"] / ote["cpu"],
              ote["peak_mib"] / ref["peak_mib"]))
    if args.json is not None:
        command = " ".join(sys.argv[1:])
        args.json.write_text(json.dumps(
            {"command": command, "machine": platform.machine(), "cpus": os.cpu_count(),
             "torch": torch.__version__, "threads": args.threads, "method": args.method,
             "requests": args.n, "max_steps": args.steps, "load_average": loads,
             "sides": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
