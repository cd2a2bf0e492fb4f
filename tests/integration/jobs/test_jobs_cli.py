"""`droptune jobs list | show | reject` read and change jobs through Firestore and job-control
(issue 5 §5, §6, §8; M4.3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jobs_support import job_document, manual_request, run_jobs_command
from stack_support import chat_lines, wait_for

pytestmark = pytest.mark.integration


def test_jobs_list_show_and_reject_a_held_job(world: Any, capsys: Any) -> None:
    settings = world.settings(training_token_budget=100)
    request = manual_request(
        world.stack, world.bucket, chat_lines(12), stats={"billable_training_tokens": 5000}
    )
    job_id = request["job_id"]
    world.core(settings)[0].handle_request(request)

    code, out = run_jobs_command(capsys, "jobs", "list", "--state", "awaiting_approval", "--json")
    assert code == 0
    assert job_id in [row["job_id"] for row in json.loads(out)]

    code, out = run_jobs_command(capsys, "jobs", "show", job_id)
    assert code == 0
    assert "awaiting_approval" in out and "5,000 estimated billable training tokens" in out

    code, out = run_jobs_command(capsys, "jobs", "reject", job_id, "--json")
    assert code == 0, out
    assert json.loads(out)["state"] == "failed"
    wait_for(lambda: job_document(world.db, job_id)["state"] == "failed", what="the rejection recorded")

    code, out = run_jobs_command(capsys, "jobs", "show", job_id)
    assert code == 1  # a failed job: the command says so by its exit code
    assert "[budget]" in out and "remedy" in out
    code, out = run_jobs_command(capsys, "jobs", "show", job_id, "--json")
    shown = json.loads(out)
    assert shown["error"]["category"] == "budget"
    assert [h["to"] for h in shown["history"]] == ["awaiting_approval", "failed"]
