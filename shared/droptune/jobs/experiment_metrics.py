"""A running tuning job's metrics (M2.5), read from its Vertex AI Experiment.

Vertex AI keeps a tuning job's `/train_*` and `/eval_*` metrics in the Vertex AI Experiment the
job names (`TuningJob.experiment`, a Metadata context, set once the job runs), as TensorBoard time
series. The way there is the aiplatform SDK's own (`Experiment.get_backing_tensorboard_resource`,
`ExperimentRun.get_time_series_data_frame`): the context's `metadata.backing_tensorboard_resource`
names the TensorBoard, whose TensorboardExperiment has the context's id; its runs hold the series.

Calls, per running job and tick (poller.py reads jobs in bounded parallel):
- the context, once per job;
- until every series the job will write is known (three `/train_*`, and three `/eval_*` with a
  validation set, which appear at the first evaluation): one runs list and one series list per run;
- one `tensorboards.batchRead` of the known series.
What was found is kept in the job document (`metrics_source`), so a steady tick adds one call per
running job, and a new poller instance starts where the last one stopped.

batchRead returns at most 1,000 points of a scalar series, chosen at random beyond that; the value
recorded, and `step`, are those of the highest step returned.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from droptune.jobs.vertex_access import VertexError, VertexJobs
from droptune.jsonlog import log_fields

log = logging.getLogger(__name__)

TRAIN_METRICS = (
    "/train_total_loss",
    "/train_fraction_of_correct_next_step_preds",
    "/train_num_predictions",
)
EVAL_METRICS = (
    "/eval_total_loss",
    "/eval_fraction_of_correct_next_step_preds",
    "/eval_num_predictions",
)
_BACKING_TENSORBOARD_KEY = "backing_tensorboard_resource"  # the SDK's key in the context metadata


@dataclass(frozen=True)
class MetricsReading:
    """What one read found: the latest value of each M2.5 series, and where they live."""

    metrics: dict[str, float]
    step: int | None
    source: dict[str, Any]


def metric_name(display_name: str) -> str | None:
    """The M2.5 name of a series, or None for a series that is not one of them.

    The documented names begin with a slash; a TensorBoard tag may be written without it.
    """
    name = display_name.strip()
    name = name if name.startswith("/") else f"/{name}"
    return name if name in (*TRAIN_METRICS, *EVAL_METRICS) else None


class ExperimentMetrics:
    def __init__(self, vertex: VertexJobs) -> None:
        self.vertex = vertex

    def read(
        self, experiment: str, source: Mapping[str, Any] | None, *, expects_eval: bool
    ) -> MetricsReading | None:
        """The job's metrics now; None when this tick could not read them (logged, the caller keeps
        what it had: metrics are never worth failing or delaying a job's state for)."""
        try:
            known, series, data = self._fetch(experiment, source, expects_eval=expects_eval)
        except VertexError as error:
            log.warning(
                "tuning metrics not read this tick",
                extra=log_fields(
                    experiment=experiment,
                    problem=error.message,
                    remedy="The poller's service account needs roles/aiplatform.user (it grants "
                    "aiplatform.contexts.get and aiplatform.tensorboardTimeSeries.batchRead); the "
                    "next tick tries again.",
                ),
            )
            return None
        latest = {metric: points[-1] for metric, points in sorted(_points(series, data).items())}
        step = max((point[0] for point in latest.values()), default=None)
        return MetricsReading({metric: point[2] for metric, point in latest.items()}, step, known)

    def history(
        self, experiment: str, source: Mapping[str, Any] | None = None, *, expects_eval: bool = True
    ) -> dict[str, list[tuple[int, float]]]:
        """Every point (step, value) of each metric, by step; raises VertexError as it came."""
        _, series, data = self._fetch(experiment, source, expects_eval=expects_eval)
        return {
            metric: [(point[0], point[2]) for point in points]
            for metric, points in sorted(_points(series, data).items())
        }

    def _fetch(
        self, experiment: str, source: Mapping[str, Any] | None, *, expects_eval: bool
    ) -> tuple[dict[str, Any], list[tuple[str, str]], list[dict[str, Any]]]:
        """Where the series are (found again only while some are missing), and their data."""
        known = dict(source or {})
        if known.get("experiment") != experiment or not known.get("tensorboard"):
            known = self._locate(experiment)
        # Kept as a list in Firestore: a resource name is no map key to put in a field path.
        series = {str(item["name"]): str(item["metric"]) for item in known.get("time_series") or []}
        wanted = {*TRAIN_METRICS, *(EVAL_METRICS if expects_eval else ())}
        if not wanted <= set(series.values()):
            series = self._discover(str(known["tensorboard_experiment"]))
            known["time_series"] = [
                {"name": name, "metric": metric} for name, metric in sorted(series.items())
            ]
        if not series:
            return known, [], []
        asked = sorted(series.items())
        data = self.vertex.batch_read_time_series(str(known["tensorboard"]), [name for name, _ in asked])
        return known, asked, data

    def _locate(self, experiment: str) -> dict[str, Any]:
        context = self.vertex.get_context(experiment)
        tensorboard = str((context.get("metadata") or {}).get(_BACKING_TENSORBOARD_KEY) or "")
        if not tensorboard:
            raise VertexError(5, f"The experiment {experiment} names no backing TensorBoard.")
        context_id = experiment.rsplit("/", 1)[-1]
        return {
            "experiment": experiment,
            "tensorboard": tensorboard,
            "tensorboard_experiment": f"{tensorboard}/experiments/{context_id}",
            "time_series": [],
        }

    def _discover(self, tensorboard_experiment: str) -> dict[str, str]:
        """Every M2.5 series of the experiment's runs: resource name → metric name."""
        found: dict[str, str] = {}
        for run in self.vertex.list_tensorboard_runs(tensorboard_experiment):
            for item in self.vertex.list_time_series(str(run["name"])):
                name = metric_name(str(item.get("displayName") or ""))
                if name is not None and item.get("valueType", "SCALAR") == "SCALAR":
                    found[str(item["name"])] = name
        return found


def _points(
    series: list[tuple[str, str]], data: list[dict[str, Any]]
) -> dict[str, list[tuple[int, str, float]]]:
    """Each metric's points (step, wall time, value), in step order (several runs may write one).

    An answer names its series by id only (the last part of the resource name), which is unique
    within a run; when the ids asked for are not unique, answers are matched by position, the
    order of the request.
    """
    ids = [name.rsplit("/", 1)[-1] for name, _ in series]
    if len(set(ids)) == len(ids):
        by_id = {series_id: metric for series_id, (_, metric) in zip(ids, series, strict=True)}
        pairs = [(by_id.get(str(item.get("tensorboardTimeSeriesId"))), item) for item in data]
    else:
        pairs = [(metric, item) for (_, metric), item in zip(series, data, strict=False)]
    points: dict[str, list[tuple[int, str, float]]] = {}
    for metric, item in pairs:
        if metric is None:
            continue
        for point in item.get("values") or []:
            if "scalar" not in point:
                continue  # a tensor or blob point: not one of the M2.5 scalars
            # Proto3 JSON leaves out zeros: a scalar without a value is 0.0, a point without a step
            # is step 0.
            value = float(point["scalar"].get("value", 0.0))
            step = int(point.get("step") or 0)
            points.setdefault(metric, []).append((step, str(point.get("wallTime") or ""), value))
    return {metric: sorted(found) for metric, found in points.items()}
