"""One JSON converter: Record.to_dict and the results file share dlngeo.dynamics.record.to_json_value."""

import json

import numpy as np

from dlngeo import results
from dlngeo.dynamics.record import Record, to_json_value


def test_results_use_the_record_converter():
    assert results.to_json_value is to_json_value


def test_record_summary_is_strict_json():
    record = Record(method="m", info={"a": np.arange(3), 2: np.float64(np.nan), "o": object})
    record.append(0.0, 0, {"loss": np.float64(1.5), "v": np.array([np.inf, 1.0])})
    record.evaluations = {"gradient": np.int64(4)}
    summary = record.to_dict()
    text = json.dumps(summary, allow_nan=False)  # raises on NaN / inf / numpy scalars
    back = json.loads(text)
    assert back["info"] == {"a": [0, 1, 2], "2": None, "o": repr(object)}
    assert back["metrics"]["loss"] == [1.5] and back["metrics"]["v"] == [[None, 1.0]]
    assert (
        back["evaluations"] == {"gradient": 4} and type(summary["evaluations"]["gradient"]) is int
    )
