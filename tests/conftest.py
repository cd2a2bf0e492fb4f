"""Session fixtures: one local stack (real emulators, the stand-in, the four functions) per run.

The stack is started once, in a temporary DROPTUNE_HOME, and stopped at the end; tests keep out
of each other's way with unique object names (`unique_prefix`) and their own subscriptions.
Only the processes this session started are stopped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack_support import EventTap, topic_tap

STACK_PROJECT = "droptune-test"
STACK_BUCKET = "droptune-test-datasets"


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("droptune-home")


@pytest.fixture(scope="session")
def stack(stack_home: Path) -> Iterator[Any]:
    """The running local stack (a `StackState`); its variables are exported for the clients."""
    from droptune_local.emulators import EmulatorMissingError
    from droptune_local.stack import StackConfig, down, up

    config = StackConfig(
        home=stack_home,
        project=STACK_PROJECT,
        bucket=STACK_BUCKET,
        standin_model="tiny",
        max_concurrent_jobs=2,
        tick_seconds=1.0,
        standin_threads=1,
        function_environment={
            "DROPTUNE_STALL_AFTER_SECONDS": "600",
            "DROPTUNE_RETIRED_MODELS": "allow",
        },
    )
    try:
        state, _ = up(config)
    except EmulatorMissingError as error:
        pytest.fail(f"the local stack needs the Google Cloud CLI emulators: {error}")
    saved = dict(os.environ)
    os.environ.update(state.environment())
    try:
        yield state
    finally:
        os.environ.clear()
        os.environ.update(saved)
        down(config)


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """`datasets/<test>-<random>/`: a folder of the watched prefix that no other test uses."""
    name = request.node.name.replace("[", "-").replace("]", "").lower()[:40]
    return f"datasets/{name}-{uuid.uuid4().hex[:8]}/"


@pytest.fixture(scope="session")
def gcs(stack: Any) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # The endpoint is named: the stand-in's fixtures point STORAGE_EMULATOR_HOST elsewhere.
    return storage.Client(
        project=stack.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": stack.endpoint("storage")},
    )


@pytest.fixture(scope="session")
def datasets_bucket(gcs: Any, stack: Any) -> Any:
    return gcs.bucket(stack.bucket)


@pytest.fixture(scope="session")
def firestore_db(stack: Any) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    return firestore.Client(project=stack.project, credentials=AnonymousCredentials())


@pytest.fixture
def events(stack: Any) -> Iterator[EventTap]:
    """Events published from now on, read through a subscription of this test's own."""
    with topic_tap(stack.project, "droptune-events") as tap:
        yield tap
