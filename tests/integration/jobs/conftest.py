"""Fixtures of the job tests: the launcher and poller cores with real clients on the local stack.

Tests that need a different setting (a budget, a short API timeout) or a process to kill build
their own core here, with the same clients the functions use, instead of changing the stack.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest


@pytest.fixture
def job_settings(stack: Any) -> Callable[..., Any]:
    """Settings as the stack's functions read them, with overrides."""
    from droptune.settings import Settings

    def make(**overrides: Any) -> Any:
        base = Settings.from_environ(os.environ | {"DROPTUNE_MAX_CONCURRENT_JOBS": "2"})
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture
def core(stack: Any) -> Callable[..., Any]:
    """A (launcher, poller) pair built from real clients, as services/*/main.py build them."""
    from droptune.cloud_clients import PubSubPublisher, firestore_client
    from droptune.jobs.launcher import Launcher
    from droptune.jobs.poller import Poller, build_context

    def make(settings: Any) -> tuple[Any, Any]:
        context = build_context(settings, firestore_client(settings), PubSubPublisher(settings))
        return Launcher(settings, context.store, context.vertex), Poller(context)

    return make


@dataclass(frozen=True)
class JobsWorld:
    """Everything a job test looks at: the stack, its bucket, Firestore, the event tap, cores."""

    stack: Any
    bucket: Any
    db: Any
    events: Any
    settings: Callable[..., Any]
    core: Callable[..., Any]

    def launch(self, text: str, **options: Any) -> str:
        """A tune request for `text` handed to a launcher of the stack's settings; its job id."""
        from jobs_support import manual_request

        request = manual_request(self.stack, self.bucket, text, options=options or None)
        launcher, _ = self.core(self.settings())
        launcher.handle_request(request)
        return str(request["job_id"])


@pytest.fixture
def world(  # noqa: PLR0917 - pytest passes fixtures positionally
    stack: Any, datasets_bucket: Any, firestore_db: Any, events: Any, job_settings: Any, core: Any
) -> JobsWorld:
    return JobsWorld(stack, datasets_bucket, firestore_db, events, job_settings, core)
