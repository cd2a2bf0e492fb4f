"""The local Cloud Scheduler: publishes a tick to the poller's topic at a fixed interval.

In a real project Cloud Scheduler publishes the same message body to the same topic.
Run: `python -m droptune_local.ticker --project P --topic poller-ticks --interval 5`
(PUBSUB_EMULATOR_HOST must point at the emulator).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType

from droptune.jsonlog import configure_logging, log_fields

log = logging.getLogger("droptune.ticker")

PUBLISH_TIMEOUT_S = 10.0


def tick_body(now: datetime) -> bytes:
    return json.dumps({"tick": now.isoformat()}).encode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="droptune_local.ticker")
    parser.add_argument("--project", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")
    args = parser.parse_args(argv)
    configure_logging("ticker")

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]

    publisher = pubsub_v1.PublisherClient(
        credentials=AnonymousCredentials()  # type: ignore[no-untyped-call, unused-ignore]
    )
    topic = publisher.topic_path(args.project, args.topic)
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("ticker started", extra=log_fields(topic=topic, interval_s=args.interval))
    while not stop.wait(args.interval):
        try:
            publisher.publish(topic, tick_body(datetime.now(UTC))).result(timeout=PUBLISH_TIMEOUT_S)
        except Exception:  # a missed tick is superseded by the next one; keep ticking
            log.exception("tick not published", extra=log_fields(topic=topic))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
