"""Load a causal language model and its tokenizer: the shipped toy model, a hub id or a path.

One code path for both scales: ``load_model("toy")`` reads the files inside the package,
anything else goes to ``transformers``' ``from_pretrained`` (a hub id such as ``"gpt2-xl"`` or
a local folder). The tokenizer always gets GPT-2's conventions for batching: pad = eos, right
padding.
"""
from __future__ import annotations

from pathlib import Path

from .errors import DeviceDtypeError, OfflineError

TOY = "toy"


def toy_model_dir(name: str = TOY) -> Path:
    """The folder holding a shipped toy model (config, safetensors, tokenizer, reports).

    ``"toy"`` is the default version; ``"toy-v1"`` and ``"toy-v2"`` name one.
    """
    from .toy.versions import toy_model

    return toy_model(name).path


def toy_name(model_or_name) -> str | None:
    """``"toy-v1"`` / ``"toy-v2"`` when ``model_or_name`` is a packaged toy model, else None."""
    from .toy.versions import find

    version = find(model_or_name)
    return None if version is None else version.name


def load_model(name_or_path: str = TOY, *, device=None, dtype=None):
    """``(model, tok)`` in eval mode; ``"toy"`` is the packaged toy-world GPT-2 (float32),
    ``"toy-v1"`` / ``"toy-v2"`` a named version of it.

    ``device`` (e.g. ``"cuda"``) and ``dtype`` (e.g. ``torch.float16``) are applied after
    loading; the toy weights are stored in float16 and loaded as float32 unless ``dtype`` says
    otherwise. Raises :class:`OfflineError` when the model is neither local nor downloadable.
    """
    import torch

    from .toy.versions import NAMES

    packaged = isinstance(name_or_path, str) and name_or_path in NAMES
    source = toy_model_dir(name_or_path) if packaged else name_or_path
    if packaged and not (source / "model.safetensors").is_file():
        raise OfflineError(f"the toy model files are missing from {source}; reinstall oteseq "
                           "or rebuild them with `python -m oteseq.toy train`")
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise DeviceDtypeError(f"dtype={dtype!r} is not a torch.dtype; pass e.g. torch.float32")
    tok = _tokenizer(source, name_or_path)
    model = _model(source, name_or_path, dtype)
    if device is not None:
        model = model.to(device)
    return model.eval(), tok


def _offline_error(name: str, err: Exception) -> OfflineError:
    return OfflineError(
        f"could not load {name!r} ({type(err).__name__}: {err}). On a machine with internet "
        f"access run `transformers`' from_pretrained({name!r}) once to fill the cache, or pass "
        "a local folder holding config.json, the weights and the tokenizer; "
        "offline, use load_model('toy') (the shipped toy-world GPT-2)")


def _tokenizer(source, name: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise _offline_error(name, err) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def _model(source, name: str, dtype):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as err:
        raise _offline_error(name, err) from err


__all__ = ["TOY", "load_model", "toy_model_dir", "toy_name"]
