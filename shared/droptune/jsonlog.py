"""JSON logs on stdout, one object per line, in the shape Cloud Logging understands.

`severity` and `message` are the fields Cloud Logging maps to its own; everything bound with
`correlate()` (event id, dataset id, job id) rides along on every line logged inside the block,
so one job's story can be filtered out of four functions' logs.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

# An immutable default: every correlate() block builds a new mapping instead of mutating it.
_correlation: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "droptune_correlation", default=MappingProxyType({})
)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "component": self._component,
            "logger": record.name,
        }
        entry.update(_correlation.get())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(component: str, level: int = logging.INFO) -> None:
    """Send every log record of this process to stdout as JSON. Idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_droptune", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(component))
    handler._droptune = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


@contextlib.contextmanager
def correlate(**ids: str | None) -> Iterator[None]:
    """Attach correlation ids to every log line written inside the block."""
    merged = dict(_correlation.get()) | {key: value for key, value in ids.items() if value}
    token = _correlation.set(merged)
    try:
        yield
    finally:
        _correlation.reset(token)


def log_fields(**fields: object) -> dict[str, dict[str, object]]:
    """Structured fields for one log call: `logger.info("...", extra=log_fields(size=3))`."""
    return {"fields": fields}
