"""TF-IDF vectors for CounterFact's consistency metric: build, fit and compare.

At the bottom of the import graph (numpy, and scikit-learn on first use) so that both the data
loaders (:func:`oteseq.data.tfidf` rebuilds the reference's fitted vectorizer) and the
evaluation (:mod:`oteseq.evaluate.generation`) use it without importing each other.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def fit_tfidf(texts: Sequence[str]):
    """A TfidfVectorizer (sklearn defaults) fitted on ``texts``: the reference's fallback."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    return TfidfVectorizer().fit(list(texts))


def tfidf_vectorizer(idf: np.ndarray, vocabulary: Mapping[str, int]):
    """The reference's TfidfVectorizer rebuilt from ``idf.npy`` and ``tfidf_vocab.json``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    vectorizer = TfidfVectorizer()
    vectorizer.vocabulary_ = dict(vocabulary)
    vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
    return vectorizer


def tfidf_similarity(text_a: str, text_b: str, vectorizer) -> float:
    """Cosine of the TF-IDF vectors of two texts; nan if either vector is zero."""
    encoded = vectorizer.transform([text_a, text_b]).toarray()
    norms = np.linalg.norm(encoded, axis=1)
    if not norms.all():
        return math.nan
    return float(encoded[0] @ encoded[1] / norms[0] / norms[1])


__all__ = ["fit_tfidf", "tfidf_similarity", "tfidf_vectorizer"]
