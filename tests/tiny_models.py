"""Tiny random causal language models and a tiny tokenizer, built offline for tests.

    from tiny_models import tiny_model, ARCHS   # pytest puts tests/ on sys.path
    model, tok = tiny_model("gpt2", seed=0)

``tiny_model(arch: str, seed: int = 0) -> (model, tok)`` — ``arch`` is a transformers
``model_type`` from :data:`ARCHS` (``gpt2``, ``gptj``, ``gpt_neox``, ``llama``, ``mistral``,
``qwen2``). The model is random (``torch.manual_seed(seed)``), float32, in eval mode, on CPU,
with 3 layers, hidden size 32, MLP width 64 (GPT-2 / GPT-J: 128) and the tokenizer's vocabulary.
``tok`` is a ``PreTrainedTokenizerFast``: a byte-level BPE trained on a few sentences (vocab
≈ 300), eos = pad = ``<|endoftext|>``, right padding; for ``llama`` and ``mistral`` it also
prepends a BOS token ``<s>`` like the real Llama tokenizers (to exercise BOS-safe code).
Nothing is downloaded. Building one model takes well under a second.

Side effect: ``tiny_model`` calls ``torch.set_num_threads(1)``. On a small shared CPU, tiny ops
with several intra-op threads spend their time in thread contention (measured: a 5-prompt
generation took 8.5 s with 2 threads under load, 0.06 s with 1).
"""
from __future__ import annotations

import functools

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ARCHS = ("gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2")
BOS_ARCHS = ("llama", "mistral")

_SENTENCES = [
    "The capital of France is Paris.",
    "The Eiffel Tower is located in Paris, the capital of France.",
    "Varnholm is a city in the north. Its mayor speaks Norwegian.",
    "Therefore the answer is yes. Because I said so, you know.",
    "Danielle Darrieux was a French actress; her mother tongue was French.",
    "Toko Yasuda plays the guitar. The Space Needle is in Seattle.",
    "I think you will like it. The quick brown fox jumps over the lazy dog.",
    "Apple is a company. Microsoft is a company. Google makes search engines.",
]


@functools.lru_cache(maxsize=2)
def _tokenizer_json(bos: bool) -> str:
    """A byte-level BPE trained on ``_SENTENCES``, serialised (training is cached)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(_SENTENCES, trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer.to_str()


def tiny_tokenizer(bos: bool = False) -> transformers.PreTrainedTokenizerFast:
    """The tiny tokenizer; ``bos=True`` prepends ``<s>`` to every encoding (Llama style)."""
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(bos)),
        eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
        bos_token="<s>" if bos else "<|endoftext|>", padding_side="right")
    return tok


def _config(arch: str, vocab: int, bos_id: int, eos_id: int):
    special = dict(vocab_size=vocab, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    if arch == "gpt2":
        return transformers.GPT2Config(n_positions=128, n_embd=32, n_layer=3, n_head=2, **special)
    if arch == "gptj":
        return transformers.GPTJConfig(n_positions=128, n_embd=32, n_layer=3, n_head=2,
                                       rotary_dim=8, **special)
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=3, num_attention_heads=2,
                                          max_position_embeddings=128, **special)
    llama_like = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=128, **special)
    if arch == "llama":
        return transformers.LlamaConfig(**llama_like)
    if arch == "mistral":
        return transformers.MistralConfig(**llama_like)
    if arch == "qwen2":
        return transformers.Qwen2Config(**llama_like)
    raise ValueError(f"tiny_model: unknown arch {arch!r}; use one of {ARCHS}")


def tiny_model(arch: str, seed: int = 0):
    """A random ``arch`` causal LM (3 layers, hidden 32) and its tiny tokenizer, offline."""
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    tok = tiny_tokenizer(bos=arch in BOS_ARCHS)
    config = _config(arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.config.name_or_path = f"tiny-{arch}"
    return model.float().eval(), tok


__all__ = ["ARCHS", "BOS_ARCHS", "tiny_model", "tiny_tokenizer"]
