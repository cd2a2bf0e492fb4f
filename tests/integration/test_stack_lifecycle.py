"""`droptune up/down/status/env`: a harmless second up, a down that leaves nothing behind, and
clear messages for a port in use, a stale state file and an emulator that dies (issue 2 §3)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from droptune_local import processes, stack
from droptune_local.processes import ProcessRecord, process_start_ticks
from droptune_local.stack import StackConfig, StackError

pytestmark = pytest.mark.integration


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ProcessRecord]]:
    """Every process the stack starts during the test, to check none outlives it."""
    records: list[ProcessRecord] = []
    original = processes.start_process

    def recording(*args: Any, **kwargs: Any) -> ProcessRecord:
        record = original(*args, **kwargs)
        records.append(record)
        return record

    monkeypatch.setattr(processes, "start_process", recording)
    yield records
    for record in records:  # never leave a process behind, even when an assertion failed
        processes.stop_process(record, grace_seconds=2)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env["DROPTUNE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "droptune_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_up_twice_then_down_leaves_no_process(
    tmp_path: Path, started: list[ProcessRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's own clients (another stack's, say) must stay connected to their emulators.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")
    config = StackConfig(
        home=tmp_path / "home", project="lifecycle-test", tick_seconds=1.0, standin_threads=1
    )
    environment_before = dict(os.environ)
    state, first = stack.up(config)
    assert first
    assert dict(os.environ) == environment_before
    members = {pid for r in started for pid in processes.group_members(r.pid)}
    assert len(started) == len(stack.COMPONENTS)

    again, second = stack.up(config)
    assert not second
    assert {c.process.pid for c in again.components.values() if c.process} == {r.pid for r in started}

    shown = json.loads(_cli(config.home, "status", "--json").stdout)
    assert shown["running"] is True
    assert {c["name"] for c in shown["components"]} == set(stack.COMPONENTS)
    exports = _cli(config.home, "env").stdout
    assert f"export PUBSUB_EMULATOR_HOST={state.endpoint('pubsub').removeprefix('http://')}" in exports
    assert "export DROPTUNE_VERTEX_API_ENDPOINT=http://127.0.0.1:" in exports

    result = _cli(config.home, "down")
    assert result.returncode == 0, result.stderr
    assert not [pid for pid in members if process_start_ticks(pid) is not None]
    assert not config.state_path.exists()
    assert _cli(config.home, "status").returncode == 3


def test_a_port_in_use_is_named_and_nothing_is_started(tmp_path: Path, started: list[ProcessRecord]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = StackConfig(home=tmp_path / "home", fixed_ports={"pubsub": port})
        with pytest.raises(StackError, match=rf"port {port} .*pubsub.*DROPTUNE_PUBSUB_PORT"):
            stack.up(config)
    assert started == []


def test_an_emulator_that_dies_during_start_is_reported_and_nothing_is_left(
    tmp_path: Path, started: list[ProcessRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = stack.find_emulators()
    broken_sdk = tmp_path / "sdk"
    script = broken_sdk / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho 'java.net.BindException: simulated failure' >&2\nsleep 0.5\nexit 1\n")
    script.chmod(0o755)
    jar = broken_sdk / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
    jar.parent.mkdir(parents=True)
    jar.symlink_to(real.firestore_jar)
    monkeypatch.setenv("DROPTUNE_GCLOUD_SDK_ROOT", str(broken_sdk))

    config = StackConfig(home=tmp_path / "home")
    with pytest.raises(StackError, match=r"pubsub exited during start-up(.|\n)*simulated failure"):
        stack.up(config)
    assert started, "the stack should have started something before the emulator died"
    assert not [r.pid for r in started if r.is_alive()]
    assert not config.state_path.exists()


def test_a_stale_state_file_never_stops_somebody_elses_process(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        home = tmp_path / "home"
        home.mkdir()
        ticks = process_start_ticks(bystander.pid)
        assert ticks is not None
        # A state file from an earlier boot: the PID now belongs to another process.
        state = {
            "project": "p",
            "bucket": "b",
            "home": str(home),
            "ready": True,
            "components": {
                "pubsub": {
                    "name": "pubsub",
                    "port": 1,
                    "endpoint": "http://127.0.0.1:1",
                    "log": "x",
                    "process": {"pid": bystander.pid, "start_ticks": ticks - 1, "command": ["old"]},
                }
            },
        }
        (home / "state.json").write_text(json.dumps(state))
        result = _cli(home, "down")
        assert result.returncode == 0
        assert "nothing was running" in result.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
