"""Where things live inside a supported transformer: one declarative table, one orientation.

Every architecture fact oteseq needs is a row of :data:`ARCHITECTURES`, keyed by the
transformers ``config.model_type``. Modules are always found by *name* (``model.get_submodule``),
so a model spread over devices with ``device_map`` works: tensors go to the device of the module
that uses them (:func:`module_device`), never to a hard-coded device. Limits: weights offloaded
to disk or CPU by ``accelerate`` (``meta`` parameters) cannot be read or written, and the
multi-device path is tested here only by routing (one machine, one device).

The edited matrix is handled in one orientation only, ``W: (d_out, d_in)`` with ``y = W k + b``.
GPT-2's ``Conv1D`` stores the transpose; :func:`read_weight` and :func:`write_weight` convert by
module *type* and assert the shape against the module's declared features, so a square weight
cannot be silently transposed.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError, NonFiniteError, ShapeError, UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchSpec:
    """Module-name templates of one architecture family (``{}`` is the layer index)."""

    block: str        # the transformer block (residual stream output)
    mlp: str          # the MLP of a block
    edited: str       # the edited linear map inside the MLP: its input is the key k
    embeddings: str   # input token embeddings
    final_norm: str   # the norm applied before the LM head
    lm_head: str      # the output projection to the vocabulary


_GPT2 = ArchSpec(block="transformer.h.{}", mlp="transformer.h.{}.mlp",
                 edited="transformer.h.{}.mlp.c_proj", embeddings="transformer.wte",
                 final_norm="transformer.ln_f", lm_head="lm_head")
_GPTJ = ArchSpec(block="transformer.h.{}", mlp="transformer.h.{}.mlp",
                 edited="transformer.h.{}.mlp.fc_out", embeddings="transformer.wte",
                 final_norm="transformer.ln_f", lm_head="lm_head")
_NEOX = ArchSpec(block="gpt_neox.layers.{}", mlp="gpt_neox.layers.{}.mlp",
                 edited="gpt_neox.layers.{}.mlp.dense_4h_to_h", embeddings="gpt_neox.embed_in",
                 final_norm="gpt_neox.final_layer_norm",
                 lm_head="lm_head")  # named embed_out before transformers 5
_LLAMA = ArchSpec(block="model.layers.{}", mlp="model.layers.{}.mlp",
                  edited="model.layers.{}.mlp.down_proj", embeddings="model.embed_tokens",
                  final_norm="model.norm", lm_head="lm_head")

ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": _GPT2,
    "gptj": _GPTJ,
    "gpt_neox": _NEOX,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}


def arch_of(model: nn.Module) -> ArchSpec:
    """The :class:`ArchSpec` of ``model``, looked up by ``model.config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported; supported: {sorted(ARCHITECTURES)}. "
            "Add a row to oteseq.models.ARCHITECTURES naming its blocks and MLP out-projection.")
    return ARCHITECTURES[model_type]


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no submodule {name!r} although its model_type "
            f"{model.config.model_type!r} says it should; fix its row in ARCHITECTURES") from None


def n_layers(model: nn.Module) -> int:
    """Number of transformer blocks (the length of the block list)."""
    return len(_get(model, arch_of(model).block.rsplit(".", 1)[0]))


def _check_layer(model: nn.Module, layer: int) -> int:
    count = n_layers(model)
    if not isinstance(layer, int) or not 0 <= layer < count:
        raise LayerError(f"layer {layer!r} does not exist; the model has layers 0..{count - 1}")
    return layer


def edited_name(model: nn.Module, layer: int) -> str:
    """Full module name of the edited matrix at ``layer``, e.g. ``transformer.h.3.mlp.c_proj``."""
    return arch_of(model).edited.format(_check_layer(model, layer))


def edited_module(model: nn.Module, layer: int) -> nn.Module:
    """The edited linear map (MLP down/out projection) of ``layer``."""
    return _get(model, edited_name(model, layer))


def block(model: nn.Module, layer: int) -> nn.Module:
    """The transformer block ``layer``."""
    return _get(model, arch_of(model).block.format(_check_layer(model, layer)))


def mlp(model: nn.Module, layer: int) -> nn.Module:
    """The MLP of block ``layer``."""
    return _get(model, arch_of(model).mlp.format(_check_layer(model, layer)))


def final_norm(model: nn.Module) -> nn.Module:
    """The norm before the LM head."""
    return _get(model, arch_of(model).final_norm)


def lm_head(model: nn.Module) -> nn.Module:
    """The projection from the final hidden state to vocabulary logits."""
    return _get(model, arch_of(model).lm_head)


def embeddings(model: nn.Module) -> nn.Module:
    """The input token embedding."""
    return _get(model, arch_of(model).embeddings)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (else buffer): where its inputs must go; CPU
    for a module that holds no tensors. For a module whose weights ``accelerate`` offloaded
    (kept on ``meta``), the device its hook runs it on."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    if first is None:
        return torch.device("cpu")
    device = first.device
    if device.type == "meta":
        hook = _offload_hook(module) or next((_offload_hook(m) for m in module.modules()
                                              if _offload_hook(m) is not None), None)
        if hook is not None and getattr(hook, "execution_device", None) is not None:
            return torch.device(hook.execution_device)
    return device


def _offload_hook(module: nn.Module):
    """The ``accelerate`` hook holding this module's offloaded weights, or ``None``.

    ``dispatch_model`` / ``device_map`` with CPU or disk offload leave the parameters on
    ``meta`` and load them from ``hook.weights_map`` (its ``"weight"`` entry) at each forward.
    """
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", None) or (hook,):  # a SequentialHook holds several
        if getattr(candidate, "offload", False) and getattr(candidate, "weights_map", None) \
                is not None:
            return candidate
    return None


def _offloaded_store(module: nn.Module):
    """``(mapping, key)`` where the offloaded weight of ``module`` can be read and written, or
    ``None`` when the weight lives in the module. Writes go to the loader's in-memory
    ``state_dict``, which ``accelerate`` reads before any file on disk."""
    if module.weight.device.type != "meta":
        return None
    hook = _offload_hook(module)
    if hook is None:
        raise UnsupportedArchitectureError(
            f"the weight of {type(module).__name__} is on the meta device without an accelerate "
            "offload hook; load the model's weights (or dispatch it with accelerate) first")
    weights = hook.weights_map
    prefix, dataset = getattr(weights, "prefix", ""), getattr(weights, "dataset", weights)
    store = dataset if isinstance(dataset, dict) else getattr(dataset, "state_dict", None)
    if store is None:
        raise UnsupportedArchitectureError(
            f"cannot write into accelerate's {type(dataset).__name__}; keep the edited layers "
            "on a device (device_map) or offload them with dispatch_model / device_map='auto'")
    return store, dataset, prefix + "weight"


def input_device(model: nn.Module) -> torch.device:
    """The device the token ids must be on: that of the input embeddings (any ``transformers``
    model has ``get_input_embeddings``; another module answers with its first tensor)."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    return module_device(get_embeddings() if get_embeddings is not None else model)


def _is_conv1d(module: nn.Module) -> bool:
    # GPT-2's Conv1D, matched by type; imported lazily so this module needs no transformers.
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def linear_maps(module: nn.Module) -> list[nn.Module]:
    """The ``nn.Linear`` and GPT-2 ``Conv1D`` modules inside ``module`` (itself included): maps
    that act on each token's vector separately."""
    return [m for m in module.modules() if isinstance(m, nn.Linear) or _is_conv1d(m)]


def fused_equivalent(module: nn.Module):
    """A one-kernel function computing what ``module`` computes, up to rounding; else None.

    GPT-2's and GPT-J's ``NewGELUActivation`` writes the tanh-approximate GELU as seven tensor
    operations (and as many in its backward); torch's ``gelu(approximate="tanh")`` is the same
    formula in one pass (transformers' ``GELUTanh``: equivalent, not bit-identical).
    """
    from transformers.activations import NewGELUActivation

    if type(module) is NewGELUActivation:
        return functools.partial(nn.functional.gelu, approximate="tanh")
    return None


def weight_shape(module: nn.Module) -> tuple[int, int]:
    """``(d_out, d_in)`` of a Linear or Conv1D, from its declared features (not its tensor)."""
    if _is_conv1d(module):
        return module.nf, module.nx
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    raise UnsupportedArchitectureError(
        f"cannot edit a {type(module).__name__}: oteseq edits nn.Linear and GPT-2 Conv1D only")


def read_weight(module: nn.Module) -> torch.Tensor:
    """A copy of the module's weight as ``W: (d_out, d_in)``, so that ``y = W k + b``.

    Conv1D stores ``(d_in, d_out)`` and is transposed; nn.Linear already is ``(d_out, d_in)``.
    Returns a detached clone in the module's dtype and on its device (safe to keep as ``W0``).
    """
    shape = weight_shape(module)
    offloaded = _offloaded_store(module)
    stored = module.weight.detach() if offloaded is None else offloaded[1][offloaded[2]]
    W = stored.T if _is_conv1d(module) else stored
    if tuple(W.shape) != shape:
        raise ShapeError(f"{type(module).__name__} weight has shape {tuple(module.weight.shape)}, "
                         f"inconsistent with its declared (d_out, d_in) = {shape}")
    return W.clone()


def write_weight(module: nn.Module, W: torch.Tensor) -> None:
    """Set the module's weight to ``W: (d_out, d_in)`` in place (cast to its dtype and device).

    Checks shape and finiteness first, so a refused write leaves the module untouched.
    """
    shape = weight_shape(module)
    if tuple(W.shape) != shape:
        raise ShapeError(f"W has shape {tuple(W.shape)} but the module needs (d_out, d_in) = "
                         f"{shape}; pass W in (d_out, d_in) orientation")
    if not torch.isfinite(W).all():
        raise NonFiniteError("refusing to write a weight with NaN or infinite entries; check the "
                             "update (e.g. lam too small for an ill-conditioned C0)")
    param = module.weight
    offloaded = _offloaded_store(module)
    if offloaded is not None:  # accelerate offload: the hook loads it at the next forward
        store, dataset, key = offloaded
        old = dataset[key]
        new = W.detach().to(device=old.device, dtype=old.dtype)
        store[key] = (new.T if _is_conv1d(module) else new).contiguous()
        return
    new = W.detach().to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        param.copy_(new.T if _is_conv1d(module) else new)


def add_to_weight(module: nn.Module, delta: torch.Tensor) -> None:
    """``W ← W + Δ`` with ``Δ: (d_out, d_in)``, summed in the wider of the two dtypes."""
    W = read_weight(module)
    dtype = torch.promote_types(W.dtype, delta.dtype)
    write_weight(module, W.to(dtype) + delta.to(device=W.device, dtype=dtype))


def _config_digest(model: nn.Module) -> dict:
    config = model.config.to_dict()
    return {key: value for key, value in sorted(config.items())
            if not key.startswith("_") and key != "transformers_version"}


def model_fingerprint(model: nn.Module) -> str:
    """A short stable id of a model: its config, the last component of ``name_or_path`` (so a
    local copy matches on any machine) and samples of its weights.

    The sampled weights are the input embeddings and the final norm, which editing never
    touches, so a model keeps its fingerprint after edits. Different checkpoints of the same
    config differ in those weights. Used to key statistics caches and saved editor state.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(_config_digest(model), sort_keys=True, default=str).encode())
    name = str(getattr(model.config, "name_or_path", "")).rstrip("/\\")
    digest.update(name.replace("\\", "/").rsplit("/", 1)[-1].encode())  # not the local folder
    for module in (embeddings(model), final_norm(model)):
        weight = module.weight.detach()
        rows = weight.reshape(weight.shape[0], -1)
        step = max(1, rows.shape[0] // 16)
        sample = rows[::step][:16, :64].to("cpu", torch.float32).contiguous()
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


__all__ = ["ARCHITECTURES", "ArchSpec", "add_to_weight", "arch_of", "block", "edited_module",
           "edited_name", "embeddings", "final_norm", "input_device", "lm_head", "mlp",
           "model_fingerprint", "module_device", "n_layers", "read_weight", "weight_shape",
           "write_weight"]
