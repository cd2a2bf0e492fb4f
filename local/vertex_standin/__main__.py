"""Run the stand-in alone: `python -m vertex_standin --host 127.0.0.1 --port 8090 --state-dir D --project p`.

Point the SDKs at it with `vertexai.init(api_endpoint="http://HOST:PORT", api_transport="rest",
credentials=AnonymousCredentials())`; `GET /healthz` answers 200 once it listens. The first line
on stdout is a JSON log carrying the port it listens on (useful with `--port 0`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from vertex_standin.models import LOCAL_MODEL_FAMILIES, default_model_cache_dir
from vertex_standin.server import build_server
from vertex_standin.service import StandinService, StandinSettings


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except json.JSONDecodeError:
            fields = {"message": message}
        if not isinstance(fields, dict):
            fields = {"message": message}
        entry = {"severity": record.levelname, "logger": record.name, **fields}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def parse_settings(argv: Sequence[str]) -> tuple[str, int, StandinSettings]:
    parser = argparse.ArgumentParser(
        prog="vertex_standin", description="A local Vertex AI tuning and serving service."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="jobs, endpoints and worker files live here"
    )
    parser.add_argument("--project", required=True)
    parser.add_argument(
        "--model-cache-dir",
        type=Path,
        default=default_model_cache_dir(),
        help="where local base models are built once",
    )
    parser.add_argument(
        "--base-model",
        choices=LOCAL_MODEL_FAMILIES,
        default=os.environ.get("DROPTUNE_STANDIN_BASE_MODEL", "tiny"),
        help="the local model behind every catalog id: tiny (tests) or smollm2 (demo)",
    )
    parser.add_argument("--max-concurrent-tuning-jobs", type=int, default=1)
    parser.add_argument(
        "--output-bucket",
        default="droptune-standin-artifacts",
        help="artifacts of jobs created without outputUri go here",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--epochs", type=int, default=3, help="epochs when a job sets none")
    args = parser.parse_args(argv)
    settings = StandinSettings(
        project=args.project,
        state_dir=args.state_dir,
        model_cache_dir=args.model_cache_dir,
        local_model_family=args.base_model,
        max_concurrent_tuning_jobs=args.max_concurrent_tuning_jobs,
        default_output_bucket=args.output_bucket,
        torch_threads=args.threads,
        default_epochs=args.epochs,
    )
    return args.host, args.port, settings


def main(argv: Sequence[str]) -> int:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    host, port, settings = parse_settings(argv)
    service = StandinService(settings)
    server = build_server(host, port, service)
    bound_port = server.server_address[1]
    logging.getLogger("vertex_standin").info(
        json.dumps(
            {
                "message": "vertex stand-in listening",
                "url": f"http://{host}:{bound_port}",
                "port": bound_port,
                "base_model": settings.local_model_family,
                "state_dir": str(settings.state_dir),
            }
        )
    )
    service.start()

    def shut_down(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        service.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
