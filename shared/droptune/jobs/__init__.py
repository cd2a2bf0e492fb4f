"""Tuning jobs: the Firestore record, its one state machine, the launcher and the poller (issue 5).

- `record`: the `jobs/{job_id}` document, the states and the legal transitions;
- `state_machine`: `JobStore`, the only writer of a job's state (one transaction per transition,
  each announced event published once);
- `errors`: categorised errors with their remedies (M3.9);
- `vertex_requests`: the tuningJobs / pipelineJobs create bodies (M1, M2, M3.4);
- `vertex_access`: the Vertex AI calls, with errors sorted into quota / transient / permanent;
- `launcher`: claim, budget guard, slots, create-or-find;
- `poller`: the tick and the control commands.
"""
