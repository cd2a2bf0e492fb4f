"""Categorised job errors, each with the remedy a user can act on (M3.9, peers pain point 11).

Vertex AI reports failures as a google.rpc.Status (`{code, message}`) on the job, or as an HTTP
error on a call. Both end up here as one `JobError`: a category (user data, quota, capacity,
permissions, retired model, internal, or droptune's own budget guard), the original code and
message, and a remedy. Known messages get specific remedies; anything else gets its category's.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from droptune.catalog import UnknownModelError, get_model, retirement_remedy

# google.rpc.Code values: https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto
CANCELLED = 1
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

# HTTP status → google.rpc.Code, for errors raised by a call rather than read from a job.
_RPC_OF_HTTP = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    409: ABORTED,
    429: RESOURCE_EXHAUSTED,
    499: CANCELLED,
    500: INTERNAL,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

SUPPORT_HINT = "https://cloud.google.com/vertex-ai/docs/support/getting-support"
IAM_HINT = "https://cloud.google.com/vertex-ai/docs/general/access-control"


class ErrorCategory(StrEnum):
    USER_DATA = "user_data"
    QUOTA = "quota"
    CAPACITY = "capacity"
    PERMISSIONS = "permissions"
    RETIRED_MODEL = "retired_model"
    INTERNAL = "internal"
    BUDGET = "budget"


@dataclass(frozen=True)
class JobError:
    category: ErrorCategory
    code: int | None
    message: str
    remedy: str
    # True when the same request may well succeed later (a new upload, or after a wait).
    retryable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"category": self.category.value}


def rpc_code_of_http(status: int) -> int:
    return _RPC_OF_HTTP.get(status, INTERNAL if status >= 500 else INVALID_ARGUMENT)


_RETIRED = re.compile(
    r"retired|deprecat|no longer (available|supported)|blocked|accelerators are not supported",
    re.IGNORECASE,
)
_CAPACITY = re.compile(
    r"capacity|stockout|insufficient (resources|capacity)|resources? (are|is) (not available|insufficient)",
    re.IGNORECASE,
)
_QUOTA = re.compile(r"quota|rate limit|resource.?exhausted|too many requests", re.IGNORECASE)
_PERMISSION = re.compile(r"permission|forbidden|not authori[sz]ed|access denied|\biam\b", re.IGNORECASE)
_ARTIFACT_REGISTRY = re.compile(r"artifact ?registry|artifactregistry", re.IGNORECASE)
_METADATA_STORE = re.compile(r"metadataStores", re.IGNORECASE)
_INTERNAL = re.compile(r"internal error", re.IGNORECASE)


# One ordered list of rules reads better than seven small functions.
def categorize(  # noqa: PLR0911
    code: int | None, message: str, *, base_model: str | None = None
) -> JobError:
    """The category and remedy of a Vertex AI error (`code` is a google.rpc.Code)."""
    text = message or "(no message)"
    if _RETIRED.search(text) or (code in (NOT_FOUND, FAILED_PRECONDITION) and _is_retired(base_model)):
        return JobError(ErrorCategory.RETIRED_MODEL, code, text, _retired_remedy(base_model))
    if code in (PERMISSION_DENIED, UNAUTHENTICATED) or _PERMISSION.search(text):
        return _permission_error(code, text)
    if code == RESOURCE_EXHAUSTED and _CAPACITY.search(text):
        return _capacity_error(code, text)
    if code == RESOURCE_EXHAUSTED or _QUOTA.search(text):
        return JobError(
            ErrorCategory.QUOTA,
            code,
            text,
            "The project's quota (e.g. 'Global concurrent tuning jobs') is used up. droptune queues "
            "the job and starts it when a slot frees up; to run more at once, request a higher quota "
            "(https://cloud.google.com/vertex-ai/docs/quotas) and raise DROPTUNE_MAX_CONCURRENT_JOBS.",
            retryable=True,
        )
    if code == UNAVAILABLE or _CAPACITY.search(text):
        return _capacity_error(code, text)
    if code in (INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION, NOT_FOUND) and not _INTERNAL.search(
        text
    ):
        return JobError(
            ErrorCategory.USER_DATA,
            code,
            text,
            "Vertex AI rejected the dataset or the options: fix what the message names (file, line, "
            "field), then upload the dataset again (a new upload starts a new job).",
        )
    return JobError(
        ErrorCategory.INTERNAL,
        code,
        text,
        "Vertex AI failed on its side ('Internal error encountered.' is usually transient): upload "
        "the dataset again to start a new job. If it fails again, open a support case with the "
        f"Vertex job name ({SUPPORT_HINT}).",
        retryable=True,
    )


def budget_error(estimate: int, budget: int) -> JobError:
    return JobError(
        ErrorCategory.BUDGET,
        None,
        f"Estimated billable training tokens {estimate:,} exceed the budget of {budget:,}.",
        "Reduce the dataset or the epochs and upload again, or raise DROPTUNE_TRAINING_TOKEN_BUDGET; "
        "with DROPTUNE_OVER_BUDGET=hold such jobs wait for `droptune jobs approve JOB` instead.",
    )


def _permission_error(code: int | None, text: str) -> JobError:
    if _ARTIFACT_REGISTRY.search(text):
        # Seed 003: Artifact Registry permission errors right after setup come from IAM
        # propagation delay; the same request succeeds a few minutes later.
        return JobError(
            ErrorCategory.PERMISSIONS,
            code,
            text,
            "IAM changes take a few minutes to propagate: wait, then upload the dataset again.",
            retryable=True,
        )
    if _METADATA_STORE.search(text):
        return JobError(
            ErrorCategory.PERMISSIONS,
            code,
            text,
            "Grant roles/aiplatform.admin and roles/storage.objectAdmin to the service account the "
            "job runs as (the Compute Engine default service account "
            "PROJECT_NUMBER-compute@developer.gserviceaccount.com unless "
            f"DROPTUNE_TUNING_SERVICE_ACCOUNT is set), then upload again ({IAM_HINT}).",
        )
    return JobError(
        ErrorCategory.PERMISSIONS,
        code,
        text,
        "The tuning service account lacks a permission the message names: grant it "
        "(roles/aiplatform.user to the launcher, roles/storage.objectAdmin on the datasets bucket to "
        f"the tuning service account), then upload again ({IAM_HINT}).",
    )


def _capacity_error(code: int | None, text: str) -> JobError:
    return JobError(
        ErrorCategory.CAPACITY,
        code,
        text,
        "Vertex AI had no hardware free for this job in its region: upload again later, or choose "
        "another region with the region option (open models: us-central1, europe-west4, ...).",
        retryable=True,
    )


def _is_retired(base_model: str | None) -> bool:
    if not base_model:
        return False
    try:
        return get_model(base_model).retired
    except UnknownModelError:
        return False


def _retired_remedy(base_model: str | None) -> str:
    if base_model:
        try:
            return retirement_remedy(get_model(base_model))
        except UnknownModelError:
            pass
    return "The base model is retired: choose a supported base model and upload the dataset again."
