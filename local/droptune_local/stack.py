"""The local cloud: Storage, Pub/Sub, Firestore, the Vertex AI stand-in and the four functions.

`up` starts every component on a free port, checks each one's health, provisions the topology
and the bucket, and writes what it started (PID + kernel start time) to `state.json` after each
start, so that `down` stops exactly those processes and nothing else, even after a crash of `up`
itself. Logs of every component go to one folder, state to one folder (`DROPTUNE_HOME`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from droptune.datasets.tokenizer_files import TOKENIZER_FILE_NAME
from droptune.topology import DATASET_UPLOADS, POLLER_TICKS, SERVICES
from droptune_local import processes
from droptune_local.emulators import find_emulators, find_fake_gcs_server
from droptune_local.processes import ProcessRecord, ProcessStartError
from droptune_local.provisioning import create_bucket, provision_pubsub
from vertex_standin.models import default_model_cache_dir

STATE_FILE = "state.json"
# The Firestore emulator is a JVM and the stand-in imports torch: on two cores both take seconds.
START_TIMEOUT_S = 90.0

# The order of start-up: emulators first, then what needs them.
COMPONENTS = ("pubsub", "firestore", "vertex", "storage", *SERVICES, "ticker")


class StackError(RuntimeError):
    """The stack could not be brought up or down; the message says why and what to do."""


@dataclass(frozen=True)
class StackConfig:
    home: Path
    project: str = "droptune-local"
    bucket: str = "droptune-datasets"
    # tiny: a randomly initialised model for tests; smollm2: the real local model of the demo.
    standin_model: str = "tiny"
    max_concurrent_jobs: int = 2
    tick_seconds: float = 5.0
    standin_threads: int = 2
    # Fixed ports a user asked for (component → port); every other port is chosen free.
    fixed_ports: Mapping[str, int] = field(default_factory=dict)
    # Extra settings passed to every function (DROPTUNE_* variables of the settings object).
    function_environment: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **overrides: Any) -> StackConfig:
        home = Path(environ.get("DROPTUNE_HOME", ".droptune")).resolve()
        fixed = {
            name: int(environ[f"DROPTUNE_{name.upper()}_PORT"])
            for name in COMPONENTS
            if environ.get(f"DROPTUNE_{name.upper()}_PORT", "").isdigit()
        }
        passthrough = {
            key: value
            for key, value in environ.items()
            if key.startswith("DROPTUNE_")
            and key not in {"DROPTUNE_HOME", "DROPTUNE_PROJECT", "DROPTUNE_DATASETS_BUCKET"}
            and not key.endswith("_PORT")
        }
        values: dict[str, Any] = {
            "home": home,
            "project": environ.get("DROPTUNE_PROJECT", "droptune-local"),
            "bucket": environ.get("DROPTUNE_DATASETS_BUCKET", "droptune-datasets"),
            "standin_model": environ.get("DROPTUNE_STANDIN_BASE_MODEL", "tiny"),
            "fixed_ports": fixed,
            "function_environment": passthrough,
        }
        if environ.get("DROPTUNE_MAX_CONCURRENT_JOBS", "").isdigit():
            values["max_concurrent_jobs"] = int(environ["DROPTUNE_MAX_CONCURRENT_JOBS"])
        values.update(overrides)
        return cls(**values)

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE


@dataclass
class Component:
    name: str
    port: int | None
    endpoint: str
    log: str
    process: ProcessRecord | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.process is not None:
            data["process"] = {**asdict(self.process), "command": list(self.process.command)}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Component:
        process = data.get("process")
        return cls(
            name=data["name"],
            port=data.get("port"),
            endpoint=data["endpoint"],
            log=data["log"],
            process=ProcessRecord(
                pid=process["pid"], start_ticks=process["start_ticks"], command=tuple(process["command"])
            )
            if process
            else None,
        )


@dataclass
class StackState:
    project: str
    bucket: str
    home: str
    components: dict[str, Component] = field(default_factory=dict)
    ready: bool = False

    def endpoint(self, name: str) -> str:
        return self.components[name].endpoint

    def environment(self) -> dict[str, str]:
        """The variables any official client or droptune function needs to reach this stack."""
        env = {
            "DROPTUNE_PROJECT": self.project,
            "DROPTUNE_DATASETS_BUCKET": self.bucket,
            "DROPTUNE_HOME": self.home,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }
        if "storage" in self.components:
            env["STORAGE_EMULATOR_HOST"] = self.endpoint("storage")
        if "pubsub" in self.components:
            env["PUBSUB_EMULATOR_HOST"] = self.endpoint("pubsub").removeprefix("http://")
        if "firestore" in self.components:
            env["FIRESTORE_EMULATOR_HOST"] = self.endpoint("firestore").removeprefix("http://")
        if "vertex" in self.components:
            env["DROPTUNE_VERTEX_API_ENDPOINT"] = self.endpoint("vertex")
        from droptune.topology import EVENTS, JOB_CONTROL, TUNE_REQUESTS

        env |= {
            "DROPTUNE_DATASET_TOPIC": DATASET_UPLOADS,
            "DROPTUNE_TUNE_TOPIC": TUNE_REQUESTS,
            "DROPTUNE_EVENTS_TOPIC": EVENTS,
            "DROPTUNE_CONTROL_TOPIC": JOB_CONTROL,
        }
        return env

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "bucket": self.bucket,
            "home": self.home,
            "ready": self.ready,
            "components": {name: c.to_json() for name, c in self.components.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StackState:
        return cls(
            project=data["project"],
            bucket=data["bucket"],
            home=data["home"],
            ready=bool(data.get("ready")),
            components={name: Component.from_json(c) for name, c in data["components"].items()},
        )


def load_state(config: StackConfig) -> StackState | None:
    try:
        return StackState.from_json(json.loads(config.state_path.read_text()))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise StackError(
            f"{config.state_path} is not a droptune state file ({error}). Stop any droptune "
            f"processes by hand and delete it."
        ) from None


def _save_state(config: StackConfig, state: StackState) -> None:
    config.home.mkdir(parents=True, exist_ok=True)
    temporary = config.state_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state.to_json(), indent=2))
    temporary.replace(config.state_path)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # running | stopped | unhealthy
    endpoint: str
    pid: int | None
    log: str


def status(config: StackConfig) -> tuple[StackState | None, list[ComponentStatus]]:
    state = load_state(config)
    if state is None:
        return None, []
    report = []
    for component in state.components.values():
        alive = component.process is not None and component.process.is_alive()
        healthy = alive and (component.port is None or processes.port_in_use(component.port))
        report.append(
            ComponentStatus(
                name=component.name,
                state="running" if healthy else ("unhealthy" if alive else "stopped"),
                endpoint=component.endpoint,
                pid=component.process.pid if component.process else None,
                log=component.log,
            )
        )
    return state, report


def repository_root() -> Path:
    """The checkout that holds `services/` (the functions' sources)."""
    override = os.environ.get("DROPTUNE_SOURCE_ROOT")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2]


class _Starter:
    """Starts components one by one, saving state after each, undoing everything on failure."""

    def __init__(self, config: StackConfig, python: str) -> None:
        self.config = config
        self.python = python
        self.state = StackState(project=config.project, bucket=config.bucket, home=str(config.home))
        self.ports = self._choose_ports()
        self.source_root = repository_root()

    def _choose_ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for name in COMPONENTS:
            if name == "ticker":
                continue
            if name in self.config.fixed_ports:
                port = self.config.fixed_ports[name]
                if processes.port_in_use(port):
                    raise StackError(
                        f"port {port} asked for {name} (DROPTUNE_{name.upper()}_PORT) is in use by "
                        f"another program. Free it, or unset DROPTUNE_{name.upper()}_PORT to let "
                        f"droptune choose a free port."
                    )
                ports[name] = port
            else:
                port = processes.free_port()
                while port in ports.values():
                    port = processes.free_port()
                ports[name] = port
        return ports

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def function_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # A function must not inherit a stack's variables from the shell that ran `up`.
        for key in list(env):
            if key.startswith("DROPTUNE_") or key.endswith("_EMULATOR_HOST"):
                del env[key]
        env |= {
            "DROPTUNE_PROJECT": self.config.project,
            "DROPTUNE_DATASETS_BUCKET": self.config.bucket,
            "DROPTUNE_MAX_CONCURRENT_JOBS": str(self.config.max_concurrent_jobs),
            "STORAGE_EMULATOR_HOST": self.url("storage"),
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports['pubsub']}",
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{self.ports['firestore']}",
            "DROPTUNE_VERTEX_API_ENDPOINT": self.url("vertex"),
            # The stand-in trains its local model whatever the catalog id: its tokenizer makes the
            # validator's counts exact for what really runs (the file appears once it is built).
            "DROPTUNE_TOKENIZER_URI": str(
                default_model_cache_dir() / self.config.standin_model / TOKENIZER_FILE_NAME
            ),
            "PYTHONUNBUFFERED": "1",
        }
        env |= dict(self.config.function_environment)
        return env

    def launch(self, name: str, command: list[str], env: Mapping[str, str], endpoint: str) -> Component:
        log = self.config.logs_dir / f"{name}.log"
        try:
            record = processes.start_process(command, env=env, log_path=log, cwd=self.source_root)
        except ProcessStartError:
            raise StackError(
                f"{name} exited during start-up. Last lines of {log}:\n" + processes.log_tail(log)
            ) from None
        except OSError as error:
            raise StackError(f"{name} could not be started: {error}") from None
        component = Component(name, self.ports.get(name), endpoint, str(log), record)
        self.state.components[name] = component
        _save_state(self.config, self.state)
        return component

    def wait_healthy(self, name: str, probe: Callable[[], bool]) -> None:
        component = self.state.components[name]
        assert component.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not component.process.is_alive():
                raise StackError(
                    f"{name} exited during start-up. Last lines of {component.log}:\n"
                    + processes.log_tail(Path(component.log))
                )
            if probe():
                return
            time.sleep(0.2)
        raise StackError(
            f"{name} did not become healthy within {START_TIMEOUT_S:.0f} s. Last lines of "
            f"{component.log}:\n" + processes.log_tail(Path(component.log))
        )

    def http_probe(self, url: str) -> Callable[[], bool]:
        return lambda: processes.http_ready(url)

    def start(self) -> StackState:
        emulators = find_emulators()
        fake_gcs = find_fake_gcs_server()
        data = self.config.data_dir
        (data / "pubsub").mkdir(parents=True, exist_ok=True)
        (data / "storage").mkdir(parents=True, exist_ok=True)
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        base_env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}

        # 1. The slow starters, all at once: two JVMs, a torch import, four Python functions.
        self.launch(
            "pubsub",
            emulators.pubsub_command(self.ports["pubsub"], data / "pubsub"),
            base_env,
            self.url("pubsub"),
        )
        self.launch(
            "firestore", emulators.firestore_command(self.ports["firestore"]), base_env, self.url("firestore")
        )
        self.launch(
            "vertex",
            [
                self.python,
                "-m",
                "vertex_standin",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["vertex"]),
                "--state-dir",
                str(data / "vertex"),
                "--project",
                self.config.project,
                "--base-model",
                self.config.standin_model,
                "--max-concurrent-tuning-jobs",
                str(max(self.config.max_concurrent_jobs, 1)),
                "--threads",
                str(self.config.standin_threads),
            ],
            {**base_env, "STORAGE_EMULATOR_HOST": self.url("storage"), "HF_HUB_OFFLINE": "1"},
            self.url("vertex"),
        )
        function_env = self.function_environment()
        for service in SERVICES:
            source = self.source_root / "services" / service / "main.py"
            if not source.is_file():
                raise StackError(f"{source} is missing: run droptune from a droptune checkout.")
            self.launch(
                service,
                [
                    self.python,
                    "-m",
                    "functions_framework",
                    "--target",
                    _ENTRY_POINTS[service],
                    "--signature-type",
                    "cloudevent",
                    "--source",
                    str(source),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.ports[service]),
                ],
                {**function_env, "DROPTUNE_COMPONENT": service},
                self.url(service),
            )

        # 2. Pub/Sub must hold the topics before fake-gcs-server publishes its first notification.
        self.wait_healthy("pubsub", self.http_probe(self.url("pubsub")))
        provision_pubsub(
            f"127.0.0.1:{self.ports['pubsub']}", self.config.project, {s: self.url(s) for s in SERVICES}
        )

        self.launch(
            "storage",
            [
                str(fake_gcs),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.ports["storage"]),
                "-public-host",
                f"127.0.0.1:{self.ports['storage']}",
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(data / "storage"),
                "-event.pubsub-project-id",
                self.config.project,
                "-event.pubsub-topic",
                DATASET_UPLOADS,
                "-event.bucket",
                self.config.bucket,
                "-event.list",
                "finalize",
                "-log-level",
                "warn",
            ],
            {**base_env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports['pubsub']}"},
            self.url("storage"),
        )
        self.wait_healthy("storage", self.http_probe(f"{self.url('storage')}/storage/v1/b"))
        create_bucket(self.url("storage"), self.config.project, self.config.bucket)

        self.wait_healthy("firestore", self.http_probe(self.url("firestore")))
        for service in SERVICES:
            self.wait_healthy(service, self.http_probe(self.url(service)))
        self.wait_healthy("vertex", self.http_probe(f"{self.url('vertex')}/healthz"))

        self.launch(
            "ticker",
            [
                self.python,
                "-m",
                "droptune_local.ticker",
                "--project",
                self.config.project,
                "--topic",
                POLLER_TICKS,
                "--interval",
                str(self.config.tick_seconds),
            ],
            {**base_env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports['pubsub']}"},
            "",
        )
        self.state.ready = True
        _save_state(self.config, self.state)
        return self.state


_ENTRY_POINTS = {
    "validator": "handle_dataset_upload",
    "launcher": "handle_tune_request",
    "poller": "handle_poller_message",
    "deployer": "handle_job_succeeded",
}


def up(config: StackConfig, *, python: str = sys.executable) -> tuple[StackState, bool]:
    """Bring the stack up. Returns the state and whether anything was started.

    A second `up` while the stack runs changes nothing. A stack left half-alive (a crash, a
    reboot, a component killed) is stopped — only the processes it recorded — and started anew.
    """
    previous = load_state(config)
    if previous is not None:
        alive = [c for c in previous.components.values() if c.process and c.process.is_alive()]
        if previous.ready and len(alive) == len(previous.components):
            return previous, False
        down(config)
    starter = _Starter(config, python)
    try:
        return starter.start(), True
    except BaseException:
        down(config)
        raise


def down(config: StackConfig) -> list[str]:
    """Stop exactly the processes `up` recorded (by PID and start time); return their names."""
    state = load_state(config)
    if state is None:
        return []
    stopped = []
    # The reverse order of start-up: nothing publishes into an emulator that is already gone.
    for name in reversed(list(state.components)):
        component = state.components[name]
        if component.process is not None and processes.stop_process(component.process):
            stopped.append(name)
    config.state_path.unlink(missing_ok=True)
    return stopped
