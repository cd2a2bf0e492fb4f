"""Reading M2.5 metrics out of TensorBoard answers (issue 5 §4): names, latest values, matching.

The calls themselves run against the stand-in (tests/integration/jobs/test_job_metrics.py); these
are the decisions made on their answers, shaped as tensorboards.batchRead documents them.
"""

from __future__ import annotations

from droptune.jobs.experiment_metrics import _latest_values, metric_name

RUN = "projects/p/locations/us-central1/tensorboards/1/experiments/e/runs"


def test_series_names_are_the_documented_metrics_with_or_without_their_slash() -> None:
    assert metric_name("/train_total_loss") == "/train_total_loss"
    assert metric_name("eval_num_predictions") == "/eval_num_predictions"
    assert metric_name("learning_rate") is None
    assert metric_name("/train_total_loss_smoothed") is None


def _points(*steps_and_values: tuple[int, float]) -> list[dict[str, object]]:
    return [
        {"step": str(step), "wallTime": f"2026-01-01T00:00:{step:02d}Z", "scalar": {"value": v}}
        for step, v in steps_and_values
    ]


def test_each_metric_takes_its_value_at_the_highest_step_whatever_the_order_of_points() -> None:
    names = [f"{RUN}/a/timeSeries/11", f"{RUN}/a/timeSeries/12"]
    series = {names[0]: "/train_total_loss", names[1]: "/eval_total_loss"}
    data = [
        {"tensorboardTimeSeriesId": "12", "valueType": "SCALAR", "values": _points((10, 1.9), (20, 1.4))},
        {
            "tensorboardTimeSeriesId": "11",
            "valueType": "SCALAR",
            "values": _points((30, 0.8), (5, 2.5), (29, 0.9)),
        },
    ]
    metrics, step = _latest_values(names, series, data)
    assert metrics == {"/eval_total_loss": 1.4, "/train_total_loss": 0.8}
    assert step == 30


def test_series_of_two_runs_with_the_same_id_are_matched_by_their_place_in_the_request() -> None:
    names = [f"{RUN}/a/timeSeries/1", f"{RUN}/b/timeSeries/1"]
    series = {names[0]: "/train_total_loss", names[1]: "/train_num_predictions"}
    data = [
        {"tensorboardTimeSeriesId": "1", "values": _points((3, 0.5))},
        {"tensorboardTimeSeriesId": "1", "values": _points((3, 640.0))},
    ]
    metrics, _ = _latest_values(names, series, data)
    assert metrics == {"/train_total_loss": 0.5, "/train_num_predictions": 640.0}


def test_a_series_with_no_points_yet_gives_no_value_rather_than_a_zero() -> None:
    names = [f"{RUN}/a/timeSeries/4"]
    metrics, step = _latest_values(names, {names[0]: "/eval_total_loss"}, [{"tensorboardTimeSeriesId": "4"}])
    assert metrics == {} and step is None
