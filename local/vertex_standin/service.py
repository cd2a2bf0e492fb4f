"""What the stand-in does behind its HTTP routes: jobs, their workers, deployments, operations.

A background loop (one thread) starts queued workers, reads their progress into the job
resources, finishes jobs whose worker ended (cancelled ones included) and completes deploy
operations whose serving worker is ready. Request handlers only read and write the store (a
cancel waits a moment for its worker, holding no lock), so none of them ever waits on training.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vertex_standin import experiments
from vertex_standin.models import (
    BASE_LEARNING_RATES,
    PALM_MODELS,
    UnknownBaseModelError,
    offline_environment,
    rules_for_base_model,
)
from vertex_standin.resources import (
    ADAPTER_RANKS,
    INTERNAL_ERROR_MESSAGE,
    PIPELINE_STATE_OF_JOB_STATE,
    TERMINAL_STATES,
    ApiError,
    JobState,
    ResourceStore,
    StoredResource,
    parse_body,
    rpc_status,
    timestamp,
)
from vertex_standin.training import TrainingPlan, plan_to_json

logger = logging.getLogger("vertex_standin")

TUNING_JOBS = "tuningJobs"
PIPELINE_JOBS = "pipelineJobs"
OPERATIONS = "operations"
MODELS = "models"
ENDPOINTS = "endpoints"
JOB_COLLECTIONS = (TUNING_JOBS, PIPELINE_JOBS)

PALM_TEMPLATES = ("tune-large-model", "tune-large-chat-model")
WORKER_STOP_GRACE_S = 3.0
CANCEL_WAIT_S = 2.0  # how long a cancel request waits for its worker to exit (holding no lock)
PREDICT_TIMEOUT_S = 600.0
DEFAULT_PAGE_SIZE = 100
RESTARTED_MESSAGE = "The Vertex AI stand-in restarted while this job was running; create the job again."
_TERMS = re.compile(r'^\s*([A-Za-z0-9_.-]+)\s*(!=|=)\s*"?([^"]*)"?\s*$')


@dataclass(frozen=True)
class StandinSettings:
    project: str
    state_dir: Path
    model_cache_dir: Path
    local_model_family: str = "tiny"
    max_concurrent_tuning_jobs: int = 1
    default_output_bucket: str = "droptune-standin-artifacts"
    torch_threads: int = 2
    batch_size: int = 8
    default_epochs: int = 3
    tick_seconds: float = 0.25


@dataclass(frozen=True)
class ParsedName:
    """A resource path such as projects/p/locations/l/tuningJobs/123."""

    project: str
    location: str
    collection: str
    resource_id: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def name(self) -> str:
        return f"{self.parent}/{self.collection}/{self.resource_id}"


def _job_state(stored: StoredResource) -> JobState:
    """The job state of a tuning or pipeline job, whatever enum its resource uses."""
    state = str(stored.resource["state"])
    return JobState(state.replace("PIPELINE_STATE_", "JOB_STATE_"))


def _in_state(stored: StoredResource, state: JobState, now: str, **fields: Any) -> dict[str, Any]:
    """A job resource moved to `state` at `now`, with `fields` beside (startTime, endTime...)."""
    return {**stored.resource, "state": _state_name(stored.collection, state), "updateTime": now, **fields}


def _state_name(collection: str, state: JobState) -> str:
    return str(PIPELINE_STATE_OF_JOB_STATE[state] if collection == PIPELINE_JOBS else state)


class StandinService:
    def __init__(self, settings: StandinSettings) -> None:
        self.settings = settings
        self.store = ResourceStore(settings.state_dir / "resources")
        self._workers: dict[str, subprocess.Popen[bytes]] = {}
        # When a cancelled job's worker, signalled to stop, is killed if it has not ended.
        self._kill_after: dict[str, float] = {}
        # Held by every request that changes jobs and by the scheduler tick, so a cancel can never
        # interleave with the tick that starts the same job.
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self._recover_after_restart()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = threading.Thread(target=self._run_loop, name="standin-scheduler", daemon=True)
        self._loop.start()

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=10)
        for key in list(self._workers):
            self._stop_worker(key)

    def _run_loop(self) -> None:
        while not self._stop.wait(self.settings.tick_seconds):
            try:
                with self.lock:
                    self.tick()
            except Exception:  # the loop must outlive any one bad job; the job itself is failed below
                logger.exception("scheduler tick failed")

    def _recover_after_restart(self) -> None:
        # Workers do not outlive the server that started them. Deployed endpoints are loaded
        # again (first, so that an endpoint a recovered job creates below is not started twice).
        # A job whose worker wrote its outcome before the restart ends as that outcome says; a
        # job still running is failed with a clear message (its worker is ended); a cancelled job
        # is cancelled; a job never started is started as usual.
        for endpoint in self.store.all(ENDPOINTS):
            _end_orphan(endpoint.internal.get("pid"))
            if endpoint.internal.get("artifact_uri") and endpoint.internal.get("status") in (
                "loading",
                "ready",
            ):
                self._start_serving(endpoint)
        for collection in JOB_COLLECTIONS:
            for stored in self.store.all(collection):
                state = _job_state(stored)
                if state not in (JobState.RUNNING, JobState.CANCELLING):
                    continue
                _end_orphan(stored.internal.get("pid"))  # before reading the outcome: no late write
                if state == JobState.CANCELLING:
                    self._finish_job(stored, JobState.CANCELLED, rpc_status(1, "CANCELED"))
                    continue
                work = Path(stored.internal["work_dir"])
                self._read_progress(stored, work)
                outcome = _read_json(work / "outcome.json")
                current = self.store.get(stored.collection, stored.resource_id) or stored
                if outcome is not None:
                    self._end_with_outcome(current, outcome)
                    continue
                self._finish_job(current, JobState.FAILED, rpc_status(10, RESTARTED_MESSAGE))

    # --- tuning jobs ----------------------------------------------------------------------

    def create_tuning_job(self, parent: ParsedName, body: dict[str, Any]) -> dict[str, Any]:
        from google.cloud.aiplatform_v1beta1.types import tuning_job

        request = parse_body(body, tuning_job.TuningJob, "TuningJob")
        spec = request.get("supervisedTuningSpec")
        if not isinstance(spec, dict) or not spec.get("trainingDatasetUri"):
            raise ApiError(3, "supervisedTuningSpec.trainingDatasetUri is required.")
        if not request.get("baseModel") and not request.get("customBaseModel"):
            raise ApiError(3, "baseModel is required.")
        self._check_quota()
        job_id = self.store.new_id()
        now = timestamp()
        resource: dict[str, Any] = {
            "name": f"{parent.parent}/tuningJobs/{job_id}",
            "tunedModelDisplayName": request.get("tunedModelDisplayName") or _random_display_name(),
            "state": JobState.PENDING.value,
            "createTime": now,
            "updateTime": now,
        }
        for key in (
            "baseModel",
            "customBaseModel",
            "description",
            "supervisedTuningSpec",
            "labels",
            "outputUri",
            "serviceAccount",
        ):
            if key in request:
                resource[key] = request[key]
        return self.store.put(
            StoredResource(TUNING_JOBS, job_id, resource, {"project": parent.project})
        ).resource

    def _check_quota(self) -> None:
        active = sum(
            1 for c in JOB_COLLECTIONS for s in self.store.all(c) if _job_state(s) not in TERMINAL_STATES
        )
        if active >= self.settings.max_concurrent_tuning_jobs:
            raise ApiError(
                8,
                (
                    "Quota exceeded for quota metric 'Concurrent tuning jobs' of service "
                    "aiplatform.googleapis.com: "
                    f"limit {self.settings.max_concurrent_tuning_jobs} running or pending job(s)."
                ),
            )

    def get_job(self, name: ParsedName) -> dict[str, Any]:
        return self.store.require(name.collection, name.resource_id, name.name).resource

    def list_resources(self, parent: ParsedName, collection: str, query: dict[str, str]) -> dict[str, Any]:
        items = [
            s.resource
            for s in self.store.all(collection)
            if s.resource["name"].startswith(parent.parent + "/")
        ]
        matches = _compile_filter(query.get("filter", ""))
        items = [r for r in items if all(match(r) for match in matches)]
        items.sort(key=lambda r: (r.get("createTime", ""), r["name"]), reverse=True)  # newest first
        size = _int_param(query, "pageSize", DEFAULT_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        offset = _decode_page_token(query.get("pageToken", ""))
        page = items[offset : offset + size]
        answer: dict[str, Any] = {collection: page}
        if offset + size < len(items):
            answer["nextPageToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return answer

    def cancel_job(self, name: ParsedName) -> dict[str, Any]:
        """Signal the job's worker; answer once it has exited (the job CANCELLED), or after
        CANCEL_WAIT_S with the job CANCELLING, which the scheduler ends (`_follow_cancel`).

        Takes the lock itself, and not while it waits, so other requests are answered meanwhile.
        """
        with self.lock:
            process = self._begin_cancel(name)
        if process is None:
            return {}
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=CANCEL_WAIT_S)
        with self.lock:
            stored = self.store.get(name.collection, name.resource_id)
            if stored is not None and _job_state(stored) == JobState.CANCELLING:
                self._follow_cancel(stored)
        return {}

    def _begin_cancel(self, name: ParsedName) -> subprocess.Popen[bytes] | None:
        """Cancel a job without a live worker at once; else signal the worker, mark the job
        CANCELLING and return the worker to wait for."""
        stored = self.store.require(name.collection, name.resource_id, name.name)
        state = _job_state(stored)
        if state in TERMINAL_STATES:
            raise ApiError(
                9, f"Job {name.name} is in state {stored.resource['state']} and cannot be cancelled."
            )
        if state == JobState.CANCELLING:
            return None
        process = self._workers.get(name.resource_id)
        if process is None or process.poll() is not None:
            self._workers.pop(name.resource_id, None)
            self._finish_job(stored, JobState.CANCELLED, rpc_status(1, "CANCELED"))
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        self._kill_after[name.resource_id] = time.monotonic() + WORKER_STOP_GRACE_S
        now = timestamp()
        self._update(
            stored,
            lambda s: replace(s, resource=_in_state(s, JobState.CANCELLING, now)),
        )
        return process

    # --- pipeline jobs (PaLM tuning templates, M3.4) ----------------------------------------

    def create_pipeline_job(self, parent: ParsedName, body: dict[str, Any], version: str) -> dict[str, Any]:
        if version == "v1beta1":
            from google.cloud.aiplatform_v1beta1.types import pipeline_job
        else:
            from google.cloud.aiplatform_v1.types import pipeline_job  # type: ignore[no-redef]
        request = parse_body(body, pipeline_job.PipelineJob, "PipelineJob")
        template = str(request.get("templateUri", ""))
        if not any(f"/{name}/" in template + "/" for name in PALM_TEMPLATES):
            raise ApiError(
                3,
                "templateUri: the stand-in runs only the PaLM tuning templates "
                f"({', '.join(PALM_TEMPLATES)}); got {template or 'none'}.",
            )
        parameters = _pipeline_parameters(request.get("runtimeConfig", {}))
        for required in ("dataset_uri", "large_model_reference"):
            if not parameters.get(required):
                raise ApiError(3, f"runtimeConfig.parameterValues.{required} is required.")
        self._check_quota()
        job_id = self.store.new_id()
        now = timestamp()
        resource = {
            "name": f"{parent.parent}/pipelineJobs/{job_id}",
            "displayName": request.get("displayName") or _random_display_name(),
            "state": _state_name(PIPELINE_JOBS, JobState.PENDING),
            "createTime": now,
            "updateTime": now,
            "templateUri": template,
            "runtimeConfig": request.get("runtimeConfig", {}),
            "labels": request.get("labels", {}),
        }
        if "serviceAccount" in request:
            resource["serviceAccount"] = request["serviceAccount"]
        stored = StoredResource(
            PIPELINE_JOBS,
            job_id,
            resource,
            {
                "project": parent.project,
                "parameters": parameters,
                "chat": "tune-large-chat-model" in template,
            },
        )
        return self.store.put(stored).resource

    # --- a tuning job's experiment: its context and TensorBoard time series -----------------

    def get_experiment_context(self, parent: ParsedName, context_id: str) -> dict[str, Any]:
        return experiments.context_resource(self._job_of_experiment(parent, context_id))

    def list_tensorboard_runs(
        self, parent: ParsedName, tensorboard_id: str, experiment_id: str
    ) -> dict[str, Any]:
        job = self._job_of_tensorboard_experiment(parent, tensorboard_id, experiment_id)
        tensorboard = experiments.tensorboard_name(parent.parent)
        return experiments.runs_resource(job, f"{tensorboard}/experiments/{experiment_id}")

    def list_time_series(
        self, parent: ParsedName, tensorboard_id: str, experiment_id: str, run_id: str
    ) -> dict[str, Any]:
        job = self._job_of_tensorboard_experiment(parent, tensorboard_id, experiment_id)
        run = f"{experiments.tensorboard_name(parent.parent)}/experiments/{experiment_id}/runs/{run_id}"
        if run_id != experiments.RUN_ID:
            raise ApiError(5, f"TensorboardRun {run} not found.")
        return experiments.time_series_resource(job, run)

    def batch_read_time_series(
        self, parent: ParsedName, tensorboard_id: str, names: list[str]
    ) -> dict[str, Any]:
        tensorboard = experiments.tensorboard_name(parent.parent)
        if tensorboard_id != experiments.TENSORBOARD_ID:
            raise ApiError(5, f"Tensorboard {parent.parent}/tensorboards/{tensorboard_id} not found.")
        if not names:
            raise ApiError(3, "time_series is required: name at least one TensorboardTimeSeries.")
        jobs_by_run: dict[str, dict[str, Any]] = {}
        for name in names:
            if not name.startswith(f"{tensorboard}/experiments/"):
                raise ApiError(3, f"TensorboardTimeSeries {name} is not in {tensorboard}.")
            experiment_id = name.removeprefix(f"{tensorboard}/experiments/").split("/", 1)[0]
            run = f"{tensorboard}/experiments/{experiment_id}/runs/{experiments.RUN_ID}"
            if run not in jobs_by_run:
                jobs_by_run[run] = self._job_of_experiment(parent, experiment_id)
        return experiments.batch_read(jobs_by_run, names)

    def _job_of_tensorboard_experiment(
        self, parent: ParsedName, tensorboard_id: str, experiment_id: str
    ) -> dict[str, Any]:
        if tensorboard_id != experiments.TENSORBOARD_ID:
            raise ApiError(5, f"Tensorboard {parent.parent}/tensorboards/{tensorboard_id} not found.")
        return self._job_of_experiment(parent, experiment_id)

    def _job_of_experiment(self, parent: ParsedName, context_id: str) -> dict[str, Any]:
        stored = self.store.get(TUNING_JOBS, experiments.job_id_of_context(context_id))
        if (
            stored is None
            or not stored.resource.get("experiment")
            or not stored.resource["name"].startswith(parent.parent + "/")
        ):
            raise ApiError(5, f"Experiment {context_id} not found in {parent.parent}.")
        return stored.resource

    # --- the scheduler loop --------------------------------------------------------------

    def tick(self) -> None:
        for collection in JOB_COLLECTIONS:
            for stored in sorted(self.store.all(collection), key=lambda s: s.resource["createTime"]):
                state = _job_state(stored)
                if state == JobState.PENDING:
                    self._start_job(stored)
                elif state == JobState.RUNNING:
                    self._follow_job(stored)
                elif state == JobState.CANCELLING:
                    self._follow_cancel(stored)
        for endpoint in self.store.all(ENDPOINTS):
            if endpoint.internal.get("status") == "loading":
                self._follow_serving(endpoint)

    def _start_job(self, stored: StoredResource) -> None:
        try:
            plan, deploys_itself = self._plan_for(stored)
        except ApiError as error:
            self._finish_job(stored, JobState.FAILED, rpc_status(error.rpc_code, error.message))
            return
        work = Path(plan.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        plan_file = work / "plan.json"
        plan_file.write_text(plan_to_json(plan))
        with (work / "worker.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "vertex_standin.training", str(plan_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=offline_environment(),
                start_new_session=True,
            )
        self._workers[stored.resource_id] = process
        now = timestamp()
        self._update(
            stored,
            lambda s: replace(
                s,
                resource=_in_state(
                    s,
                    JobState.RUNNING,
                    now,
                    startTime=now,
                    **(
                        {
                            "outputUri": plan.output_uri,
                            # Set once the job runs, as Vertex does: the SDK's train() breaks on
                            # an experiment in the create response (it logs `_experiment`).
                            "experiment": experiments.experiment_name(
                                str(s.resource["name"]).split("/tuningJobs/")[0], s.resource_id
                            ),
                        }
                        if s.collection == TUNING_JOBS
                        else {}
                    ),
                ),
                internal={
                    **s.internal,
                    "pid": process.pid,
                    "work_dir": plan.work_dir,
                    "deploys_itself": deploys_itself,
                    "output_uri": plan.output_uri,
                },
            ),
        )
        logger.info(
            json.dumps(
                {"message": "training worker started", "job": stored.resource["name"], "pid": process.pid}
            )
        )

    def _plan_for(self, stored: StoredResource) -> tuple[TrainingPlan, bool]:
        settings = self.settings
        work_dir = str(settings.state_dir / "work" / stored.resource_id)
        if stored.collection == PIPELINE_JOBS:
            return self._pipeline_plan(stored, work_dir), True
        resource = stored.resource
        spec: dict[str, Any] = resource["supervisedTuningSpec"]
        hyper: dict[str, Any] = spec.get("hyperParameters", {})
        base_model = resource.get("baseModel")
        deploys_itself = False
        allowed: tuple[str, ...] = ("PEFT_ADAPTER", "FULL")
        if base_model:
            try:
                rules = rules_for_base_model(str(base_model))
            except UnknownBaseModelError as error:
                raise ApiError(3, str(error)) from error
            allowed, deploys_itself = rules.tuning_modes, rules.deploys_itself
        requested = str(spec.get("tuningMode", "")).removeprefix("TUNING_MODE_") or None
        mode = requested or allowed[0]
        if mode not in allowed:
            raise ApiError(
                3,
                f"Tuning mode {mode} is not supported for base model {base_model}; "
                f"supported: {', '.join(allowed)}.",
            )
        epochs = int(hyper.get("epochCount", settings.default_epochs))
        if epochs < 1:
            raise ApiError(
                3, f"supervisedTuningSpec.hyperParameters.epochCount must be at least 1; got {epochs}."
            )
        rank = ADAPTER_RANKS.get(str(hyper.get("adapterSize", "")), 4 if deploys_itself else 8)
        rate = (
            float(hyper["learningRate"])
            if "learningRate" in hyper
            else BASE_LEARNING_RATES[(settings.local_model_family, mode)]
            * float(hyper.get("learningRateMultiplier", 1.0))
        )
        output_uri = (
            resource.get("outputUri")
            or f"gs://{settings.default_output_bucket}/tuningJobs/{stored.resource_id}"
        )
        return TrainingPlan(
            job_name=resource["name"],
            project=stored.internal.get("project", settings.project),
            local_model_family=settings.local_model_family,
            model_cache_dir=str(settings.model_cache_dir),
            tuning_mode=mode,
            adapter_rank=rank,
            learning_rate=rate,
            training_dataset_uri=spec["trainingDatasetUri"],
            validation_dataset_uri=spec.get("validationDatasetUri"),
            output_uri=output_uri,
            work_dir=work_dir,
            epochs=epochs,
            batch_size=settings.batch_size,
            custom_base_model_uri=resource.get("customBaseModel"),
            torch_threads=settings.torch_threads,
        ), deploys_itself

    def _pipeline_plan(self, stored: StoredResource, work_dir: str) -> TrainingPlan:
        settings = self.settings
        parameters: dict[str, Any] = stored.internal["parameters"]
        model = str(parameters["large_model_reference"])
        if model not in PALM_MODELS and f"{model}@002" not in PALM_MODELS:
            raise ApiError(3, f"large_model_reference {model} is not a tunable PaLM model.")
        # M3.5: 8k-context models take batch 8 on GPU (tuned in us-central1) and 24 on TPU
        # (europe-west4); 32k models take 8 everywhere.
        on_tpu = str(parameters.get("accelerator_type", "GPU")).upper() == "TPU"
        batch = 24 if on_tpu and "32k" not in model else 8
        evaluation_uri = parameters.get("evaluation_data_uri") or None
        output_dir = str(
            stored.resource.get("runtimeConfig", {}).get("gcsOutputDirectory")
            or f"gs://{settings.default_output_bucket}/pipelineJobs/{stored.resource_id}"
        )
        return TrainingPlan(
            job_name=stored.resource["name"],
            project=stored.internal.get("project", settings.project),
            local_model_family=settings.local_model_family,
            model_cache_dir=str(settings.model_cache_dir),
            tuning_mode="PEFT_ADAPTER",
            adapter_rank=4,
            learning_rate=BASE_LEARNING_RATES[(settings.local_model_family, "PEFT_ADAPTER")]
            * float(parameters.get("learning_rate_multiplier", 1.0)),
            training_dataset_uri=str(parameters["dataset_uri"]),
            validation_dataset_uri=str(evaluation_uri) if evaluation_uri else None,
            output_uri=output_dir.rstrip("/") + f"/{stored.resource_id}",
            work_dir=work_dir,
            train_steps=int(parameters.get("train_steps", 300)),
            batch_size=batch,
            default_context=str(parameters["default_context"]) if parameters.get("default_context") else None,
            evaluation_interval=int(parameters.get("evaluation_interval", 20)),
            enable_early_stopping=_truthy(parameters.get("enable_early_stopping", True)),
            enable_checkpoint_selection=_truthy(parameters.get("enable_checkpoint_selection", False)),
            torch_threads=settings.torch_threads,
        )

    def _read_progress(self, stored: StoredResource, work: Path) -> None:
        progress = _read_json(work / "progress.json")
        if progress is not None:
            self._update(stored, lambda s: replace(s, resource=_with_progress(s.resource, progress)))

    def _follow_job(self, stored: StoredResource) -> None:
        work = Path(stored.internal["work_dir"])
        self._read_progress(stored, work)
        process = self._workers.get(stored.resource_id)
        if process is None or process.poll() is None:
            return
        self._workers.pop(stored.resource_id, None)
        outcome = _read_json(work / "outcome.json")
        current = self.store.get(stored.collection, stored.resource_id) or stored
        if outcome is None:
            logger.error(
                json.dumps(
                    {
                        "message": "training worker crashed",
                        "job": stored.resource["name"],
                        "exit_code": process.returncode,
                        "log": str(work / "worker.log"),
                    }
                )
            )
            self._finish_job(current, JobState.FAILED, rpc_status(13, INTERNAL_ERROR_MESSAGE))
        else:
            self._end_with_outcome(current, outcome)

    def _end_with_outcome(self, stored: StoredResource, outcome: dict[str, Any]) -> None:
        """End a job as the outcome file its worker wrote says."""
        if outcome["ok"]:
            self._succeed_job(stored, outcome)
        else:
            self._finish_job(
                stored, JobState.FAILED, rpc_status(int(outcome["code"]), str(outcome["message"]))
            )

    def _follow_cancel(self, stored: StoredResource) -> None:
        process = self._workers.get(stored.resource_id)
        if process is not None and process.poll() is None:
            if time.monotonic() >= self._kill_after.get(stored.resource_id, 0.0):
                # The worker outlived its grace after SIGTERM (stuck in a kernel, say): kill it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            return
        self._workers.pop(stored.resource_id, None)
        self._kill_after.pop(stored.resource_id, None)
        self._finish_job(stored, JobState.CANCELLED, rpc_status(1, "CANCELED"))

    def _succeed_job(self, stored: StoredResource, outcome: dict[str, Any]) -> None:
        parent = stored.resource["name"].rsplit(f"/{stored.collection}/", 1)[0]
        display = stored.resource.get("tunedModelDisplayName") or stored.resource.get("displayName", "")
        model = self._create_model(
            parent, str(display), str(outcome["finalCheckpointUri"]), stored.resource.get("labels", {})
        )
        tuned: dict[str, Any] = {"model": f"{model['name']}@1"}
        if stored.internal.get("deploys_itself"):
            endpoint = self._create_endpoint(
                parent, str(display), model, stored.resource.get("labels", {}), None
            )
            tuned["endpoint"] = endpoint.resource["name"]
        tuned["checkpoints"] = [
            {k: c[k] for k in ("checkpointId", "epoch", "step")} for c in outcome["checkpoints"]
        ]
        artifacts = {
            "finalCheckpointUri": outcome["finalCheckpointUri"],
            "checkpoints": outcome["checkpoints"],
            "stoppedEarly": outcome["stoppedEarly"],
            "trainingSeconds": outcome["trainingSeconds"],
        }
        key = "tunedModel" if stored.collection == TUNING_JOBS else "droptuneTunedModel"
        self._update(
            stored, lambda s: replace(s, resource={**s.resource, key: tuned, "droptuneArtifacts": artifacts})
        )
        self._finish_job(
            self.store.get(stored.collection, stored.resource_id) or stored, JobState.SUCCEEDED, None
        )

    def _finish_job(self, stored: StoredResource, state: JobState, error: dict[str, Any] | None) -> None:
        now = timestamp()

        def finish(s: StoredResource) -> StoredResource:
            resource = _in_state(s, state, now, endTime=now)
            if error is not None:
                resource["error"] = error
            return replace(s, resource=resource, internal={**s.internal, "pid": None})

        self._update(stored, finish)
        logger.info(
            json.dumps(
                {"message": "job ended", "job": stored.resource["name"], "state": state.value, "error": error}
            )
        )

    def _update(self, stored: StoredResource, change: Any) -> None:
        self.store.update(stored.collection, stored.resource_id, change)

    def _stop_worker(self, key: str) -> None:
        process = self._workers.pop(key, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=WORKER_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=WORKER_STOP_GRACE_S)

    # --- models, endpoints, deployment -----------------------------------------------------

    def _create_model(
        self, parent: str, display_name: str, artifact_uri: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        model_id = self.store.new_id()
        now = timestamp()
        resource = {
            "name": f"{parent}/models/{model_id}",
            "displayName": display_name or f"model-{model_id}",
            "artifactUri": artifact_uri,
            "versionId": "1",
            "versionAliases": ["default"],
            "createTime": now,
            "updateTime": now,
            "versionCreateTime": now,
            "versionUpdateTime": now,
            "labels": labels,
            "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
        }
        return self.store.put(StoredResource(MODELS, model_id, resource)).resource

    def _create_endpoint(
        self,
        parent: str,
        display_name: str,
        model: dict[str, Any],
        labels: dict[str, str],
        dedicated_resources: dict[str, Any] | None,
    ) -> StoredResource:
        endpoint_id = self.store.new_id()
        now = timestamp()
        resource = {
            "name": f"{parent}/endpoints/{endpoint_id}",
            "displayName": display_name or endpoint_id,
            "createTime": now,
            "updateTime": now,
            "labels": labels,
        }
        internal = {
            "status": "loading",
            "artifact_uri": model["artifactUri"],
            "model": model["name"],
            "model_display_name": model["displayName"],
            "deployed_model_id": self.store.new_id(),
            "dedicated_resources": dedicated_resources or _default_dedicated_resources(),
            "project": parent.split("/")[1],
        }
        stored = self.store.put(StoredResource(ENDPOINTS, endpoint_id, resource, internal))
        return self._start_serving(stored)

    def deploy(self, parent: ParsedName, body: dict[str, Any]) -> dict[str, Any]:
        from google.cloud.aiplatform_v1beta1.types import model_garden_service

        request = parse_body(body, model_garden_service.DeployRequest, "DeployRequest")
        custom = request.get("customModel", {})
        gcs_uri = custom.get("gcsUri") if isinstance(custom, dict) else None
        if not gcs_uri:
            raise ApiError(3, "customModel.gcsUri is required: the stand-in deploys tuned checkpoints only.")
        if not str(gcs_uri).startswith("gs://"):
            raise ApiError(3, f"customModel.gcsUri must be a gs:// folder; got {gcs_uri}.")
        model_config = request.get("modelConfig", {})
        endpoint_config = request.get("endpointConfig", {})
        display = str(model_config.get("modelDisplayName") or gcs_uri.rstrip("/").rsplit("/", 1)[-1])
        model = self._create_model(parent.parent, display, str(gcs_uri), {})
        resources = request.get("deployConfig", {}).get("dedicatedResources")
        endpoint = self._create_endpoint(
            parent.parent, str(endpoint_config.get("endpointDisplayName") or display), model, {}, resources
        )
        operation_id = self.store.new_id()
        operation = {"name": f"{parent.parent}/operations/{operation_id}", "done": False}
        self.store.put(StoredResource(OPERATIONS, operation_id, operation, {"version": "v1beta1"}))
        self._update(endpoint, lambda s: replace(s, internal={**s.internal, "operation_id": operation_id}))
        return operation

    def _start_serving(self, endpoint: StoredResource) -> StoredResource:
        work = self.settings.state_dir / "serving" / endpoint.resource_id
        work.mkdir(parents=True, exist_ok=True)
        ready_file = work / "ready.json"
        ready_file.unlink(missing_ok=True)
        with (work / "worker.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vertex_standin.serving",
                    "--model-uri",
                    str(endpoint.internal["artifact_uri"]),
                    "--ready-file",
                    str(ready_file),
                    "--project",
                    str(endpoint.internal.get("project", "")),
                    "--work-dir",
                    str(work),
                    "--threads",
                    str(self.settings.torch_threads),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=offline_environment(),
                start_new_session=True,
            )
        self._workers[f"endpoint-{endpoint.resource_id}"] = process
        updated = self.store.update(
            ENDPOINTS,
            endpoint.resource_id,
            lambda s: replace(
                s,
                internal={
                    **s.internal,
                    "status": "loading",
                    "pid": process.pid,
                    "ready_file": str(ready_file),
                },
            ),
        )
        return updated or endpoint

    def _follow_serving(self, endpoint: StoredResource) -> None:
        ready = _read_json(Path(endpoint.internal["ready_file"]))
        process = self._workers.get(f"endpoint-{endpoint.resource_id}")
        if ready is None and process is not None and process.poll() is None:
            return
        operation_id = endpoint.internal.get("operation_id")
        if ready is not None and "port" in ready:
            now = timestamp()
            deployed = {
                "id": endpoint.internal["deployed_model_id"],
                "model": endpoint.internal["model"],
                "modelVersionId": "1",
                "displayName": endpoint.internal["model_display_name"],
                "createTime": now,
                "dedicatedResources": endpoint.internal["dedicated_resources"],
            }
            self.store.update(
                ENDPOINTS,
                endpoint.resource_id,
                lambda s: replace(
                    s,
                    resource={
                        **s.resource,
                        "deployedModels": [deployed],
                        "trafficSplit": {deployed["id"]: 100},
                        "updateTime": now,
                    },
                    internal={**s.internal, "status": "ready", "port": ready["port"]},
                ),
            )
            result: dict[str, Any] = {
                "response": {
                    "@type": "type.googleapis.com/google.cloud.aiplatform.v1beta1.DeployResponse",
                    "endpoint": endpoint.resource["name"],
                    "model": f"{endpoint.internal['model']}@1",
                }
            }
        else:
            message = str(ready.get("error")) if ready else INTERNAL_ERROR_MESSAGE
            code = int(ready.get("code", 13)) if ready else 13
            self.store.update(
                ENDPOINTS,
                endpoint.resource_id,
                lambda s: replace(s, internal={**s.internal, "status": "failed", "pid": None}),
            )
            result = {"error": rpc_status(code, message)}
        if operation_id:
            self.store.update(
                OPERATIONS,
                operation_id,
                lambda s: replace(s, resource={"name": s.resource["name"], "done": True, **result}),
            )

    def get_operation(self, name: ParsedName) -> dict[str, Any]:
        return self.store.require(OPERATIONS, name.resource_id, name.name).resource

    def get_model(self, name: ParsedName) -> dict[str, Any]:
        model_id = name.resource_id.split("@", 1)[0]
        return self.store.require(MODELS, model_id, name.name).resource

    def get_endpoint(self, name: ParsedName) -> dict[str, Any]:
        return self.store.require(ENDPOINTS, name.resource_id, name.name).resource

    def undeploy(self, name: ParsedName, body: dict[str, Any], version: str) -> dict[str, Any]:
        endpoint = self.store.require(ENDPOINTS, name.resource_id, name.name)
        wanted = str(body.get("deployedModelId", ""))
        if wanted != endpoint.internal.get("deployed_model_id") or not endpoint.resource.get(
            "deployedModels"
        ):
            raise ApiError(5, f"Deployed model {wanted} not found on {name.name}.")
        self._stop_worker(f"endpoint-{name.resource_id}")
        now = timestamp()
        self.store.update(
            ENDPOINTS,
            name.resource_id,
            lambda s: replace(
                s,
                resource={k: v for k, v in s.resource.items() if k not in ("deployedModels", "trafficSplit")}
                | {"updateTime": now},
                internal={**s.internal, "status": "undeployed", "pid": None},
            ),
        )
        return self._done_operation(
            name.parent,
            {"@type": f"type.googleapis.com/google.cloud.aiplatform.{version}.UndeployModelResponse"},
        )

    def delete_endpoint(self, name: ParsedName) -> dict[str, Any]:
        endpoint = self.store.require(ENDPOINTS, name.resource_id, name.name)
        if endpoint.resource.get("deployedModels"):
            raise ApiError(9, f"Endpoint {name.name} has deployed models; undeploy them first.")
        self._stop_worker(f"endpoint-{name.resource_id}")
        self.store.delete(ENDPOINTS, name.resource_id)
        return self._done_operation(name.parent, {"@type": "type.googleapis.com/google.protobuf.Empty"})

    def _done_operation(self, parent: str, response: dict[str, Any]) -> dict[str, Any]:
        operation_id = self.store.new_id()
        operation = {"name": f"{parent}/operations/{operation_id}", "done": True, "response": response}
        return self.store.put(StoredResource(OPERATIONS, operation_id, operation)).resource

    def forward_to_endpoint(self, name: ParsedName, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """Hand a prediction request to the endpoint's serving worker and relay its answer."""
        endpoint = self.store.require(ENDPOINTS, name.resource_id, name.name)
        if endpoint.internal.get("status") != "ready":
            raise ApiError(
                9,
                f"Endpoint {name.name} has no deployed model ready to serve "
                f"(status: {endpoint.internal.get('status', 'none')}).",
            )
        request = urllib.request.Request(
            f"http://127.0.0.1:{endpoint.internal['port']}/{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=PREDICT_TIMEOUT_S) as response:  # noqa: S310
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = json.loads(error.read() or b"{}").get("error", {})
            raise ApiError(
                int(detail.get("rpcCode", 13)), str(detail.get("message", INTERNAL_ERROR_MESSAGE))
            ) from error
        except (urllib.error.URLError, TimeoutError) as error:
            raise ApiError(14, f"The model server of {name.name} did not answer: {error}") from error
        deployed = endpoint.resource.get("deployedModels", [{}])[0]
        if route == "predict":
            answer.update(
                {
                    "deployedModelId": deployed.get("id", ""),
                    "model": deployed.get("model", ""),
                    "modelVersionId": "1",
                    "modelDisplayName": deployed.get("displayName", ""),
                }
            )
        return answer


def _with_progress(resource: dict[str, Any], progress: dict[str, Any]) -> dict[str, Any]:
    """Fold the worker's progress into the job resource the poller reads."""
    latest: dict[str, float] = {}
    for point in progress.get("series", []):
        latest.update(point["values"])
    metrics = {
        "latest": latest,
        "series": progress.get("series", []),
        "currentStep": progress.get("currentStep", 0),
        "totalSteps": progress.get("totalSteps", 0),
        "checkpoints": progress.get("checkpoints", []),
    }
    updated = {**resource, "droptuneMetrics": metrics, "updateTime": timestamp()}
    stats = progress.get("tuningDataStats")
    if stats and resource.get("supervisedTuningSpec") is not None:
        updated["tuningDataStats"] = {"supervisedTuningDataStats": stats}
    elif stats:
        updated["droptuneTuningDataStats"] = stats
    return updated


def _pipeline_parameters(runtime_config: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = dict(runtime_config.get("parameterValues", {}))
    # The older `parameters` map wraps each value in {stringValue|intValue|doubleValue|boolValue}.
    for key, wrapped in runtime_config.get("parameters", {}).items():
        if isinstance(wrapped, dict) and wrapped:
            values.setdefault(key, next(iter(wrapped.values())))
    return values


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "default")
    return bool(value)


def _compile_filter(expression: str) -> list[Any]:
    """The subset of AIP-160 the SDKs send: `field = "value"` terms joined by AND."""
    matchers: list[Any] = []
    if not expression.strip():
        return matchers
    for term in re.split(r"\s+AND\s+", expression.strip(), flags=re.IGNORECASE):
        found = _TERMS.match(term)
        if found is None:
            raise ApiError(
                3, f'Invalid filter: cannot parse {term!r}; expected field="value" terms joined by AND.'
            )
        field_name, operator, value = found.groups()
        key = _FILTER_FIELDS.get(field_name)
        if key is None and not field_name.startswith("labels."):
            raise ApiError(
                3,
                f"Invalid filter: unsupported field {field_name!r}; supported: "
                f"{', '.join(sorted(_FILTER_FIELDS))}, labels.<key>.",
            )

        def read(resource: dict[str, Any], field_name: str = field_name, key: str | None = key) -> str:
            if key is None:
                return str(resource.get("labels", {}).get(field_name.removeprefix("labels."), ""))
            return str(resource.get(key, ""))

        def match(
            resource: dict[str, Any], read: Any = read, operator: str = operator, value: str = value
        ) -> bool:
            return bool((read(resource) == value) == (operator == "="))

        matchers.append(match)
    return matchers


_FILTER_FIELDS = {
    "state": "state",
    "display_name": "displayName",
    "displayName": "displayName",
    "tuned_model_display_name": "tunedModelDisplayName",
    "base_model": "baseModel",
    "baseModel": "baseModel",
}


def _int_param(query: dict[str, str], key: str, default: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ApiError(3, f"Invalid {key}: {raw!r} is not an integer.") from error


def _decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError as error:
        raise ApiError(3, f"Invalid pageToken: {token!r}.") from error


def _random_display_name() -> str:
    # The service names a tuned model itself when the caller gives none (M2.2).
    return f"tuned-model-{time.strftime('%Y%m%d-%H%M%S')}-{random.randrange(16**6):06x}"  # noqa: S311


def _default_dedicated_resources() -> dict[str, Any]:
    return {
        "machineSpec": {
            "machineType": "g2-standard-12",
            "acceleratorType": "NVIDIA_L4",
            "acceleratorCount": 1,
        },
        "minReplicaCount": 1,
        "maxReplicaCount": 1,
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return document


def _end_orphan(pid: Any) -> None:
    """End a worker left by a previous run of the server, checking it is really ours first."""
    if not isinstance(pid, int):
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"vertex_standin" in command:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
