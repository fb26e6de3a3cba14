"""The command line: arguments checked before any model loads (exit 2, one line, no
traceback), Ctrl-C keeps finished batches, --resume ends identical to an uninterrupted run,
and a record with its re-edit in one batch is split, not aborted."""
from __future__ import annotations

import json

import pytest
import torch
from hostile_cases import same

from oteseq import __main__ as cli
from oteseq.editor import Editor
from oteseq.experiments import batches_of, load_result, run_sequential
from oteseq.requests import Request

FAST = '{"v_num_grad_steps": 2, "mom2_n_samples": 100}'


def _bad_args(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out = str(tmp_path / "run")
    return {
        "batch-zero": (["--batch", "0", "--out", out], "--batch 0"),
        "batch-negative": (["--batch", "-5", "--out", out], "--batch -5"),
        "n-zero": (["--n", "0", "--out", out], "--n 0"),
        "n-negative": (["--n", "-1", "--out", out], "--n -1"),
        "data-unknown": (["--data", "cf", "--out", out], "--data 'cf' is unknown"),
        "hparams-bad-json": (["--hparams", "{lam: 1", "--out", out], "not valid JSON"),
        "hparams-not-object": (["--hparams", "[1]", "--out", out], "JSON object"),
        "hparams-unknown-key": (["--hparams", '{"lamda": 1}', "--out", out], "unknown hyper"),
        "hparams-bad-value": (["--hparams", '{"lam": "x"}', "--out", out], "--hparams"),
        "device-unknown": (["--device", "banana", "--out", out], "not a device name"),
        "device-gpu-index": (["--device", "cuda:99", "--out", out], "CUDA is not available"),
        "out-missing": ([], "--out is required"),
        "out-is-a-file": (["--out", str(a_file)], "is a file"),
        "out-unwritable": (["--out", str(a_file / "sub")], "not writable"),
        "resume-no-checkpoint": (["--resume", str(tmp_path)], "no checkpoint|--resume"),
        "resume-with-settings": (["--resume", str(tmp_path), "--n", "5"], "drop --n"),
    }


CASES = ["batch-zero", "batch-negative", "n-zero", "n-negative", "data-unknown",
         "hparams-bad-json", "hparams-not-object", "hparams-unknown-key", "hparams-bad-value",
         "device-unknown", "device-gpu-index", "out-missing", "out-is-a-file", "out-unwritable",
         "resume-no-checkpoint", "resume-with-settings"]


@pytest.mark.parametrize("case", CASES)
def test_bad_arguments_exit_2_with_one_line_and_no_model(case, tmp_path, capsys, monkeypatch):
    argv, message = _bad_args(tmp_path)[case]
    monkeypatch.setattr("oteseq.load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as info:
        cli.main(["edit", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("oteseq: error: ")
    assert pytest.importorskip("re").search(message, err), err


def test_n_larger_than_the_data_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(["edit", "--n", "100000", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "the toy world has 5000 people" in err and "Traceback" not in err


def test_batches_split_before_a_repeated_id():
    reqs = [Request("{} is in", s, "X", relation="P1") for s in "abcadb"]
    sizes = [[r.subject for r in b] for b in batches_of(reqs, 4)]
    assert sizes == [["a", "b", "c"], ["a", "d", "b"]]
    subjects = [[r.subject for r in b] for b in batches_of(reqs * 2, 5)]
    assert sum(subjects, []) == [r.subject for r in reqs * 2]
    assert all(len(b) <= 5 and len(set(b)) == len(b) for b in subjects)


def _run(out, *extra):
    return cli.main(["edit", "--model", "toy-v1", "--n", "6", "--batch", "2", "--out", str(out),
                     "--no-progress", "--hparams", FAST, *extra])


def _final_state(out):
    import oteseq
    model, tok = oteseq.load_model("toy-v1")
    ed = Editor.load(out / cli.CHECKPOINT, model, tok, progress=False)
    return {l: ed.memory(l).state_dict() for l in ed.layers}, ed.ids


@pytest.mark.slow
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setenv("OTESEQ_CACHE", str(tmp_path / "cache"))
    assert _run(tmp_path / "whole") == 0
    real, calls = Editor.edit, []

    def ctrl_c_in_batch_2(self, requests):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, requests)

    with monkeypatch.context() as m:
        m.setattr(Editor, "edit", ctrl_c_in_batch_2)
        assert _run(tmp_path / "cut") == 130
    partial = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert len(partial["batches"]) == 1 and partial["complete"] is False
    assert cli.main(["edit", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    whole, cut = _final_state(tmp_path / "whole"), _final_state(tmp_path / "cut")
    assert same(whole, cut) and len(whole[1]) == 6
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "cut"))
    strip = lambda r: [{k: v for k, v in x.items() if k != "timings"}  # noqa
                       for x in r["batches"]]
    assert strip(a) == strip(b) and a["complete"] and b["complete"]
    assert a["metrics"] == b["metrics"] and a["config"] == b["config"]


@pytest.mark.slow
def test_toy_conflicts_with_a_re_edit_in_one_batch_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("OTESEQ_CACHE", str(tmp_path / "cache"))
    code = cli.main(["edit", "--model", "toy-v1", "--data", "toy-conflicts", "--n", "8", "--batch",
                     "4", "--out", str(tmp_path / "r"), "--no-progress", "--hparams", FAST])
    assert code == 0
    result = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [b["size"] for b in result["batches"]] == [3, 4, 1]  # record 3 re-edits record 2
    assert [b["first"] for b in result["batches"]] == [0, 3, 7]
    assert [b["conflicts"] for b in result["batches"]] == [0, 1, 0]
    assert result["config"]["n_batches"] == 3 and "repeated id" in result["config"]["batching"]
    assert torch.isfinite(torch.tensor([b["mean_loss"] for b in result["batches"]])).all()


@pytest.mark.slow
def test_results_file_is_what_run_sequential_returns(tmp_path, monkeypatch):
    """One protocol: the CLI's results.json equals run_sequential's Result on the same inputs
    (config and metrics; timings differ), and load_result reads it."""
    import oteseq
    from oteseq import data, methods

    monkeypatch.setenv("OTESEQ_CACHE", str(tmp_path / "cache"))
    assert _run(tmp_path / "r") == 0
    saved = load_result(tmp_path / "r" / "results.json")
    oteseq.setup(0)
    model, tok = oteseq.load_model("toy-v1")
    hp = methods.default_hparams(model, "memit-seq").replace(**json.loads(FAST))
    direct = run_sequential(model, tok, data.load("toy-counterfact", 6, seed=0, model="toy-v1"),
                            method="memit-seq", batch_size=2, hparams=hp, progress=False,
                            data="toy-counterfact", split_repeated=True).to_dict()
    assert saved.config == direct["config"] and saved.metrics == direct["metrics"]
    assert 0.0 <= saved.metrics["post"]["efficacy"] <= 1.0
    assert [{k: v for k, v in b.items() if k != "timings"} for b in saved.batches] == \
        [{k: v for k, v in b.items() if k != "timings"} for b in direct["batches"]]
