"""A tuning job's metrics, read from its Vertex AI Experiment as on Vertex AI (issue 5 §4; M2.5, M2.6).

The stand-in serves a running tuning job's experiment as Vertex does: `TuningJob.experiment`
names a Metadata context whose backing TensorBoard holds the `/train_*` and `/eval_*` series.
The poller reads them there with google-cloud-aiplatform's Metadata and TensorBoard clients, so
what these tests check is what a job on Vertex AI would show: live metrics in Firestore while it
trains, all six at the end, and a read that costs one call per tick once the series are known.
"""

from __future__ import annotations

import csv
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from jobs_support import events_of, job_document, run_jobs_command
from stack_support import chat_lines, wait_for

pytestmark = pytest.mark.integration

TRAIN = {"/train_total_loss", "/train_fraction_of_correct_next_step_preds", "/train_num_predictions"}
EVAL = {"/eval_total_loss", "/eval_fraction_of_correct_next_step_preds", "/eval_num_predictions"}


def _standin_job(stack: Any, name: str) -> dict[str, Any]:
    """The stand-in's wire JSON of a job, its worker's own record (`droptuneMetrics`) included."""
    with urllib.request.urlopen(f"{stack.endpoint('vertex')}/v1beta1/{name}", timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _worker_points(resource: dict[str, Any]) -> list[tuple[int, str, float]]:
    return [
        (int(point["step"]), metric, float(value))
        for point in resource["droptuneMetrics"]["series"]
        for metric, value in point["values"].items()
        if metric in TRAIN | EVAL
    ]


def _worker_latest(resource: dict[str, Any]) -> tuple[dict[str, float], int]:
    """Each metric's last value as the training worker recorded it, and the last step."""
    latest: dict[str, float] = {}
    last_step = 0
    for point in resource["droptuneMetrics"]["series"]:
        latest.update(point["values"])
        last_step = max(last_step, int(point["step"]))
    return {k: v for k, v in latest.items() if k in TRAIN | EVAL}, last_step


def test_a_jobs_metrics_come_from_its_experiment_while_it_trains_and_when_it_ends(
    world: Any, capsys: Any, tmp_path: Path
) -> None:
    stack, db, events = world.stack, world.db, world.events
    validation = world.bucket.blob(f"manual/{uuid.uuid4().hex[:10]}/validation.jsonl")
    validation.upload_from_string(chat_lines(8, topic="weather"))
    job_id = world.launch(
        chat_lines(60), epochs=3, validation_dataset=f"gs://{world.bucket.name}/{validation.name}"
    )

    live = wait_for(
        lambda: (
            (d := job_document(db, job_id))
            and d["state"] == "running"
            and "/train_total_loss" in (d.get("metrics") or {})
            and d
        ),
        timeout=180,
        interval=0.5,
        what=f"{job_id} to show training metrics while it runs",
    )
    vertex_name = live["vertex"]["name"]
    experiment = _standin_job(stack, vertex_name)["experiment"]
    assert experiment.endswith(
        f"/metadataStores/default/contexts/tuning-experiment-{vertex_name.rsplit('/', 1)[-1]}"
    )
    assert live["vertex"]["experiment"] == experiment  # M2.6
    assert set(live["metrics"]) <= TRAIN | EVAL and live["metrics_step"] >= 1
    assert live["metrics_source"]["experiment"] == experiment

    finished = wait_for(
        lambda: (d := job_document(db, job_id)) and d["state"] not in ("launching", "running") and d,
        timeout=300,
        interval=1,
        what=f"{job_id} to finish",
    )
    assert finished["state"] in ("succeeded", "deploying", "deployed", "deploy_failed"), finished.get("error")
    expected, last_step = _worker_latest(_standin_job(stack, vertex_name))
    assert set(expected) == TRAIN | EVAL, "the worker did not record all six metrics"
    assert finished["metrics"] == pytest.approx(expected, rel=1e-6)
    assert finished["metrics_step"] == last_step
    (succeeded,) = events_of(events, job_id, "droptune.job.succeeded")
    assert succeeded["data"]["metrics"] == finished["metrics"]

    code, shown = run_jobs_command(capsys, "jobs", "show", job_id)
    assert code == 0 and f"experiment {experiment}" in shown
    assert f"metrics    step {last_step}" in shown and "/eval_fraction_of_correct_next_step_preds" in shown

    # Every step, as the worker recorded it, read back from the experiment by `jobs metrics`.
    csv_path = tmp_path / "metrics.csv"
    code, table = run_jobs_command(capsys, "jobs", "metrics", job_id, "--csv", str(csv_path))
    assert code == 0 and experiment in table
    with csv_path.open(newline="") as rows:
        written = [(int(r["step"]), r["metric"], float(r["value"])) for r in csv.DictReader(rows)]
    worker_points = sorted(_worker_points(_standin_job(stack, vertex_name)))
    assert sorted(written) == worker_points

    # `jobs watch --plot` draws the same points, not only the ones it happened to see.
    from droptune_cli.journey import _plotted_points

    by_step, where = _plotted_points(world.settings(), finished, {})
    assert where == "every step, from the job's Vertex AI Experiment"
    assert (
        sorted((step, m, v) for step, values in by_step.items() for m, v in values.items()) == worker_points
    )


def test_once_the_series_are_known_a_metrics_read_is_one_call(world: Any) -> None:
    from droptune.jobs.experiment_metrics import ExperimentMetrics

    db = world.db
    job_id = world.launch(chat_lines(30), epochs=1)
    done = wait_for(
        lambda: (d := job_document(db, job_id)) and d["state"] not in ("launching", "running") and d,
        timeout=300,
        interval=1,
        what=f"{job_id} to finish",
    )
    experiment = done["vertex"]["experiment"]
    _, poller = world.core(world.settings())
    counts = poller.context.counts
    reader = ExperimentMetrics(poller.vertex)

    before = counts.vertex_calls
    first = reader.read(experiment, None, expects_eval=False)
    assert first is not None and set(first.metrics) == TRAIN
    # The context, the runs, the run's series, then the read itself.
    assert counts.vertex_calls - before == 4

    before = counts.vertex_calls
    again = reader.read(experiment, first.source, expects_eval=False)
    assert again is not None and again.metrics == first.metrics and again.step == first.step
    assert counts.vertex_calls - before == 1


def test_an_experiment_that_cannot_be_read_costs_the_job_nothing(world: Any, caplog: Any) -> None:
    from droptune.jobs.experiment_metrics import ExperimentMetrics

    _, poller = world.core(world.settings())
    missing = f"projects/{world.stack.project}/locations/us-central1/metadataStores/default/contexts/nope"
    with caplog.at_level("WARNING"):
        assert ExperimentMetrics(poller.vertex).read(missing, None, expects_eval=False) is None
    (record,) = [r for r in caplog.records if r.getMessage() == "tuning metrics not read this tick"]
    assert "roles/aiplatform.user" in record.__dict__["fields"]["remedy"]


def test_jobs_metrics_says_why_when_a_job_names_no_experiment(world: Any, capsys: Any) -> None:
    from jobs_support import manual_request

    settings = world.settings(training_token_budget=100)  # held before any Vertex job exists
    request = manual_request(
        world.stack, world.bucket, chat_lines(12), stats={"billable_training_tokens": 5000}
    )
    launcher, poller = world.core(settings)
    launcher.handle_request(request)
    try:
        code, said = run_jobs_command(capsys, "jobs", "metrics", request["job_id"], stderr=True)
        assert code == 1 and "names no Vertex AI Experiment (state awaiting_approval)" in said
        assert f"droptune jobs show {request['job_id']}" in said
    finally:
        assert poller.handle_command({"command": "reject", "job_id": request["job_id"]}) == "rejected"
