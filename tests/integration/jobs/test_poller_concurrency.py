"""Pollers side by side, and a job that stops progressing (issue 5 §4; M4.3, M4.4).

Cloud Scheduler can start a tick while the last one still runs, and a redelivered tick runs twice:
every transition must still be announced once. A job whose worker hangs must be reported as
stalled (an event), not failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jobs_support import events_of, job_document
from stack_support import chat_lines, wait_for

pytestmark = pytest.mark.integration

FINISHED = ("succeeded", "deploying", "deployed", "deploy_failed")


def test_three_pollers_ticking_at_once_announce_each_transition_once(world: Any) -> None:
    db, events = world.db, world.events
    job_id = world.launch(chat_lines(24), epochs=2)
    # Two pollers of this test's own, besides the stack's, which ticks every second.
    pollers = [world.core(world.settings())[1] for _ in range(2)]
    done = threading.Event()
    failures: list[BaseException] = []

    def keep_ticking(poller: Any) -> None:
        while not done.is_set():
            try:
                poller.tick()
            except Exception as error:  # noqa: BLE001 - surfaced by the assertion below
                failures.append(error)
                return

    threads = [threading.Thread(target=keep_ticking, args=(p,), daemon=True) for p in pollers]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            lambda: (d := job_document(db, job_id)) and d["state"] in FINISHED,
            timeout=240,
            interval=1,
            what=f"{job_id} to finish under three pollers",
        )
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []

    events.drain()
    mine = events_of(events, job_id)
    counts = Counter(e["type"] for e in mine)
    assert counts["droptune.job.launched"] == 1 and counts["droptune.job.succeeded"] == 1, counts
    assert len({e["id"] for e in mine}) == len(mine), "an event was published twice"
    sequences = [e["data"]["sequence"] for e in mine if "sequence" in e["data"]]
    assert len(set(sequences)) == len(sequences), f"two events for one transition: {sorted(sequences)}"
    history = job_document(db, job_id)["history"]  # type: ignore[index]
    assert [h["to"] for h in history].count("succeeded") == 1


def _worker_pid(stack: Any, vertex_job: str) -> int:
    """The stand-in's training worker of a job, from the stand-in's own state on disk."""
    state = (
        Path(stack.home)
        / "data"
        / "vertex"
        / "resources"
        / "tuningJobs"
        / f"{vertex_job.rsplit('/', 1)[-1]}.json"
    )
    pid = json.loads(state.read_text())["internal"]["pid"]
    assert isinstance(pid, int), f"no worker for {vertex_job}"
    return pid


def test_a_job_that_stops_progressing_is_reported_stalled_and_keeps_running(world: Any) -> None:
    stack, db, events = world.stack, world.db, world.events
    job_id = world.launch(chat_lines(200), epochs=20)
    running = wait_for(
        lambda: (d := job_document(db, job_id)) and d["state"] == "running" and d.get("metrics_step") and d,
        timeout=120,
        what=f"{job_id} training",
    )
    worker = _worker_pid(stack, running["vertex"]["name"])
    # The worker hangs, as a job stuck on a dead accelerator or a full disk would: no progress.
    os.kill(worker, signal.SIGSTOP)
    try:
        _, poller = world.core(world.settings(stall_after_seconds=3))
        poller.tick()  # sees the last progress
        stalled = None
        for _attempt in range(20):
            poller.tick()
            found = events_of(events, job_id, "droptune.job.stalled")
            if found:
                stalled = found[0]
                break
            threading.Event().wait(1)
        assert stalled is not None, "no job.stalled after the worker stopped"
        assert stalled["data"]["silent_seconds"] >= 3
        assert f"droptune jobs cancel {job_id}" in stalled["data"]["remedy"]
        document = job_document(db, job_id)
        assert document is not None and document["state"] == "running" and document["stalled"] is True
        poller.tick()
        assert len(events_of(events, job_id, "droptune.job.stalled")) == 1, "stalled announced twice"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)
        world.core(world.settings())[1].handle_command({"command": "cancel", "job_id": job_id})
    wait_for(lambda: (d := job_document(db, job_id)) and d["state"] == "cancelled", timeout=60, what="cancel")
