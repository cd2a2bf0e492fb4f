"""A tuning job's Vertex AI Experiment, as the Metadata and TensorBoard REST APIs show it.

A real tuning job names its experiment in `TuningJob.experiment` (a Metadata context,
`projects/P/locations/L/metadataStores/default/contexts/C`) once it runs, and its metrics (M2.5:
`/train_*`, `/eval_*`) are time series in the TensorBoard that backs that experiment. The
aiplatform SDK links the two: the context's `metadata.backing_tensorboard_resource` names the
TensorBoard, and the TensorboardExperiment in it has the context's id
(`Experiment.get_backing_tensorboard_resource`, `ExperimentRun._initialize_tensorboard_run`).

Everything here is derived from the job resource (its experiment name and the worker's recorded
series), so nothing is stored twice and a restart loses nothing. Served routes, as documented at
https://cloud.google.com/vertex-ai/docs/reference/rest/v1beta1/projects.locations.tensorboards:
- GET {context}                                   metadataStores.contexts.get
- GET {tensorboard}/experiments/{e}/runs          tensorboards.experiments.runs.list
- GET {run}/timeSeries                            tensorboards.experiments.runs.timeSeries.list
- GET {tensorboard}:batchRead?timeSeries=…        tensorboards.batchRead
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from vertex_standin.resources import ApiError

TENSORBOARD_ID = "8000000000"  # one TensorBoard per location backs every tuning experiment
EXPERIMENT_PREFIX = "tuning-experiment-"
RUN_ID = "tuning"
# The documented names of M2.5, in a fixed order: a series' id is its place in this list.
METRIC_NAMES = (
    "/train_total_loss",
    "/train_fraction_of_correct_next_step_preds",
    "/train_num_predictions",
    "/eval_total_loss",
    "/eval_fraction_of_correct_next_step_preds",
    "/eval_num_predictions",
)
# "The data point number limit is 1000 for scalars ... Otherwise, the number limit of data points
# is randomly selected from this time series and returned." (tensorboards.batchRead)
BATCH_READ_SCALAR_LIMIT = 1000


def experiment_name(parent: str, job_resource_id: str) -> str:
    return f"{parent}/metadataStores/default/contexts/{EXPERIMENT_PREFIX}{job_resource_id}"


def job_id_of_context(context_id: str) -> str:
    if not context_id.startswith(EXPERIMENT_PREFIX):
        raise ApiError(5, f"Context {context_id} not found.")
    return context_id.removeprefix(EXPERIMENT_PREFIX)


def tensorboard_name(parent: str) -> str:
    return f"{parent}/tensorboards/{TENSORBOARD_ID}"


def context_resource(job: dict[str, Any]) -> dict[str, Any]:
    """The experiment's Metadata context (schema `system.Experiment`, as the SDK checks)."""
    name = str(job["experiment"])
    parent = name.split("/metadataStores/", maxsplit=1)[0]
    return {
        "name": name,
        "displayName": name.rsplit("/", 1)[-1],
        "etag": str(job.get("updateTime", "")),
        "createTime": job.get("startTime") or job.get("createTime"),
        "updateTime": job.get("updateTime"),
        "schemaTitle": "system.Experiment",
        "schemaVersion": "0.0.1",
        "metadata": {"backing_tensorboard_resource": tensorboard_name(parent), "experiment_deleted": False},
    }


def runs_resource(job: dict[str, Any], tensorboard_experiment: str) -> dict[str, Any]:
    run = {
        "name": f"{tensorboard_experiment}/runs/{RUN_ID}",
        "displayName": RUN_ID,
        "createTime": job.get("startTime") or job.get("createTime"),
        "updateTime": job.get("updateTime"),
    }
    return {"tensorboardRuns": [run]}


def time_series_resource(job: dict[str, Any], run: str) -> dict[str, Any]:
    points = _points_by_metric(job)
    listed = []
    for index, metric in enumerate(METRIC_NAMES, start=1):
        values = points.get(metric)
        if not values:
            continue  # a series exists once its first point is written (eval ones later)
        last = max(values, key=lambda point: int(point["step"]))
        listed.append(
            {
                "name": f"{run}/timeSeries/{index}",
                "displayName": metric,
                "valueType": "SCALAR",
                "pluginName": "scalars",
                "createTime": job.get("startTime") or job.get("createTime"),
                "updateTime": job.get("updateTime"),
                "metadata": {"maxStep": last["step"], "maxWallTime": last["wallTime"]},
            }
        )
    return {"tensorboardTimeSeries": listed}


def batch_read(jobs_by_run: dict[str, dict[str, Any]], names: Iterable[str]) -> dict[str, Any]:
    """`timeSeriesData` of each named series; `jobs_by_run` maps a run's name to its job."""
    data = []
    points_by_run: dict[str, dict[str, list[dict[str, Any]]]] = {}  # each job's series, read once
    for name in names:
        run, _, series_id = name.partition("/timeSeries/")
        job = jobs_by_run.get(run)
        if job is None or not series_id.isdigit() or not 1 <= int(series_id) <= len(METRIC_NAMES):
            raise ApiError(5, f"TensorboardTimeSeries {name} not found.")
        if run not in points_by_run:
            points_by_run[run] = _points_by_metric(job)
        values = points_by_run[run].get(METRIC_NAMES[int(series_id) - 1])
        if not values:
            raise ApiError(5, f"TensorboardTimeSeries {name} not found.")
        if len(values) > BATCH_READ_SCALAR_LIMIT:
            values = sorted(
                random.sample(values, BATCH_READ_SCALAR_LIMIT), key=lambda point: int(point["step"])
            )
        data.append({"tensorboardTimeSeriesId": series_id, "valueType": "SCALAR", "values": values})
    return {"timeSeriesData": data}


def _points_by_metric(job: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    series = (job.get("droptuneMetrics") or {}).get("series") or []
    fallback_time = job.get("updateTime") or job.get("createTime")
    points: dict[str, list[dict[str, Any]]] = {}
    for point in series:
        for metric, value in (point.get("values") or {}).items():
            if metric in METRIC_NAMES:
                points.setdefault(metric, []).append(
                    {
                        "wallTime": point.get("wallTime") or fallback_time,
                        "step": str(int(point["step"])),  # int64: a string in JSON
                        "scalar": {"value": float(value)},
                    }
                )
    return points
