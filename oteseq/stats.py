"""``C0``: the uncentred second moment of the keys of preserved knowledge, one pass, cached.

``C0 = (1/N) Σ k kᵀ`` over every attended token of a text corpus, where ``k`` is the input of the
edited matrix (MEMIT's ``mom2``). One forward pass over the corpus collects every requested layer
(the pass stops after the last edited module); sums are accumulated in float64 with in-place
``addmm_`` on the device of each edited module. Texts are capped at ``max_tokens_per_seq`` tokens
and packed, longest first, into batches of at most ``batch_tokens`` padded tokens.

Results are cached per layer as safetensors + a JSON sidecar, under a name that encodes the model
fingerprint, layer name, corpus id, sample count, token cap and tokenizer, so different settings
never collide. Cached statistics are loaded straight onto the device of the model's edited module
(moved explicitly), so they always live where the model needs them.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from . import models, profiles
from ._atomic import replacing, write_text
from .errors import OfflineError, OptionError, OptionTypeError, OteseqError
from .hooks import TraceDict
from .batching import pad_token_id, right_padded
from ._types import Model, Tokenizer

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = {"wikitext": 100_000, "wikipedia": 100_000}  # texts, not tokens
_HF_CORPORA = {  # name -> (dataset path, config, stream it?)
    "wikitext": ("Salesforce/wikitext", "wikitext-103-raw-v1", False),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en", True),
}
_FORMAT = "oteseq-mom2-v1"


@dataclass(frozen=True, eq=False)
class SecondMoments(Mapping):
    """``{layer: C0 (d_in, d_in) float64}`` plus how it was measured; reads like a dict."""

    C0: dict = field(repr=False)   # layer -> (d_in, d_in) float64, on the edited module's device
    n_tokens: int                  # N: tokens (per layer) the moments average over
    corpus: str                    # corpus id, e.g. "toy-train-seed0"
    n_samples: int                 # texts read from the corpus
    max_tokens_per_seq: int        # token cap per text

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.C0[layer]

    def __iter__(self) -> Iterator[int]:
        return iter(self.C0)

    def __len__(self) -> int:
        return len(self.C0)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$OTESEQ_CACHE``, else ``~/.cache/oteseq``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("OTESEQ_CACHE") or Path.home() / ".cache" / "oteseq")


def _load_hf(name: str, n_samples: int, seed: int) -> Iterator[str]:
    """``n_samples`` non-empty texts of a named corpus via ``datasets`` (opened now, streamed)."""
    path, config, stream = _HF_CORPORA[name]
    hint = (f"corpus={name!r} needs the `datasets` package and a first download of {path} "
            f"({config}); install it with `pip install datasets` and run once online, or use "
            "corpus='toy', which works offline")
    try:
        import datasets
    except ImportError as error:
        raise OfflineError(hint) from error
    try:
        data = datasets.load_dataset(path, config, split="train", streaming=stream)
    except (ConnectionError, OSError) as error:
        raise OfflineError(f"{hint} ({type(error).__name__}: {error})") from error
    # a seeded shuffle (a 10k-text buffer when streaming: not MEMIT's exact subset)
    rows = data.shuffle(seed=seed, buffer_size=10_000) if stream else data.shuffle(seed=seed)
    texts = (row["text"] for row in rows)
    return itertools.islice((text for text in texts if text.strip()), n_samples)


def resolve_corpus(corpus: str | Iterable[str], n_samples: int | None, seed: int = 0, *,
                   model: Model | None = None
                   ) -> tuple[str, int | None, Callable[[], list[str]]]:
    """``(corpus id, n_samples, load)``; ``load()`` gives the texts (called on a cache miss).

    Named corpora: ``"wikitext"``, ``"wikipedia"``, and those a model profile supplies
    (:mod:`oteseq.profiles`; ``model``'s own first), e.g. ``"toy"``: the toy world's general
    text and fact statements, as Wikipedia mixes both. Any iterable of strings is used as is
    (its first ``n_samples`` texts); its id is a hash of the texts, so it is cached too.
    """
    if isinstance(corpus, str):
        if corpus in DEFAULT_SAMPLES:
            n = DEFAULT_SAMPLES[corpus] if n_samples is None else n_samples
            return (f"{corpus}-{_HF_CORPORA[corpus][1]}-seed{seed}", n,
                    lambda: _load_hf(corpus, n, seed))
        named = profiles.corpus(corpus, model)
        if named is None:
            raise OptionError(f"corpus={corpus!r}: use one of "
                              f"{sorted([*DEFAULT_SAMPLES, *profiles.names('corpora')])} or "
                              "pass a list of texts")
        n = named.default_n if n_samples is None else n_samples
        return named.key(seed), n, lambda: named.texts(n, seed)
    texts = list(itertools.islice(corpus, n_samples) if n_samples is not None else corpus)
    if not all(isinstance(text, str) for text in texts):
        raise OptionTypeError("corpus must be a corpus name or an iterable of strings")
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    return f"texts-{digest}", len(texts), lambda: texts


def _token_cap(model: Model, max_tokens_per_seq: int) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or max_tokens_per_seq
    return min(max_tokens_per_seq, limit)


def _batches(rows: list[list[int]], batch_tokens: int) -> Iterator[list[list[int]]]:
    """Longest first, as many rows per batch as fit in ``batch_tokens`` padded tokens."""
    rows = sorted((row for row in rows if row), key=len, reverse=True)
    batch: list[list[int]] = []
    for row in rows:
        if batch and (len(batch) + 1) * len(batch[0]) > batch_tokens:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(texts)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _accumulate(model: Model, sums: dict[str, torch.Tensor], batch: list[list[int]],
                pad_id: int) -> int:
    """One forward pass over a batch: ``sums[name] += Kᵀ K`` over its attended tokens."""
    ids, mask = right_padded(batch, pad_id, models.input_device(model))
    with torch.no_grad(), TraceDict(model, list(sums), retain_input=True, retain_output=False,
                                    stop=True) as traces:
        model(input_ids=ids, attention_mask=mask)
    for name, total in sums.items():
        hidden = traces[name].input  # on whatever device the hook saw it
        keys = hidden[mask.to(hidden.device).bool()]  # (tokens, d_in), then to the sum's device
        keys = keys.to(device=total.device, dtype=torch.float64)
        total.addmm_(keys.T, keys)
    return int(mask.sum())


def collect_sums(model: Model, tok: Tokenizer, texts: Iterable[str], names: Sequence[str], *,
                 max_tokens_per_seq: int, batch_tokens: int, progress: bool = True,
                 total: int | None = None,
                 chunk_texts: int = 4096) -> tuple[dict[str, torch.Tensor], int, int]:
    """``({name: Σ k kᵀ (d_in, d_in) float64}, N tokens, texts read)`` in one pass.

    Texts are streamed in chunks of ``chunk_texts`` (tokenised, sorted by length, packed), so
    memory does not grow with the corpus; ``total`` only sizes the progress bar.
    """
    from tqdm.auto import tqdm

    cap = _token_cap(model, max_tokens_per_seq)
    sums = {}
    for name in names:
        module = model.get_submodule(name)
        d_in = models.weight_shape(module)[1]
        sums[name] = torch.zeros(d_in, d_in, dtype=torch.float64,
                                 device=models.module_device(module))
    n_tokens = n_texts = 0
    with tqdm(total=total, disable=not progress, desc="C0 statistics", unit="text") as bar:
        for chunk in _chunks(texts, chunk_texts):
            rows = tok(chunk, truncation=True, max_length=cap).input_ids
            for batch in _batches([list(row) for row in rows], batch_tokens):
                n_tokens += _accumulate(model, sums, batch, pad_token_id(tok))
            n_texts += len(chunk)
            bar.update(len(chunk))
    return sums, n_tokens, n_texts


def _cache_paths(root: Path, fingerprint: str, name: str, key: dict) -> tuple[Path, Path]:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = (f"{name}__{key['corpus']}__n{key['n_samples']}__cap{key['max_tokens_per_seq']}"
            f"__{digest}")
    folder = root / "stats" / fingerprint
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def _save(paths: tuple[Path, Path], C0: torch.Tensor, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {"C0": C0.detach().to("cpu").contiguous()}
    with replacing(paths[0]) as tmp:
        save_file(tensors, str(tmp), metadata={"format": _FORMAT})
    write_text(paths[1], json.dumps(meta, indent=1))


def _load(paths: tuple[Path, Path], key: dict, device) -> tuple[torch.Tensor, int] | None:
    """The cached ``(C0, N)`` if both files exist and the sidecar matches ``key``."""
    from safetensors.torch import load_file

    tensor_path, meta_path = paths
    if not (tensor_path.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        log.warning("ignoring %s: its sidecar describes other settings", tensor_path)
        return None
    return load_file(str(tensor_path), device=str(device))["C0"], int(meta["n_tokens"])


def _cache_key(model: Model, tok: Tokenizer, name: str, corpus_id: str, n_samples: int,
               cap: int) -> dict:
    return {"format": _FORMAT, "model": models.model_fingerprint(model), "module": name,
            "corpus": corpus_id, "n_samples": n_samples, "max_tokens_per_seq": cap,
            "tokenizer": f"{type(tok).__name__}-{len(tok)}"}


def second_moments(model: Model, tok: Tokenizer, layers: Sequence[int], *,
                   corpus: str | Iterable[str] = "toy",
                   n_samples: int | None = None, max_tokens_per_seq: int = 256,
                   batch_tokens: int = 8192, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, cache: bool = True,
                   progress: bool = True) -> SecondMoments:
    """``C0 = (1/N) Σ k kᵀ`` for each layer's edited module, over every attended corpus token.

    Layers found in the cache are loaded; the others are computed together in one pass over
    ``n_samples`` texts (default per corpus: :data:`DEFAULT_SAMPLES`) and cached. Each ``C0`` is
    (d_in, d_in) float64 on the device of its edited module. ``cache=False`` neither reads nor
    writes the cache.
    """
    names = {layer: models.edited_name(model, layer) for layer in layers}
    if not names:
        raise OptionError("layers is empty; name the layers whose edited matrices need C0")
    corpus_id, n, load = resolve_corpus(corpus, n_samples, seed, model=model)
    cap = _token_cap(model, max_tokens_per_seq)
    root, fingerprint = cache_root(cache_dir), models.model_fingerprint(model)
    cache_keys = {layer: _cache_key(model, tok, name, corpus_id, n, cap)
                  for layer, name in names.items()}
    paths = {layer: _cache_paths(root, fingerprint, name, cache_keys[layer])
             for layer, name in names.items()}
    found = {}
    for layer, name in names.items():
        device = models.module_device(models.edited_module(model, layer))
        hit = _load(paths[layer], cache_keys[layer], device) if cache else None
        if hit is not None:
            found[layer] = hit
            log.info("C0 for %s loaded from %s", name, paths[layer][0])
    missing = [layer for layer in names if layer not in found]
    if missing:
        sums, n_tokens, n_texts = collect_sums(
            model, tok, load(), [names[layer] for layer in missing], max_tokens_per_seq=cap,
            batch_tokens=batch_tokens, progress=progress, total=n)
        if n_tokens == 0:
            raise OteseqError(f"corpus {corpus_id!r} gave no tokens; pass non-empty texts")
        for layer in missing:
            found[layer] = (sums[names[layer]] / n_tokens, n_tokens)
            if cache:
                meta = {"key": cache_keys[layer], "n_tokens": n_tokens, "n_texts": n_texts}
                _save(paths[layer], found[layer][0], meta)
    counts = {count for _, count in found.values()}
    if len(counts) > 1:
        log.warning("cached layers were averaged over different token counts %s", sorted(counts))
    return SecondMoments(C0={layer: found[layer][0] for layer in names}, n_tokens=min(counts),
                         corpus=corpus_id, n_samples=n, max_tokens_per_seq=cap)


__all__ = ["DEFAULT_SAMPLES", "SecondMoments", "cache_root", "collect_sums", "resolve_corpus",
           "second_moments"]
