"""oteseq.setup() / oteseq.scale(): the functions survive an import of their module, and a bad
OTESEQ_SCALE is a named error."""
import random
import subprocess
import sys
from pathlib import Path

import pytest

import oteseq
from oteseq.errors import OptionError


def test_setup_is_callable_after_importing_its_module():
    # A fresh interpreter: the package attribute must not have been cached by other tests.
    code = ("import oteseq.book.session, oteseq.book, oteseq; "
            "from oteseq.book.session import scale; "
            "assert callable(oteseq.setup) and callable(oteseq.scale); "
            "print(oteseq.setup(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"OTESEQ_SCALE": "ci", "PATH": ""}, cwd=_root())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ci"


def test_no_submodule_shadows_a_lazy_function():
    package = Path(oteseq.__file__).parent
    for name, (_, attr) in oteseq._LAZY.items():
        if attr is not None:
            assert not (package / f"{name}.py").exists(), name
            assert not (package / name).is_dir(), name


def test_setup_seeds_and_returns_scale(monkeypatch):
    monkeypatch.setenv("OTESEQ_SCALE", "CI ")
    assert oteseq.setup(3) == "ci"
    first = random.random()
    oteseq.setup(3)
    assert random.random() == first


@pytest.mark.parametrize("value", ["gpu", "", "fulll"])
def test_bad_scale_is_an_option_error(monkeypatch, value):
    monkeypatch.setenv("OTESEQ_SCALE", value)
    with pytest.raises(OptionError, match="OTESEQ_SCALE"):
        oteseq.scale()


def _root():
    return str(Path(__file__).resolve().parents[1])
