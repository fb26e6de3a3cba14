"""Type aliases for what the editing code takes from ``transformers``: a causal LM and its
tokenizer. Annotations only; nothing here is imported at run time."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Model: TypeAlias = "PreTrainedModel"
Tokenizer: TypeAlias = "PreTrainedTokenizerBase"

__all__ = ["Model", "Tokenizer"]
