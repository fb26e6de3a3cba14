"""How many edits a toy model has room for, measured against GPT-2 XL's 2,000.

    python bench/capacity.py                      # toy-v2: random-key law, person keys, budget
    python bench/capacity.py --edits              # + memit-seq vs memit over N and lam (~10 min)

One MEMIT step writes ``ΔW = R K₁ᵀ A⁻¹`` with ``A = lam·C0 + K₁K₁ᵀ``; an untouched key ``k``
receives ``R K₁ᵀA⁻¹k``. ``bench/key_geometry.py`` measures *self* (``kᵢᵀA⁻¹kᵢ``, how much of
its own residual an edit writes) and *leak* (``‖kᵀA⁻¹K₁‖``, how much of the edits' residuals
an untouched key takes). This script adds three things:

1. **The random-key law.** For keys as generic as possible (whitened C0 = I, keys N(0, I) in
   d dimensions), leak / self depends on the number of edits only through n / d (and weakly
   on lam / d). GPT-2 XL's 2,000 edits in a 6,400-wide edited MLP (lam 20,000) sit at
   n / d = 0.31: the reference value of leak / self.
2. **The toy's person keys** (canonical prompt, the model's edited blocks, lam of the
   protocol) over the number of edits N, averaged over the blocks.
3. **The budget:** the largest N whose person-key leak / self is at most GPT-2 XL's random-key
   value. Real GPT-2 XL keys are less generic than random ones, so the budget is a lower bound
   on the toy's analogue of 2,000 edits. ``--edits`` adds what editing does at each N
   (memit-seq vs memit, T = 10 batches, record seed 100, toy-world numbers).

Writes ``capacity.json`` and ``capacity.md`` into the model's folder (``--out`` elsewhere).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
XL = {"d": 6400, "n": 2000, "lam": 20000.0}   # GPT-2 XL: one edited MLP, the paper's edits
RATIOS = (0.05, 0.1, 0.25, 0.5)
SIZES = (20, 40, 60, 80, 100, 200, 300, 1000, 2000)   # multiples of the 20 batches
EDIT_SIZES = (40, 80, 200, 400)
EDIT_LAMS = (2000.0, 6000.0)


def _geometry():
    spec = importlib.util.spec_from_file_location("key_geometry", ROOT / "bench" /
                                                  "key_geometry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_ratio(d: int, n: int, lam: float, untouched: int = 500, seed: int = 0) -> float:
    """leak / self for n edited and ``untouched`` other keys drawn from N(0, I_d)."""
    gen = torch.Generator().manual_seed(seed)
    K1 = torch.randn(d, n, generator=gen, dtype=torch.float64)
    K2 = torch.randn(d, untouched, generator=gen, dtype=torch.float64)
    own, leak = _geometry().coefficients(K1, K2, torch.eye(d, dtype=torch.float64), lam, 0.0)
    return leak / own


def random_law() -> list[dict]:
    """leak / self over n / d for two widths and two lam / d (the law's table)."""
    rows = []
    for lam_per_d in (1.0, 3.125):
        for d in (512, 2048):
            for r in RATIOS:
                rows.append({"d": d, "n": int(r * d), "lam": lam_per_d * d,
                             "ratio": random_ratio(d, int(r * d), lam_per_d * d)})
    return rows


def person_curve(model_name: str, lam: float, untouched: int) -> list[dict]:
    """Person-key leak / self (mean over the edited blocks) for every N in ``SIZES``."""
    import transformers

    import oteseq
    from oteseq import methods, stats
    from oteseq.toy.corpus import preservation_text
    from oteseq.toy.versions import toy_model

    transformers.logging.set_verbosity_error()
    geometry, version = _geometry(), toy_model(model_name)
    world = version.world()
    model, tok = oteseq.load_model(model_name)
    hp = methods.default_hparams(version.name, "memit-seq")
    people = list(world.subjects)
    random.Random(0).shuffle(people)
    largest = max(n for n in SIZES if n + untouched <= len(people))
    relation = next(iter(world.relations.values()))
    K1 = geometry.person_keys(model, tok, people[:largest], relation, hp.layers)
    K2 = geometry.person_keys(model, tok, people[largest:largest + untouched], relation,
                              hp.layers)
    C = stats.second_moments(model, tok, list(hp.layers), progress=False,
                             corpus=preservation_text(5000, 0, world=world))
    rows = []
    for n in (n for n in SIZES if n <= largest):
        per_block = []
        for layer in hp.layers:
            own, leak = geometry.coefficients(K1[layer][:, :n], K2[layer],
                                              C.C0[layer].double(), lam, hp.ridge)
            per_block.append(leak / own)
        rows.append({"n": n, "ratio": sum(per_block) / len(per_block), "blocks": per_block})
    return rows


def edit_grid(model_name: str) -> list[dict]:
    """memit-seq and memit on N edits in 10 batches, lam in ``EDIT_LAMS`` (final model)."""
    import transformers

    import oteseq
    from oteseq import experiments, methods, toy
    from oteseq.toy.versions import toy_model

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    version = toy_model(model_name)
    model, tok = oteseq.load_model(model_name)
    rows = []
    for n in EDIT_SIZES:
        records = toy.counterfact(n, 100, world=version.world(), distinct_subjects=True)
        for method in ("memit-seq", "memit"):
            for lam in EDIT_LAMS:
                hp = methods.default_hparams(model, method).replace(
                    lam=lam, layers=(1, 2, 3), clamp_norm_factor=4.0)
                start = time.perf_counter()
                result = experiments.run_sequential(model, tok, records, method=method,
                                                    batch_size=n // 10, hparams=hp,
                                                    general_every=10**9, progress=False)
                post = result.metrics["post"]
                g0, g = result.metrics["pre"]["general"], result.metrics["curves"][-1]["general"]
                rows.append({"n": n, "method": method, "lam": lam,
                             "efficacy": post["efficacy"], "generalization":
                             post["generalization"], "specificity": post["specificity"],
                             "recall_ratio": g["recall"] / g0["recall"],
                             "nll_ratio": g["nll"] / g0["nll"],
                             "seconds": time.perf_counter() - start})
    return rows


def budget(curve: list[dict], reference: float) -> int:
    """Largest N whose person-key leak / self is at most ``reference`` (0 if none)."""
    return max((r["n"] for r in curve if r["ratio"] <= reference), default=0)


def markdown(table: dict) -> str:
    xl = table["xl"]
    lines = [f"Capacity of {table['model']} (toy-world numbers; `bench/capacity.py`).", "",
             "**Random keys** (N(0, I_d), whitened C0): leak / self depends on n / d.", "",
             "| n / d | " + " | ".join(f"d {r['d']}, lam/d {r['lam'] / r['d']:g}"
                                       for r in table["law"] if r["n"] == r["d"] // 20) + " |",
             "|---|" + "---|" * (len(table["law"]) // len(RATIOS))]
    for ratio in RATIOS:
        cells = [f"{r['ratio']:.3f}" for r in table["law"] if r["n"] == int(ratio * r["d"])]
        lines.append(f"| {ratio:g} | " + " | ".join(cells) + " |")
    lines += ["", f"GPT-2 XL, {xl['n']} edits in a {xl['d']}-wide MLP, lam {xl['lam']:g}: "
              f"n / d = {xl['n'] / xl['d']:.3f}, random-key leak / self "
              f"**{table['xl_ratio']:.3f}**.", "",
              f"**Person keys** of {table['model']} (lam {table['lam']:g}, blocks "
              f"{table['layers']}, {table['untouched']} untouched people):", "",
              "| N edits | leak / self (mean) | per block |", "|---|---|---|"]
    for r in table["curve"]:
        lines.append(f"| {r['n']} | {r['ratio']:.3f} | "
                     + " / ".join(f"{x:.2f}" for x in r["blocks"]) + " |")
    lines += ["", f"**Budget:** {table['budget']} edits (the largest N above whose leak / self "
              "is at most GPT-2 XL's random-key value; a lower bound, since real keys are "
              "less generic than random ones)."]
    if table.get("edits"):
        lines += ["", "**Editing at each N** (10 batches, record seed 100, final model):", "",
                  "| N | method | lam | Eff. | Gen. | Spe. | recall / unedited | NLL / unedited |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in table["edits"]:
            lines.append(f"| {r['n']} | {r['method']} | {r['lam']:g} | "
                         f"{100 * r['efficacy']:.1f} | {100 * r['generalization']:.1f} | "
                         f"{100 * r['specificity']:.1f} | {r['recall_ratio']:.3f} | "
                         f"{r['nll_ratio']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy-v2")
    parser.add_argument("--lam", type=float, default=2000.0, help="lam of the protocol")
    parser.add_argument("--untouched", type=int, default=1000)
    parser.add_argument("--edits", action="store_true", help="also edit at each N")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from oteseq import methods
    from oteseq.toy.versions import toy_model

    start = time.perf_counter()
    curve = person_curve(args.model, args.lam, args.untouched)
    xl_ratio = random_ratio(XL["d"], XL["n"], XL["lam"])
    table = {"model": args.model, "lam": args.lam, "untouched": args.untouched,
             "layers": list(methods.default_hparams(args.model, "memit-seq").layers),
             "xl": XL, "xl_ratio": xl_ratio, "law": random_law(), "curve": curve,
             "budget": budget(curve, xl_ratio),
             "edits": edit_grid(args.model) if args.edits else []}
    table["seconds"] = time.perf_counter() - start
    out = args.out or toy_model(args.model).path
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(table, indent=1))
    (out / "capacity.md").write_text(markdown(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
