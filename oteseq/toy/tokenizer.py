"""A GPT-2-style byte-level BPE tokenizer trained on the toy corpus.

Same pre-tokenisation as GPT-2 (words carry their leading space, ``Ġ``), one special token
``<|endoftext|>`` used as bos, eos and pad, right padding.
"""
from __future__ import annotations

from typing import Iterable

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Fit byte-level BPE with ``vocab_size`` entries on ``texts``; a transformers fast tokenizer.

    Returns a ``PreTrainedTokenizerFast`` configured like GPT-2's (eos = bos = pad = unk =
    ``<|endoftext|>``, no prefix space, right padding).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    return wrap(core)


def wrap(core):
    """A ``tokenizers.Tokenizer`` as a GPT-2-configured ``PreTrainedTokenizerFast``."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=EOS, eos_token=EOS,
                                  unk_token=EOS, pad_token=EOS, padding_side="right",
                                  model_max_length=10**6, clean_up_tokenization_spaces=False)
    return tok


__all__ = ["EOS", "train_tokenizer", "wrap"]
