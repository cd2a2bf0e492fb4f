"""Starting and stopping the stack's processes, and only ours.

Each component runs in its own session (so its process group id is its PID, and children such as
gunicorn workers share it). A PID is only trusted together with the start time the kernel recorded
for it: a stale PID file whose number now belongs to somebody else's process is recognised and
left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ProcessStartError(RuntimeError):
    """A component did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class ProcessRecord:
    """What `up` wrote down about a process it started, enough for `down` to stop exactly it."""

    pid: int
    start_ticks: int
    command: tuple[str, ...]

    def is_alive(self) -> bool:
        return process_start_ticks(self.pid) == self.start_ticks


def process_start_ticks(pid: int) -> int | None:
    """The start time of a live process in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_process(
    command: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path
) -> ProcessRecord:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    ticks = process_start_ticks(process.pid)
    if ticks is None:
        raise ProcessStartError(f"{command[0]} exited at once; see {log_path}")
    return ProcessRecord(pid=process.pid, start_ticks=ticks, command=tuple(command))


def stop_process(record: ProcessRecord, *, grace_seconds: float = 10.0) -> bool:
    """Stop a process we started, with its process group. False if it was not ours any more."""
    if not record.is_alive():
        _reap(record.pid)
        return False
    _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not record.is_alive() and not group_members(record.pid):
            return True
        time.sleep(0.1)
    _signal_group(record.pid, signal.SIGKILL)
    for _ in range(50):
        _reap(record.pid)
        if not record.is_alive() and not group_members(record.pid):
            break
        time.sleep(0.1)
    return True


def group_members(pgid: int) -> list[int]:
    """PIDs of live processes in a process group (our components are group leaders)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def http_ready(url: str, *, timeout: float = 1.0) -> bool:
    """True once anything answers HTTP at the URL (any status: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - loopback URLs we built
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
