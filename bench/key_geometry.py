"""How well a toy model's person keys let an edit land without touching other people.

    python bench/key_geometry.py --model toy-v2                 # blocks of its defaults
    python bench/key_geometry.py --model path/to/checkpoint --world toy-v2 --layers 1 2 3

For ``--edited`` people (their keys K₁ at the canonical prompt of one relation) and
``--untouched`` others (K₂), with ``A = lam·C0 + K₁K₁ᵀ + ridge·I`` as in one MEMIT step:

* *self*: mean of ``kᵢᵀA⁻¹kᵢ`` over the edited keys, how much of its own residual an edit
  writes at that layer;
* *leak*: mean over untouched keys of ``‖k_jᵀA⁻¹K₁‖``, how much of the edits' residuals an
  untouched person's output takes.

The same two numbers for random keys with C0's second moments (drawn from N(0, C0)) are the
baseline: keys as generic as the statistics allow. A model where people's keys are tangled
has leak close to self; the toy models so far have leak/self ≈ 0.9 against ≈ 0.4 for the
random keys (model card, ``oteseq/toy/README.md``). Cheap (seconds), so it can judge a short
training run before a full one.
"""
from __future__ import annotations

import argparse
import random

import torch


def coefficients(K1: torch.Tensor, K2: torch.Tensor, C0: torch.Tensor, lam: float,
                 ridge: float) -> tuple[float, float]:
    """(self, leak) for edited keys ``K1: (d, n1)`` and untouched keys ``K2: (d, n2)``."""
    A = lam * C0 + K1 @ K1.T + ridge * torch.eye(C0.shape[0], dtype=C0.dtype)
    X = torch.linalg.solve(A, K1)
    return (K1 * X).sum(0).mean().item(), (K2.T @ X).norm(dim=1).mean().item()


def person_keys(model, tok, people, relation, layers) -> dict[int, torch.Tensor]:
    from oteseq import keys
    from oteseq.requests import Request

    requests = [Request(prompt=relation.canonical, subject=s, target="x") for s in people]
    found = keys.compute_keys(model, tok, requests, layers, templates=["{}"])
    return {layer: k.double() for layer, k in found.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy-v2", help="a packaged toy model or a folder")
    parser.add_argument("--world", default=None, help="packaged model whose world to use")
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--edited", type=int, default=300)
    parser.add_argument("--untouched", type=int, default=1000)
    parser.add_argument("--lam", type=float, nargs="+", default=[2000.0, 20000.0])
    parser.add_argument("--ridge", type=float, default=1e-2)
    args = parser.parse_args(argv)
    import transformers

    import oteseq
    from oteseq import methods, stats
    from oteseq.toy.corpus import preservation_text
    from oteseq.toy.versions import toy_model

    transformers.logging.set_verbosity_error()
    version = toy_model(args.world or args.model)
    world = version.world()
    model, tok = oteseq.load_model(args.model)
    layers = args.layers or list(methods.default_hparams(version.name, "memit-seq").layers)
    people = list(world.subjects)
    random.Random(0).shuffle(people)
    if args.edited + args.untouched > len(people):
        raise SystemExit(f"the world has {len(people)} people; lower --edited/--untouched")
    relation = next(iter(world.relations.values()))
    K1 = person_keys(model, tok, people[:args.edited], relation, layers)
    K2 = person_keys(model, tok, people[args.edited:args.edited + args.untouched], relation,
                     layers)
    C = stats.second_moments(model, tok, layers, progress=False,
                             corpus=preservation_text(5000, 0, world=world))
    gen = torch.Generator().manual_seed(0)
    print("| block | lam | self | leak | leak/self | random self | random leak |")
    print("|---|---|---|---|---|---|---|")
    for layer in layers:
        C0 = C.C0[layer].double()
        values, vectors = torch.linalg.eigh(C0)
        root = vectors * values.clamp_min(0).sqrt()
        R1 = root @ torch.randn(C0.shape[0], args.edited, generator=gen, dtype=torch.float64)
        R2 = root @ torch.randn(C0.shape[0], args.untouched, generator=gen,
                                dtype=torch.float64)
        for lam in args.lam:
            own, leak = coefficients(K1[layer], K2[layer], C0, lam, args.ridge)
            r_own, r_leak = coefficients(R1, R2, C0, lam, args.ridge)
            print(f"| {layer} | {lam:g} | {own:.3f} | {leak:.3f} | {leak / own:.2f} | "
                  f"{r_own:.3f} | {r_leak:.3f} |")


if __name__ == "__main__":
    main()
