"""KeyWalk: keys and Z_cur from one cached residual equal the per-layer forwards of the partly
edited model (every tiny architecture, float32 tolerance)."""
from __future__ import annotations

import pytest
import torch
from test_values import REQUESTS, TEMPLATES
from tiny_models import ARCHS, tiny_model

from oteseq import keys, model_reads, models
from oteseq.keywalk import KeyWalk, Unsupported

LAYERS = (0, 1, 2)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layers", [LAYERS, (1, 2)])
def test_walk_equals_per_layer_forwards_on_the_partly_edited_model(arch, layers):
    model, tok = tiny_model(arch)
    walk = KeyWalk(model, tok, REQUESTS, layers, templates=TEMPLATES, batch_size=3)
    g = torch.Generator().manual_seed(0)
    for i, layer in enumerate(layers):
        K, z_cur = walk.read(i)
        K_ref = keys.compute_keys(model, tok, REQUESTS, [layer], templates=TEMPLATES)[layer]
        z_ref = model_reads.block_output_at_subject(model, tok, REQUESTS, layers[-1])
        assert K.shape == K_ref.shape and close(K, K_ref), (arch, layer)
        assert z_cur.shape == z_ref.shape and close(z_cur, z_ref), (arch, layer)
        module = models.edited_module(model, layer)  # an edit of this layer
        W = models.read_weight(module)
        models.write_weight(module, W + 0.5 * torch.randn(W.shape, generator=g).to(W))
        walk.advance(i)


def test_templates_without_a_bare_prompt_are_refused():
    model, tok = tiny_model("gpt2")
    with pytest.raises(Unsupported):
        KeyWalk(model, tok, REQUESTS, LAYERS, templates=[["I think you will like it. {}"]])
