"""Target values ``z*``: one offset δ per request, optimised for a whole batch at once.

Objective (MEMIT ``compute_z``, editing-anchors §3), for each request ``i`` separately:

    min_δ  mean_p NLL(target | prompt_p with δ added at the subject's last token)
           + kl_factor · KL(p_δ ‖ p_0)  at the subject's last token of "{subject} is a"
           + v_weight_decay · ‖δ‖ / ‖z_init‖²,      subject to ‖δ‖ ≤ clamp_norm_factor · ‖z_init‖

where δ is added to the residual output of block ``layer`` (the last edited layer) and
``z_init`` is that output at the bare prompt. Adam with lr ``v_lr``; a request stops when its
loss is below 5e-2; at most ``v_num_grad_steps − 1`` steps. Returns ``z* = z_init + δ``.

Speed (:mod:`.optimise`): all prompts of a batch share forward passes; the hidden states below
the injection, and at positions before the subject's last token, do not depend on δ — they are
computed once, then each step re-runs only blocks ``layer+1 …`` on the positions from the
subject's last token on, attending to the cached keys/values of the earlier ones
(:mod:`.suffix`), and the final norm and LM head at the positions that enter the loss.

Modules: :mod:`.prompts` (rows, labels, the loss), :mod:`.replay` (capture, full replay, check),
:mod:`.suffix` (suffix replay), :mod:`.optimise` (the batched loop), :mod:`.reference`
(:func:`one_at_a_time`, MEMIT's loop), :mod:`.target` (:class:`TargetValues`).
"""
from __future__ import annotations

from .optimise import compute_values
from .prompts import KL_PROMPT, STOP_LOSS, Prompts, build_prompts, request_losses
from .reference import one_at_a_time
from .target import TargetValues

__all__ = ["KL_PROMPT", "STOP_LOSS", "Prompts", "TargetValues", "build_prompts",
           "compute_values", "one_at_a_time", "request_losses"]
