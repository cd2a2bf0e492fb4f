"""Reading M2.5 metrics out of TensorBoard answers (issue 5 §4): names, latest values, matching.

The calls themselves run against the stand-in (tests/integration/jobs/test_job_metrics.py); these
are the decisions made on their answers, shaped as tensorboards.batchRead documents them.
"""

from __future__ import annotations

from droptune.jobs.experiment_metrics import _points, metric_name

RUN = "projects/p/locations/us-central1/tensorboards/1/experiments/e/runs"


def test_series_names_are_the_documented_metrics_with_or_without_their_slash() -> None:
    assert metric_name("/train_total_loss") == "/train_total_loss"
    assert metric_name("eval_num_predictions") == "/eval_num_predictions"
    assert metric_name("learning_rate") is None
    assert metric_name("/train_total_loss_smoothed") is None


def _points_at(*steps_and_values: tuple[int, float]) -> list[dict[str, object]]:
    return [
        {"step": str(step), "wallTime": f"2026-01-01T00:00:{step:02d}Z", "scalar": {"value": v}}
        for step, v in steps_and_values
    ]


def test_each_metrics_points_come_in_step_order_whatever_the_order_of_the_answer() -> None:
    series = [(f"{RUN}/a/timeSeries/11", "/train_total_loss"), (f"{RUN}/a/timeSeries/12", "/eval_total_loss")]
    data = [
        {"tensorboardTimeSeriesId": "12", "valueType": "SCALAR", "values": _points_at((10, 1.9), (20, 1.4))},
        {"tensorboardTimeSeriesId": "11", "values": _points_at((30, 0.8), (5, 2.5), (29, 0.9))},
    ]
    found = _points(series, data)
    assert [(step, value) for step, _, value in found["/train_total_loss"]] == [
        (5, 2.5),
        (29, 0.9),
        (30, 0.8),
    ]
    assert [(step, value) for step, _, value in found["/eval_total_loss"]] == [(10, 1.9), (20, 1.4)]


def test_series_of_two_runs_with_the_same_id_are_matched_by_their_place_in_the_request() -> None:
    series = [
        (f"{RUN}/a/timeSeries/1", "/train_total_loss"),
        (f"{RUN}/b/timeSeries/1", "/train_num_predictions"),
    ]
    data = [
        {"tensorboardTimeSeriesId": "1", "values": _points_at((3, 0.5))},
        {"tensorboardTimeSeriesId": "1", "values": _points_at((3, 640.0))},
    ]
    found = _points(series, data)
    assert found["/train_total_loss"][-1][2] == 0.5 and found["/train_num_predictions"][-1][2] == 640.0


def test_a_series_with_no_points_yet_gives_no_value_rather_than_a_zero() -> None:
    series = [(f"{RUN}/a/timeSeries/4", "/eval_total_loss")]
    assert _points(series, [{"tensorboardTimeSeriesId": "4"}]) == {}


def test_a_zero_left_out_of_the_json_answer_is_read_as_zero() -> None:
    # Proto3 JSON drops default values: an accuracy of 0.0 at step 0 arrives as `{"scalar": {}}`.
    series = [(f"{RUN}/a/timeSeries/2", "/train_fraction_of_correct_next_step_preds")]
    data = [{"tensorboardTimeSeriesId": "2", "values": [{"wallTime": "2026-01-01T00:00:00Z", "scalar": {}}]}]
    assert _points(series, data) == {
        "/train_fraction_of_correct_next_step_preds": [(0, "2026-01-01T00:00:00Z", 0.0)]
    }
