"""Token id lists to padded batches: the one padding id and the one right-padding routine.

Every batched forward pass in oteseq (keys, statistics, scoring, value prompts, the editor's
reads) right-pads: each token keeps its unpadded position, so subject and target indices stay
valid, and the attention mask hides the padding.
"""
from __future__ import annotations

from typing import Sequence

import torch
from ._types import Tokenizer


def pad_token_id(tok: Tokenizer) -> int:
    """The id used for padding: pad, else eos, else 0 (padded positions are masked anyway)."""
    for token_id in (tok.pad_token_id, tok.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def right_padded(rows: Sequence[Sequence[int]], pad_id: int,
                 device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)``, both (len(rows), longest) long tensors, right-padded, on
    ``device`` (default: CPU)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


__all__ = ["pad_token_id", "right_padded"]
