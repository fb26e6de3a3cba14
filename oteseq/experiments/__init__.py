"""Experiments: the paper's sequential-editing protocol, its one-time reference, results as
JSON and their figures.

    result = run_sequential(model, tok, records, method="memit-seq", batch_size=100)
    ote = run_one_time(model, tok, records)          # all n edits in one batch (E2000)
    weight_distance(result, ote)     # {layer: ‖W_seq − W_ote‖ / ‖W_ote − W0‖}
    save_result(result, "memit-seq.json"); load_result("memit-seq.json")
"""
from ._conflicts import conflict_outcome, latest_pairs
from ._plots import metric_value, plot_curves, plot_methods
from ._protocol import batches_of, run_one_time, run_sequential, weight_distance
from ._result import PROTOCOL, Result, load_result, save_json, save_result, versions

__all__ = ["PROTOCOL", "Result", "batches_of", "conflict_outcome", "latest_pairs",
           "load_result", "metric_value", "plot_curves", "plot_methods", "run_one_time",
           "run_sequential", "save_json", "save_result", "versions", "weight_distance"]
