"""Deterministic ids: the same upload always gets the same dataset id and the same job id.

Pub/Sub delivers at least once and any function may run twice; ids derived from what happened
(never random, never a timestamp) are what makes every step idempotent (ARCHITECTURE decision 3).
Ids are valid Firestore document ids, Vertex AI label values and CloudEvent subjects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

_ID_HEX_CHARS = 24  # 96 bits: collisions are out of reach for any number of uploads


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:_ID_HEX_CHARS]


def dataset_id(bucket: str, object_name: str, generation: str) -> str:
    """One id per object generation: overwriting a file is a new upload (decision 2)."""
    return "ds-" + _digest(bucket, object_name, generation)


def job_id(bucket: str, object_name: str, generation: str, options: Mapping[str, Any]) -> str:
    """One tuning job per upload and resolved options (decision 3)."""
    canonical = json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)
    return "job-" + _digest(bucket, object_name, generation, canonical)
