"""The packaged toy models: where each one lives, the world it knows, its editing defaults.

``load_model("toy")`` loads :data:`DEFAULT`; ``"toy-v1"`` / ``"toy-v2"`` name a version. A
version's world is ``world(seed, n_subjects)`` as recorded in its training report. Editing
defaults live here, next to the model they were chosen for, and ``methods.default_hparams``
reads them like any other model's defaults.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ._world import World, world as make_world


@dataclass(frozen=True)
class ToyModel:
    """One packaged toy model.

    ``hparams``: default ``Hparams`` fields for the MEMIT-style methods; ``alphaedit_ridge``:
    AlphaEdit's ``alpha`` on this model; ``distinct_subjects``: whether its editing records
    change one fact per person (the world has room for it); ``untouched``: what general ability
    counts as untouched, ``"pair"`` (another (subject, relation)) or ``"subject"`` (a person no
    edit touches: the other facts of an edited person share its key).
    """

    name: str
    folder: str
    hparams: Mapping[str, Any]
    alphaedit_ridge: float
    distinct_subjects: bool
    untouched: str
    card: str = field(default="")

    @property
    def path(self) -> Path:
        """The folder holding config, weights, tokenizer and reports."""
        return Path(str(resources.files("oteseq.toy") / self.folder))

    def training_config(self) -> dict:
        """The ``TrainConfig`` the weights were trained with (from ``training_report.json``)."""
        report = self.path / "training_report.json"
        return json.loads(report.read_text())["config"] if report.is_file() else {}

    def world(self) -> World:
        """The world this model was trained on."""
        cfg = self.training_config()
        return make_world(cfg.get("seed", 0), cfg.get("n_subjects", 1000))


# v1 (6 blocks, d_ff 1024): layers 1–2, where the residual is reached (fraction ≈ 1.0 at lam
# 10…2000 on 20 edits); clamp 4 since 0.75 leaves the value loss at ≈ 1.6 (efficacy 0.7 vs 0.9
# on 20 edits); 5 of the toy world's fixed prefixes (MEMIT's count). AlphaEdit's ridge 10 is
# sized for the reference models' keys; the v1 keys are small (‖k‖² ≈ 30–55), so 10 shrinks
# every update: on 100 edits in 4 x 25 (threshold 2e-2) ridge 10 / 1 / 0.1 gave efficacy
# 26 / 88 / 85 %, recall of untouched facts 90 / 63 / 49 %.
_V1 = ToyModel(
    name="toy-v1", folder="model",
    hparams=MappingProxyType(dict(layers=(1, 2), lam=2000.0, clamp_norm_factor=4.0,
                                  mom2_corpus="toy", mom2_n_samples=5000,
                                  template_source="toy")),
    alphaedit_ridge=1.0, distinct_subjects=False, untouched="pair")

# v2 (6 blocks, d_model 256, d_ff 2048, 5,000 people): chosen by bench/toy_sweep.py at the
# toy's edit budget (80 edits in 20 x 4, record seed 100; bench/capacity.py: up to 80 edits v2's
# person keys leak no more than random keys in GPT-2 XL's MLP at 2,000). Rule and table in
# model_v2/sweep.md: the passing setting (efficacy >= 95, paraphrase >= 85, untouched recall
# >= 90 % of unedited, NLL <= 1.03 x) with the best Score. layers 1-3, lam 2000 pass (efficacy
# 98.8, recall 0.915); lam 4000 keeps more (0.945) but edits less (87.5); lam 20000, the
# earlier default chosen at 300 edits, edits 17.5 %. Clamp 2 and 4 tie (the clamp does not
# bind). ridge 1e-2: some MLP neurons never fire on the preservation text (134 / 23 / 7 of
# 2,048 in blocks 1 / 2 / 3), so lam·C0 alone is singular; 1e-2 is ~2e-4 of lam·tr(C0)/d_ff in
# block 1. AlphaEdit: ridge 10 (0.1 / 1 / 10 -> efficacy 95.0 / 97.5 / 90.0, untouched recall
# 0.72 / 0.78 / 0.90 of unedited: only 10 keeps recall within the bar).
_V2 = ToyModel(
    name="toy-v2", folder="model_v2",
    hparams=MappingProxyType(dict(layers=(1, 2, 3), lam=2000.0, clamp_norm_factor=2.0,
                                  mom2_corpus="toy", mom2_n_samples=5000,
                                  template_source="toy", ridge=1e-2)),
    alphaedit_ridge=10.0, distinct_subjects=True, untouched="subject")

VERSIONS: Mapping[str, ToyModel] = MappingProxyType({m.name: m for m in (_V1, _V2)})
DEFAULT = "toy-v2"   # what load_model("toy") gives
NAMES = ("toy", *VERSIONS)


def toy_model(name: str = "toy") -> ToyModel:
    """The packaged toy model called ``name`` (``"toy"`` is :data:`DEFAULT`)."""
    from ..errors import OptionError

    key = DEFAULT if name == "toy" else name
    if key not in VERSIONS:
        raise OptionError(f"no packaged toy model {name!r}; use one of {list(NAMES)}")
    return VERSIONS[key]


def default_world() -> World:
    """The world of the default toy model, ``load_model("toy")``: what the toy data helpers
    (records, general ability, preservation text) use unless given another."""
    return toy_model().world()


def find(model_or_name) -> ToyModel | None:
    """The packaged toy model a name or a loaded model is, or None (any other model)."""
    if isinstance(model_or_name, str):
        name = model_or_name.rstrip("/")
        if name in NAMES:
            return toy_model(name)
        path = name
    else:
        config = getattr(model_or_name, "config", None)
        path = str(getattr(config, "name_or_path", "") or "").rstrip("/")
    for version in VERSIONS.values():
        if path == str(version.path):
            return version
    return None


def world_of(model_or_name) -> World:
    """The world a packaged toy model knows (``world(0)`` for anything else)."""
    version = find(model_or_name)
    return version.world() if version is not None else make_world(0)


__all__ = ["DEFAULT", "NAMES", "VERSIONS", "ToyModel", "find", "toy_model", "world_of"]
