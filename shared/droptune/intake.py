"""The validator's core: one uploaded object in, a report, a dataset record and one message out.

A valid dataset becomes a tune request on the tune topic (the launcher's input) and a
`dataset.validated` event; an invalid one a report beside the file and a `dataset.rejected` event.
Bad data is final: it is reported and acknowledged. Only transient failures (storage, Firestore,
Pub/Sub unreachable) raise, so that Pub/Sub redelivers, bounded by the dead-letter policy.

Pub/Sub delivers at least once, so one generation can arrive twice. The dataset record says when
its messages went out (`announced_at`); a delivery that finds it answers from the record and
publishes nothing (issue 3 §8).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from droptune import identity
from droptune.catalog import RetiredModelPolicy
from droptune.datasets import (
    DatasetReport,
    ImageProblem,
    ImageProblemKind,
    OptionsError,
    TuningOptions,
    is_validation_dataset_name,
    paired_validation_name,
    resolve_options,
    validate_dataset,
)
from droptune.datasets.images import sniff_image_type
from droptune.datasets.palm_conversion import PALM_ONLY_OPTIONS, convert_palm_dataset
from droptune.datasets.refused_options import (
    manifest_issue,
    option_issues,
    parse_manifest,
    refused_options_report,
    refused_options_summary,
)
from droptune.datasets.tokenizer_files import (
    MAX_TOKENIZER_BYTES,
    TOKENIZER_FILE_NAME,
    TokenizerFileError,
    read_tokenizer_file,
    token_counter_from_json,
)
from droptune.datasets.tokens import TokenCounter
from droptune.deployment import preflight_problem
from droptune.envelopes import StorageObject
from droptune.events import Publisher, make_event, publish_event
from droptune.jsonlog import correlate, log_fields
from droptune.settings import Settings

log = logging.getLogger(__name__)

REPORT_SUFFIX = ".report.json"
MANIFEST_SUFFIX = ".manifest.json"
# Datasets droptune rewrites for a retired model's successor; never validated as uploads.
CONVERTED_PREFIX = "droptune-converted/"
DATASETS_COLLECTION = "datasets"
SOURCE = "//droptune/validator"
READ_CHUNK_BYTES = 8 * 1024 * 1024
# Image checks are network-bound, so threads overlap them. Ten matches the connection pool of the
# shared storage client (requests' default pool_maxsize): more threads would open connections the
# pool then discards, with a urllib3 warning each time.
IMAGE_CHECK_PARALLELISM = 10
# Enough for every signature sniff_image_type knows (WEBP's "RIFF....WEBP" is the longest, 12 bytes).
IMAGE_HEAD_BYTES = 16

Outcome = Literal["validated", "rejected", "ignored"]


@dataclass(frozen=True)
class IntakeResult:
    outcome: Outcome
    reason: str
    dataset_id: str | None = None
    job_id: str | None = None
    report_uri: str | None = None


def manifest_name(object_name: str) -> str:
    """`datasets/train.jsonl` → `datasets/train.manifest.json`: options written beside the file."""
    return object_name.removesuffix(".jsonl") + MANIFEST_SUFFIX


def report_name(object_name: str) -> str:
    return object_name + REPORT_SUFFIX


class Blob(Protocol):
    def open(self, mode: str, **kwargs: Any) -> Any: ...
    def upload_from_string(self, data: str, **kwargs: Any) -> None: ...


# Object names are at most 1024 bytes; the report adds its suffix to the name.
MAX_DATASET_NAME_BYTES = 1024 - len(REPORT_SUFFIX)


def ignore_reason(obj: StorageObject, settings: Settings) -> str | None:
    """Why an object is not a dataset upload, or None when it is one (the first rule that applies)."""
    segments = obj.name.split("/")
    rules = (
        (
            any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in obj.name),
            "the object name holds control characters; rename it with letters, digits, / - _ .",
        ),
        (
            ".." in segments or "." in segments[:-1],
            "the object name has '.' or '..' path segments; upload it under a plain folder name",
        ),
        (
            len(obj.name.encode()) > MAX_DATASET_NAME_BYTES,
            f"the object name is longer than {MAX_DATASET_NAME_BYTES} bytes, leaving no room for its report",
        ),
        (
            obj.name.startswith(CONVERTED_PREFIX),
            "a dataset droptune converted for a retired model's successor; it is not an upload",
        ),
        (
            obj.bucket != settings.datasets_bucket,
            f"bucket {obj.bucket} is not the datasets bucket {settings.datasets_bucket}",
        ),
        (
            not obj.name.startswith(settings.watch_prefix),
            f"outside the watched prefix {settings.watch_prefix}",
        ),
        (
            not obj.name.endswith(".jsonl"),
            "not a .jsonl file (reports, manifests and other files are not datasets)",
        ),
        (
            is_validation_dataset_name(obj.name),
            "a validation set: it is validated with its training file, which must be uploaded after it",
        ),
    )
    return next((reason for applies, reason in rules if applies), None)


class Intake:
    """Everything the validator needs, created once per function instance."""

    def __init__(self, settings: Settings, storage: Any, firestore: Any, publisher: Publisher) -> None:
        self.settings = settings
        self.storage = storage
        self.firestore = firestore
        self.publisher = publisher
        # Loaded tokenizers by URI: one function instance validates many uploads for one model.
        self._tokenizers: dict[str, TokenCounter] = {}

    def handle(self, obj: StorageObject, event_id: str) -> IntakeResult:
        reason = ignore_reason(obj, self.settings)
        if reason is not None:
            log.info("upload ignored", extra=log_fields(object=obj.uri, reason=reason))
            return IntakeResult("ignored", reason)
        dataset_id = identity.dataset_id(obj.bucket, obj.name, obj.generation)
        with correlate(dataset_id=dataset_id, event_id=event_id):
            log.info(
                "dataset received", extra=log_fields(object=obj.uri, generation=obj.generation, size=obj.size)
            )
            announced = self._announced_result(dataset_id)
            if announced is not None:
                log.info(
                    "duplicate delivery",
                    extra=log_fields(
                        object=obj.uri,
                        dataset_id=dataset_id,
                        outcome=announced.outcome,
                        job_id=announced.job_id,
                        report_uri=announced.report_uri,
                    ),
                )
                return announced
            return self._validate(obj, dataset_id)

    def _announced_result(self, dataset_id: str) -> IntakeResult | None:
        """The recorded result of a generation whose messages already went out, or None.

        A record without `announced_at` is a delivery that died between the record and the
        publishes: it is validated and published again. Two deliveries running at the same moment
        can both get past this read; the second tune request then stops at the launcher's atomic
        create of jobs/{job_id}, and the events topic sees the outcome twice under one CloudEvent id.
        """
        snapshot = (
            self.firestore.collection(DATASETS_COLLECTION)
            .document(dataset_id)
            .get(timeout=self.settings.api_timeout_seconds)
        )
        record = snapshot.to_dict() if snapshot.exists else None
        if not record or record.get("announced_at") is None:
            return None
        outcome = record.get("state")
        if outcome not in ("validated", "rejected"):
            return None
        summary = str(record.get("summary") or f"already {outcome}")
        return IntakeResult(
            outcome,
            summary.splitlines()[0],
            dataset_id,
            record.get("job_id"),
            record.get("report_uri"),
        )

    def _validate(self, obj: StorageObject, dataset_id: str) -> IntakeResult:
        from google.api_core.exceptions import NotFound

        bucket = self.storage.bucket(obj.bucket)
        blob = bucket.blob(obj.name, generation=int(obj.generation))
        manifest, manifest_error = self._read_manifest(bucket, obj.name)
        try:
            options = resolve_options(
                self.settings.option_defaults,
                _droptune_metadata(obj.metadata),
                manifest,
                retired_models=RetiredModelPolicy(self.settings.retired_models),
            )
        except OptionsError as error:
            return self._reject_options(obj, dataset_id, error, manifest_error)
        if manifest_error is not None:
            return self._reject_options(obj, dataset_id, None, manifest_error)
        unservable = preflight_problem(options.base_model, self.settings)
        if unservable is not None:
            # Refused before any money is spent: a tuned model nobody can serve is wasted (issue 6 §2).
            return self._reject_options(obj, dataset_id, None, unservable, code="unservable_model")

        validation_blob, validation_uri = self._validation_set(bucket, obj, options)
        try:
            report = self._validate_blobs(blob, validation_blob, obj, options, validation_uri)
        except NotFound:
            # Overwritten or deleted since the notification: the newer generation has its own event.
            reason = f"generation {obj.generation} no longer exists"
            log.info("upload ignored", extra=log_fields(object=obj.uri, reason=reason))
            return IntakeResult("ignored", reason, dataset_id)

        return self._conclude(obj, dataset_id, options, report, manifest, validation_uri)

    def _conclude(  # noqa: PLR0917 - the last step of _validate, split out to read
        self,
        obj: StorageObject,
        dataset_id: str,
        options: TuningOptions,
        report: DatasetReport,
        manifest: Mapping[str, object] | None,
        validation_uri: str | None,
    ) -> IntakeResult:
        policy = RetiredModelPolicy(self.settings.retired_models)
        if report.valid and options.model.retired and policy is RetiredModelPolicy.CONVERT:
            return self._tune_the_successor(obj, dataset_id, options, report, manifest, validation_uri)
        return self._report_and_finish(obj, dataset_id, options, report, validation_uri)

    def _report_and_finish(  # noqa: PLR0917 - internal
        self,
        obj: StorageObject,
        dataset_id: str,
        options: TuningOptions,
        report: DatasetReport,
        validation_uri: str | None,
        conversion: Mapping[str, Any] | None = None,
    ) -> IntakeResult:
        document = report.to_dict() | ({"converted_from": dict(conversion)} if conversion else {})
        report_uri = self._write_report(
            self.storage.bucket(obj.bucket), obj, json.dumps(document, indent=2, ensure_ascii=True)
        )
        if not report.valid:
            return self._finish_rejected(obj, dataset_id, report_uri, report.to_dict(), report.summary())
        return self._finish_validated(
            obj,
            dataset_id=dataset_id,
            options=options,
            report=report,
            report_uri=report_uri,
            validation_uri=validation_uri,
            conversion=conversion,
        )

    def _validate_blobs(
        self,
        blob: Any,
        validation_blob: Any | None,
        obj: StorageObject,
        options: TuningOptions,
        validation_uri: str | None,
    ) -> DatasetReport:
        with contextlib.ExitStack() as files:
            stream = files.enter_context(
                blob.open("rb", chunk_size=READ_CHUNK_BYTES, timeout=self.settings.api_timeout_seconds)
            )
            validation_stream = (
                files.enter_context(
                    validation_blob.open(
                        "rb", chunk_size=READ_CHUNK_BYTES, timeout=self.settings.api_timeout_seconds
                    )
                )
                if validation_blob is not None
                else None
            )
            return self._run_validation(stream, obj, options, validation_stream, validation_uri)

    # --- retired models: convert and tune the successor ---------------------------------------

    def _tune_the_successor(  # noqa: PLR0917 - one step of _validate, split out to read
        self,
        obj: StorageObject,
        dataset_id: str,
        palm_options: TuningOptions,
        palm_report: DatasetReport,
        manifest: Mapping[str, object] | None,
        validation_uri: str | None,
    ) -> IntakeResult:
        """A PaLM dataset that passed PaLM's rules, rewritten as chat and tuned on the catalog's
        successor (retired_models=convert). The converted files live outside the watched prefix,
        so they never trigger validation themselves; the report beside the upload says it all."""
        retired = palm_options.base_model
        successor = str(palm_options.model.successor)
        try:
            options = resolve_options(
                self.settings.option_defaults,
                _droptune_metadata(
                    obj.metadata, drop=PALM_ONLY_OPTIONS | {"base_model", "validation_dataset"}
                )
                | {"droptune-base-model": successor},
                {
                    k: v
                    for k, v in (manifest or {}).items()
                    if k not in PALM_ONLY_OPTIONS | {"base_model", "validation_dataset"}
                },
            )
        except OptionsError as error:
            return self._reject_options(obj, dataset_id, error, None)
        unservable = preflight_problem(successor, self.settings)
        if unservable is not None:
            problem = f"{retired} is retired and its successor cannot be deployed: {unservable}"
            return self._reject_options(obj, dataset_id, None, problem, code="unservable_model")

        bucket = self.storage.bucket(obj.bucket)
        folder = f"{CONVERTED_PREFIX}{dataset_id}/"
        training_name = folder + obj.name.rsplit("/", 1)[-1]
        self._convert(
            obj.uri,
            bucket.blob(obj.name, generation=int(obj.generation)),
            bucket,
            training_name,
            palm_options,
        )
        converted_validation = None
        if validation_uri is not None:
            source_bucket, _, source_name = validation_uri.removeprefix("gs://").partition("/")
            converted_validation = paired_validation_name(training_name)
            self._convert(
                validation_uri,
                self.storage.bucket(source_bucket).blob(source_name),
                bucket,
                converted_validation,
                palm_options,
            )
        training_uri = f"gs://{obj.bucket}/{training_name}"
        converted_validation_uri = (
            f"gs://{obj.bucket}/{converted_validation}" if converted_validation else None
        )

        report = self._validate_blobs(
            bucket.blob(training_name),
            bucket.blob(converted_validation) if converted_validation else None,
            obj,
            options,
            converted_validation_uri,
        )
        conversion = {
            "retired_model": retired,
            "successor": successor,
            "training_uri": training_uri,
            "validation_uri": converted_validation_uri,
            "retired_model_report": {
                "verdict": "valid",
                "format": palm_report.format,
                "examples": palm_report.training.counts.examples,
                "warning_total": palm_report.warning_total,
            },
        }
        log.info(
            "retired model converted",
            extra=log_fields(object=obj.uri, **{k: v for k, v in conversion.items() if isinstance(v, str)}),
        )
        return self._report_and_finish(obj, dataset_id, options, report, converted_validation_uri, conversion)

    def _convert(
        self, source_uri: str, source: Any, bucket: Any, name: str, palm_options: TuningOptions
    ) -> None:
        with (
            source.open(
                "rb", chunk_size=READ_CHUNK_BYTES, timeout=self.settings.api_timeout_seconds
            ) as reader,
            bucket.blob(name).open(
                "wb", content_type="application/jsonl", timeout=self.settings.api_timeout_seconds
            ) as writer,
        ):
            convert_palm_dataset(
                reader, writer, source_name=source_uri, default_context=palm_options.default_context
            )

    def _read_manifest(self, bucket: Any, object_name: str) -> tuple[dict[str, object] | None, str | None]:
        name = manifest_name(object_name)
        blob = bucket.get_blob(name, timeout=self.settings.api_timeout_seconds)
        if blob is None:
            return None, None
        return parse_manifest(
            blob.download_as_bytes(timeout=self.settings.api_timeout_seconds), f"gs://{bucket.name}/{name}"
        )

    def _validation_set(
        self, bucket: Any, obj: StorageObject, options: TuningOptions
    ) -> tuple[Any | None, str | None]:
        if options.validation_dataset:
            uri = options.validation_dataset
            source_bucket, _, name = uri.removeprefix("gs://").partition("/")
            blob = self.storage.bucket(source_bucket).get_blob(
                name, timeout=self.settings.api_timeout_seconds
            )
            return blob, uri
        name = paired_validation_name(obj.name)
        blob = bucket.get_blob(name, timeout=self.settings.api_timeout_seconds)
        return (blob, f"gs://{obj.bucket}/{name}") if blob is not None else (None, None)

    def _run_validation(
        self,
        stream: Any,
        obj: StorageObject,
        options: TuningOptions,
        validation_stream: Any | None,
        validation_uri: str | None,
    ) -> DatasetReport:
        tokenizer = self._tokenizer_for(options)
        return validate_dataset(
            stream,
            options=options,
            source_name=obj.uri,
            size_bytes=obj.size,
            count_tokens=tokenizer[1] if tokenizer else None,
            tokenizer_name=f"the tokenizer.json at {tokenizer[0]}" if tokenizer else None,
            check_gcs_images=self._check_images,
            validation_stream=validation_stream,
            validation_source_name=validation_uri,
        )

    def _tokenizer_for(self, options: TuningOptions) -> tuple[str, TokenCounter] | None:
        """The model's own tokenizer when one is at hand (a custom base model's folder, else the
        configured one), for exact counts (issue 3 §4); None: the report states an estimate."""
        if options.custom_base_model:
            where = options.custom_base_model.rstrip("/") + "/" + TOKENIZER_FILE_NAME
        elif self.settings.tokenizer_uri:
            where = self.settings.tokenizer_uri
        else:
            return None
        from google.api_core.exceptions import Forbidden

        if where not in self._tokenizers:
            try:
                data = self._read_tokenizer(where)
                counter = token_counter_from_json(data) if data is not None else None
            # The tuning service may read a checkpoint folder that the validator may not: the
            # counts are then estimated, and the job itself is not refused for it.
            except (TokenizerFileError, Forbidden) as error:
                log.warning(
                    "tokenizer unusable; tokens estimated", extra=log_fields(uri=where, problem=str(error))
                )
                counter = None
            if counter is None:
                return None  # not cached: a tokenizer that appears later is picked up then
            self._tokenizers[where] = counter
        return where, self._tokenizers[where]

    def _read_tokenizer(self, where: str) -> bytes | None:
        if not where.startswith("gs://"):
            found = read_tokenizer_file(Path(where))
            if found is None:
                log.info("no tokenizer file; tokens estimated", extra=log_fields(uri=where))
                return None
            return found[1]
        bucket_name, _, name = where.removeprefix("gs://").partition("/")
        blob = self.storage.bucket(bucket_name).get_blob(name, timeout=self.settings.api_timeout_seconds)
        if blob is None:
            log.info("no tokenizer file; tokens estimated", extra=log_fields(uri=where))
            return None
        if blob.size is not None and blob.size > MAX_TOKENIZER_BYTES:
            raise TokenizerFileError(f"{where} is {blob.size} bytes, over {MAX_TOKENIZER_BYTES >> 20} MiB")
        data: bytes = blob.download_as_bytes(timeout=self.settings.api_timeout_seconds)
        return data

    def _check_images(self, uris: Sequence[str]) -> Mapping[str, ImageProblem | None]:
        """Each distinct gs:// image exists and starts like a JPEG, PNG or WEBP (M1.4).

        A transient failure of any one check raises (map cancels the checks not yet started), so
        the whole delivery is retried rather than an image reported broken that is not.
        """
        distinct = list(dict.fromkeys(uris))
        if not distinct:
            return {}
        workers = min(IMAGE_CHECK_PARALLELISM, len(distinct))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-check") as pool:
            return dict(zip(distinct, pool.map(self._check_image, distinct), strict=True))

    def _check_image(self, uri: str) -> ImageProblem | None:
        from google.api_core.exceptions import Forbidden, NotFound, RequestRangeNotSatisfiable

        bucket_name, _, name = uri.removeprefix("gs://").partition("/")
        blob = self.storage.bucket(bucket_name).blob(name)
        try:
            # One ranged read answers both questions: the object exists and is readable (a
            # metadata read would not prove the tuning service can read the bytes), and what it is.
            head = blob.download_as_bytes(
                start=0, end=IMAGE_HEAD_BYTES - 1, timeout=self.settings.api_timeout_seconds
            )
        except NotFound:
            return ImageProblem(ImageProblemKind.NOT_FOUND)
        except Forbidden as error:
            return ImageProblem(ImageProblemKind.FORBIDDEN, str(error.message))
        except RequestRangeNotSatisfiable:
            # A range read of an empty object may be answered 416 instead of with no bytes.
            head = b""
        if sniff_image_type(head) is not None:
            return None
        return ImageProblem(ImageProblemKind.UNSUPPORTED_TYPE, describe_image_head(head))

    def _write_report(self, bucket: Any, obj: StorageObject, report_json: str) -> str:
        name = report_name(obj.name)
        bucket.blob(name).upload_from_string(
            report_json,
            content_type="application/json",
            timeout=self.settings.api_timeout_seconds,
        )
        return f"gs://{obj.bucket}/{name}"

    def _reject_options(
        self,
        obj: StorageObject,
        dataset_id: str,
        error: OptionsError | None,
        manifest_error: str | None,
        *,
        code: str = "invalid_manifest",
    ) -> IntakeResult:
        issues = option_issues(error.problems if error else ())
        if manifest_error and code == "unservable_model":
            issues.append(
                {
                    "severity": "error",
                    "code": code,
                    "option": "base_model",
                    "source": "DROPTUNE_DEPLOY",
                    "value": None,
                    "allowed": "a model servable on the configured shape",
                    "message": manifest_error,
                    "remedy": "Change the base model or the DROPTUNE_DEPLOY setting.",
                }
            )
        elif manifest_error:
            issues.append(
                manifest_issue(
                    manifest_name(obj.name),
                    manifest_error,
                    "Fix the manifest, then upload the dataset again.",
                )
            )
        report = refused_options_report(obj.uri, issues)
        bucket = self.storage.bucket(obj.bucket)
        report_uri = self._write_report(bucket, obj, json.dumps(report, indent=2, ensure_ascii=True))
        return self._finish_rejected(
            obj, dataset_id, report_uri, report, refused_options_summary(obj.uri, issues)
        )

    def _dataset_document(self, obj: StorageObject, dataset_id: str, report_uri: str) -> dict[str, Any]:
        return {
            "dataset_id": dataset_id,
            "uri": obj.uri,
            "bucket": obj.bucket,
            "object": obj.name,
            "generation": obj.generation,
            "size": obj.size,
            "md5_hash": obj.md5_hash,
            "crc32c": obj.crc32c,
            "report_uri": report_uri,
            "validated_at": datetime.now(UTC),
        }

    def _finish_rejected(
        self,
        obj: StorageObject,
        dataset_id: str,
        report_uri: str,
        report: Mapping[str, Any],
        summary: str,
    ) -> IntakeResult:
        errors = list(report.get("errors", []))[:10]
        document = self._dataset_document(obj, dataset_id, report_uri) | {
            "state": "rejected",
            "error_total": report.get("error_total", len(errors)),
            "errors": errors,
            "warnings": list(report.get("warnings", []))[:10],
            "tokens": report.get("tokens"),
            "summary": summary,
        }
        self._record(dataset_id, document)
        event = make_event(
            "droptune.dataset.rejected",
            source=SOURCE,
            subject=f"datasets/{dataset_id}",
            data={
                "dataset_id": dataset_id,
                "dataset_uri": obj.uri,
                "generation": obj.generation,
                "md5_hash": obj.md5_hash,
                "report_uri": report_uri,
                **({"base_model": report["base_model"]} if report.get("base_model") else {}),
                "error_total": document["error_total"],
                "errors": errors,
                "summary": summary,
                # The categorised error every failure event carries (M3.9): bad data is the user's to fix.
                "error": {
                    "category": "user_data",
                    "message": summary.splitlines()[0],
                    "remedy": f"Fix the problems listed in {report_uri}, then upload the file again.",
                },
            },
        )
        publish_event(self.publisher, self.settings.events_topic, event)
        self._record_announced(dataset_id)
        log.warning(
            "dataset rejected",
            extra=log_fields(object=obj.uri, report_uri=report_uri, error_total=document["error_total"]),
        )
        return IntakeResult("rejected", summary.splitlines()[0], dataset_id, report_uri=report_uri)

    def _finish_validated(
        self,
        obj: StorageObject,
        *,
        dataset_id: str,
        options: TuningOptions,
        report: DatasetReport,
        report_uri: str,
        validation_uri: str | None,
        conversion: Mapping[str, Any] | None = None,
    ) -> IntakeResult:
        option_values = options.to_dict()
        option_values.pop("sources", None)
        if validation_uri and not option_values.get("validation_dataset"):
            option_values["validation_dataset"] = validation_uri
        job_id = identity.job_id(obj.bucket, obj.name, obj.generation, option_values)
        tokens = report.tokens
        counts = report.training.counts
        stats = {
            "format": report.format,
            "examples": counts.examples,
            "valid_examples": counts.valid,
            "dropped_examples": counts.dropped,
            "warning_total": report.warning_total,
            "total_tokens": tokens.total_tokens if tokens else None,
            "billable_training_tokens": tokens.billable_training_tokens if tokens else None,
            "token_count_method": tokens.method if tokens else None,
        }
        with correlate(job_id=job_id):
            document = self._dataset_document(obj, dataset_id, report_uri) | {
                "state": "validated",
                "summary": report.summary(),
                "job_id": job_id,
                "base_model": options.base_model,
                "options": option_values,
                "option_sources": dict(options.sources),
                "stats": stats,
                "warnings": [issue.to_dict() for issue in report.warnings[:10]],
                "tokens": report.to_dict()["tokens"],
                **({"converted_from": dict(conversion)} if conversion else {}),
            }
            self._record(dataset_id, document)
            request = {
                "job_id": job_id,
                "dataset_id": dataset_id,
                "dataset_uri": obj.uri,
                "bucket": obj.bucket,
                "object": obj.name,
                "generation": obj.generation,
                "md5_hash": obj.md5_hash,
                "report_uri": report_uri,
                "validation_uri": validation_uri,
                # What Vertex trains on: the upload itself, or its conversion for a successor model.
                "training_uri": conversion["training_uri"] if conversion else obj.uri,
                "base_model": options.base_model,
                "tuning_mode": options.tuning_mode.value if options.tuning_mode else None,
                "options": option_values,
                "stats": stats,
                **({"converted_from": conversion["retired_model"]} if conversion else {}),
                "requested_at": datetime.now(UTC).isoformat(),
            }
            self.publisher.publish_json(
                self.settings.tune_topic,
                request,
                {"job_id": job_id, "dataset_id": dataset_id, "base_model": options.base_model},
            )
            event = make_event(
                "droptune.dataset.validated",
                source=SOURCE,
                subject=f"datasets/{dataset_id}",
                data={
                    "dataset_id": dataset_id,
                    "job_id": job_id,
                    "dataset_uri": obj.uri,
                    "generation": obj.generation,
                    "md5_hash": obj.md5_hash,
                    "report_uri": report_uri,
                    "base_model": options.base_model,
                    "tuning_mode": request["tuning_mode"],
                    "options": option_values,
                    "stats": stats,
                    **({"converted_from": dict(conversion)} if conversion else {}),
                },
            )
            publish_event(self.publisher, self.settings.events_topic, event)
            self._record_announced(dataset_id)
            log.info("dataset validated", extra=log_fields(object=obj.uri, report_uri=report_uri, **stats))
        return IntakeResult("validated", report.summary().splitlines()[0], dataset_id, job_id, report_uri)

    def _record(self, dataset_id: str, document: Mapping[str, Any]) -> None:
        # A whole-document set: a redelivery after a crash also clears a stale announced_at.
        self.firestore.collection(DATASETS_COLLECTION).document(dataset_id).set(
            dict(document), timeout=self.settings.api_timeout_seconds
        )

    def _record_announced(self, dataset_id: str) -> None:
        # Written only once every publish has returned: a crash before this line leaves no mark,
        # and the redelivery publishes again (at least once beats never).
        self.firestore.collection(DATASETS_COLLECTION).document(dataset_id).update(
            {"announced_at": datetime.now(UTC)}, timeout=self.settings.api_timeout_seconds
        )


# Common non-images and look-alikes, so the report says what the object is instead of "not an image".
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "gzip data"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"<svg", "an SVG image"),
    (b"<?xml", "an XML document (SVG?)"),
)


def describe_image_head(head: bytes) -> str:
    """What the first bytes of an object that is not a JPEG, PNG or WEBP look like."""
    if not head:
        return "the object is empty"
    hexed = head[:8].hex(" ")
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace")
        looks = "a HEIC/HEIF image" if brand.startswith(("hei", "mif")) else f"an ISO media file ({brand})"
        return f"its first bytes ({hexed}) are {looks}"
    if head[:4] == b"RIFF":
        return f"its first bytes ({hexed}) are a RIFF file of type {head[8:12]!r}, not WEBP"
    for signature, looks in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return f"its first bytes ({hexed}) are {looks}"
    if head.lstrip()[:1] in (b"{", b"["):
        return f"its first bytes ({hexed}) are JSON text"
    return f"its first bytes ({hexed}) match no JPEG, PNG or WEBP signature"


def _droptune_metadata(metadata: Mapping[str, str], *, drop: frozenset[str] = frozenset()) -> dict[str, str]:
    # resolve_options reads the `droptune-` keys itself; other metadata is the user's own business.
    dropped = {f"droptune-{option.replace('_', '-')}" for option in drop}
    return {
        key: value for key, value in metadata.items() if key.startswith("droptune-") and key not in dropped
    }
