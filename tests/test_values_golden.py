"""Golden test of the value optimisation against MEMIT's ``compute_z``, re-implemented here
naively: one prompt per forward pass, a hand-registered hook, ``torch.optim.Adam``, the loss
written term by term from the definition (editing-anchors §3):

    loss(δ) = mean_p [−Σ_j log p(t_j | prompt_p, t_<j) / |t|]
              + kl_factor · KL(p_δ ‖ p_0) at the subject's last token of "{subject} is a"
              + v_weight_decay · ‖δ‖ / ‖z_init‖²,

δ added to block ``layer``'s output at the subject's last token of every prompt; stop when the
loss is below 5e-2 or at the last iteration (before stepping); after each Adam step,
‖δ‖ ≤ clamp_norm_factor · ‖z_init‖. Nothing from oteseq.values, oteseq.hooks or oteseq.keys is
used to compute the expected numbers.
"""
from __future__ import annotations

import pytest
import torch
from test_values import REQUESTS, TEMPLATES, hp, sharp_model

from oteseq import values


def subject_last_index(tok, text_with_slot: str, subject: str) -> int:
    """Tokens of the text up to the end of the subject, minus one."""
    prefix = text_with_slot[: text_with_slot.index("{}")] + subject
    return len(tok(prefix)["input_ids"]) - 1


def naive_compute_z(model, tok, req, layer: int, hparams, templates):
    target = tok(" " + req.target, add_special_tokens=False)["input_ids"]
    slots = [t.replace("{}", req.prompt) for t in templates]
    prompts = []  # (ids, subject's last token, prompt length) per rewriting prompt
    for slot in slots:
        prompt_ids = tok(slot.replace("{}", req.subject))["input_ids"]
        prompts.append((prompt_ids + target[:-1], subject_last_index(tok, slot, req.subject),
                        len(prompt_ids)))
    kl_ids = tok(f"{req.subject} is a")["input_ids"]
    kl_index = subject_last_index(tok, "{} is a", req.subject)
    block = model.transformer.h[layer]
    delta = torch.zeros(model.config.n_embd, requires_grad=True)
    state = {}

    def run(ids: list[int], index: int) -> torch.Tensor:
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            state.setdefault("z_init", hidden[0, index].detach().clone())
            added = torch.zeros_like(hidden)
            added[0, index] = 1.0
            hidden = hidden + added * delta
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        handle = block.register_forward_hook(hook)
        try:
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        finally:
            handle.remove()
        return torch.log_softmax(logits.float(), dim=-1)

    optimiser = torch.optim.Adam([delta], lr=hparams.v_lr)
    steps = 0
    for it in range(hparams.v_num_grad_steps):
        optimiser.zero_grad()
        nlls = []
        for ids, index, n_prompt in prompts:
            logp = run(ids, index)
            nlls.append(-sum(logp[n_prompt - 1 + j, t] for j, t in enumerate(target)) / len(target))
        nll = torch.stack(nlls).mean()
        kl_logp = run(kl_ids, kl_index)[kl_index]
        if it == 0:
            kl_init = kl_logp.detach().clone()
        kl = (kl_logp.exp() * (kl_logp - kl_init)).sum()
        z_init = state["z_init"]
        decay = delta.norm() / z_init.norm() ** 2
        loss = nll + hparams.kl_factor * kl + hparams.v_weight_decay * decay
        if loss < 5e-2 or it == hparams.v_num_grad_steps - 1:
            break
        delta.grad = torch.autograd.grad(loss, delta)[0]
        optimiser.step()
        steps += 1
        limit = hparams.clamp_norm_factor * z_init.norm()
        if delta.norm() > limit:
            with torch.no_grad():
                delta.mul_(limit / delta.norm())
    return z_init + delta.detach(), z_init, float(loss.detach()), steps


@pytest.mark.parametrize("layer", [0, 1])
def test_compute_values_equals_a_naive_compute_z(layer):
    model, tok = sharp_model("gpt2")
    hparams = hp(8)
    got = values.compute_values(model, tok, REQUESTS, layer, hparams, templates=TEMPLATES,
                                progress=False)
    for i, req in enumerate(REQUESTS):
        z, z_init, loss, steps = naive_compute_z(model, tok, req, layer, hparams, TEMPLATES)
        assert int(got.steps[i]) == steps, req
        torch.testing.assert_close(got.z_init[:, i], z_init, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.z[:, i], z, rtol=1e-4, atol=1e-4)
        assert abs(float(got.loss[i]) - loss) <= 1e-4 * max(1.0, abs(loss))
    assert (got.steps > 0).all()  # the optimisation did move δ for every request
