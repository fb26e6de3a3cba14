"""General ability: the zero-shot "GLUE" suite of the editing lineage (editing-anchors §6.4).

Six tasks, each a prompt template and a set of answer words (the table below is the reference's
``glue_eval``). Two scoring modes per example:

* ``generation``: greedy decoding of ``gen_len`` = 5 new tokens (stopping at end-of-text), then
  the reference's substring tests on the new text, in its order: SST-2 "positive" before
  "negative"; MRPC / CoLA "yes" before "no" (so "not" and "know" read as "no"; this order is
  assumed, not checked against the reference files);
  RTE "false" before "true" (lower-cased); NLI "True" before "False" (case-sensitive); MMLU
  "a\\n", "b\\n", "c\\n", "d\\n" in the lower-cased text (a letter followed by a newline).
  No match → prediction −1, "invalid", counted wrong.
* ``likelihood``: the answer word with the strictly largest exp(−mean-token NLL) of
  ``" " + word`` after the prompt; a tie gives −1 as in the reference.

Metrics per mode: ``accuracy`` = correct / n, ``f1`` (sklearn weighted F1), ``mcc`` (Matthews),
``correct``, ``incorrect``, ``invalid``. The reference's ``f1`` is our ``generation`` f1 and its
``f1_new`` our ``likelihood`` f1.

**RTE polarity.** In GLUE RTE label 0 = entailment and 1 = not_entailment. The answer "True"
(the premise does entail the hypothesis) is therefore label 0 here. The reference lineage maps
"True" → 1 and so scores RTE with inverted polarity; numbers from that code are not comparable.
NLI items use 1 = entailment (the reference's "entailment" → 1), so there "True" → 1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .. import profiles
from ..errors import OptionError
from .generation import generate
from ..scoring import continuation_nll
from .._types import Model, Tokenizer

TASKS = ("sst2", "mrpc", "cola", "rte", "mmlu", "nli")


def _mmlu_prompt(x: Mapping[str, Any]) -> str:
    options = "".join(f"({letter}) {choice}\n" for letter, choice in zip("ABCD", x["choices"]))
    return f"Question: {x['question']}\n{options}Answer:"


@dataclass(frozen=True)
class Task:
    """A zero-shot task: its prompt, its answer words and how a generated text is parsed.

    ``answers`` are (word, label) pairs scored by likelihood; ``markers`` are (substring, label)
    pairs tried in order on the generated text (lower-cased unless ``case_sensitive``).
    """

    name: str
    prompt: Callable[[Mapping[str, Any]], str]
    answers: tuple[tuple[str, int], ...]
    markers: tuple[tuple[str, int], ...]
    case_sensitive: bool = False

    def parse(self, text: str) -> int:
        """The label named by a generated text, or −1 when it names none."""
        text = text if self.case_sensitive else text.lower()
        return next((label for marker, label in self.markers if marker in text), -1)


YES_NO = (("yes", 1), ("no", 0))
SPECS = {
    "sst2": Task("sst2", lambda x: f"Review :{x['sentence']}\nSentiment :",
                 (("positive", 1), ("negative", 0)), (("positive", 1), ("negative", 0))),
    "mrpc": Task("mrpc", lambda x: ("Are the sentences paraphrases of each other.\n"
                                    f"Sentence 1: {x['sentence1']}\nSentence 2: {x['sentence2']}"
                                    "\nAnswer:"), (("Yes", 1), ("No", 0)), YES_NO),
    "cola": Task("cola", lambda x: ("Is this sentence linguistically acceptable?\n"
                                    f"Sentence: {x['sentence']}\nAnswer: "),
                 (("Yes", 1), ("No", 0)), YES_NO),
    "rte": Task("rte", lambda x: f"{x['sentence1']}\nquestion: {x['sentence2']} True or False?\n"
                                 "answer:", (("True", 0), ("False", 1)),
                (("false", 1), ("true", 0))),
    "nli": Task("nli", lambda x: f"{x['sentence1']} entails the {x['sentence2']} True or False? "
                                 "Answer:", (("True", 1), ("False", 0)),
                (("True", 1), ("False", 0)), case_sensitive=True),
    "mmlu": Task("mmlu", _mmlu_prompt, tuple((letter, i) for i, letter in enumerate("ABCD")),
                 tuple((letter + "\n", i) for i, letter in enumerate("abcd"))),
}


def classification_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """accuracy, weighted F1, MCC and correct/incorrect/invalid counts (−1 = invalid)."""
    from sklearn.metrics import f1_score, matthews_corrcoef
    correct = sum(p == y for p, y in zip(predictions, labels))
    invalid = sum(p == -1 for p in predictions)
    with warnings.catch_warnings():  # one class only: sklearn warns, MCC is 0 as in the reference
        warnings.simplefilter("ignore", UserWarning)
        mcc = float(matthews_corrcoef(labels, predictions))
    return {"accuracy": correct / len(labels) if labels else float("nan"),
            "f1": float(f1_score(labels, predictions, average="weighted", zero_division=0)),
            "mcc": mcc,
            "correct": correct, "incorrect": len(labels) - correct - invalid, "invalid": invalid}


def _generated_predictions(model: Model, tok: Tokenizer, task: Task, prompts, gen_len: int,
                           batch_size: int):
    new = generate(model, tok, prompts, max_new_tokens=gen_len, top_k=None,
                   batch_size=batch_size)
    eos = tok.eos_token_id
    cut = [ids[:ids.index(eos)] if eos in ids else ids for ids in new]
    return [task.parse(tok.decode(ids, skip_special_tokens=True)) for ids in cut]


def _likelihood_predictions(model: Model, tok: Tokenizer, task: Task, prompts, batch_size: int):
    words = [" " + word for word, _ in task.answers]
    nll = continuation_nll(model, tok, [p for p in prompts for _ in words], words * len(prompts),
                           batch_size=batch_size).view(len(prompts), len(words))
    prob = (-nll).exp()
    best = prob.max(-1, keepdim=True).values
    unique = (prob == best).sum(-1) == 1  # the reference returns −1 on a tie
    return [task.answers[int(i)][1] if ok else -1 for i, ok in zip(prob.argmax(-1), unique)]


def evaluate_task(model: Model, tok: Tokenizer, task: str, items: Sequence[Mapping[str, Any]], *,
                  mode: str = "both", gen_len: int = 5, batch_size: int = 32) -> dict[str, Any]:
    """Metrics of one task on ``items`` (dicts with the task's fields and an int ``label``)."""
    spec = SPECS[task]
    prompts = [spec.prompt(x) for x in items]
    labels = [int(x["label"]) for x in items]
    out: dict[str, Any] = {"n": len(items)}
    if mode in ("both", "generation"):
        preds = _generated_predictions(model, tok, spec, prompts, gen_len, batch_size)
        out["generation"] = classification_metrics(labels, preds)
    if mode in ("both", "likelihood"):
        preds = _likelihood_predictions(model, tok, spec, prompts, batch_size)
        out["likelihood"] = classification_metrics(labels, preds)
    return out


def general_ability(model: Model, tok: Tokenizer, tasks: Sequence[str] = TASKS, *, data=None,
                    n: int = 100,
                    mode: str = "both", gen_len: int = 5, batch_size: int = 32,
                    suite_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Zero-shot accuracy / F1 / MCC of ``model`` on the GLUE-style suite, per task and mode.

    ``data`` maps a task to its test items; by default ``oteseq.data.glue(task)`` (which
    downloads once and drops the 10 items the reference reserves for few-shot examples). The
    first ``n`` items are used. ``mode`` is "both", "generation" or "likelihood".
    A string ``data`` names the general-ability suite of a model profile
    (:mod:`oteseq.profiles`), called as ``suite(model, tok, **suite_options)``; ``"toy"`` is the
    toy world's recall and perplexity, the CI-scale stand-in (``tasks`` and ``n`` are then
    unused). See the module docstring for RTE's label polarity.
    """
    if mode not in ("both", "generation", "likelihood"):
        raise OptionError(f"mode={mode!r}; use 'both', 'generation' or 'likelihood'")
    if isinstance(data, str):
        named = profiles.suite(data)
        if named is None:
            raise OptionError(f"data={data!r} is not a general-ability suite; known: "
                              f"{profiles.names('suites')}, or pass {{task: items}}")
        return named(model, tok, **dict(suite_options or {}))
    unknown = [t for t in tasks if t not in SPECS]
    if unknown:
        raise OptionError(f"unknown tasks {unknown}; known: {list(SPECS)}")
    results = {}
    for task in tasks:
        if data is not None:
            items = data[task]
        else:
            from ..data import glue as load_glue
            items = load_glue(task)
        results[task] = evaluate_task(model, tok, task, list(items)[:n], mode=mode,
                                      gen_len=gen_len, batch_size=batch_size)
    return results


__all__ = ["SPECS", "TASKS", "Task", "classification_metrics", "evaluate_task",
           "general_ability"]
