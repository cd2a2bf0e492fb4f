"""The one state machine of jobs: every change of state is a Firestore transaction (decision 4).

A transition reads the job, checks that its current state is the one expected and that the move
is legal (`record.TRANSITIONS`), then writes the new state, one history entry and, when the
transition is announced, the event itself into the document's outbox, all in one commit. The
event id is derived from the job, the transition's position in the history and its states, so
the same fact always carries the same id.

Publishing is exactly-once in practice: only the process whose transaction committed the
transition publishes its event, because the same transaction also writes a claim on the event
(`transition_claims/{event_id}`) with a lease. If that process dies before publishing, the event
waits in the outbox (`outbox_pending`) and the next poller tick takes the expired claim over and
publishes it, with the same id. Two pollers racing over the same job cannot both commit the same
transition: the loser's transaction re-reads the job, finds the state moved on, and does nothing.

Illegal or stale transitions are refused (None is returned) and logged, never raised: a refused
transition is the normal outcome of a duplicate delivery.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from droptune.events import Publisher, make_event
from droptune.jobs.record import (
    JOBS_COLLECTION,
    SLOT_STATES,
    SLOTS_COLLECTION,
    SLOTS_DOCUMENT,
    TRANSITION_CLAIMS_COLLECTION,
    JobState,
    event_summary,
    is_legal,
)
from droptune.jobs.vertex_access import CallCounts
from droptune.jsonlog import log_fields
from droptune.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

SOURCE = "//droptune/jobs"
# How long the process that committed a transition has to publish its event before another
# process may publish it in its place (a publish waits at most api_timeout_seconds).
CLAIM_LEASE = timedelta(seconds=120)
# Claims are kept long enough to outlive any redelivery, then Firestore's TTL policy deletes them.
CLAIM_RETENTION = timedelta(days=7)
# Contention on the allocator document is expected when many uploads land at once: Firestore
# aborts the losers. The client library retries an aborted transaction at once, which lets a few
# identical transactions abort one another for ever; each retry here waits a random, growing time.
TRANSACTION_ATTEMPTS = 12
# Allocations take a few reads and one transaction per job started: seconds at most.
ALLOCATOR_LEASE = timedelta(seconds=30)
ALLOCATOR_ATTEMPTS = 5
_BACKOFF_S = 0.02


@dataclass(frozen=True)
class EventSpec:
    """The event a transition announces; `data` adds to the job summary every event carries."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TransitionResult:
    job_id: str
    previous: JobState | None
    state: JobState
    document: dict[str, Any]
    event_ids: tuple[str, ...] = ()


class JobStore:
    """Reads and changes job documents; the only writer of `state`."""

    def __init__(
        self,
        settings: Settings,
        firestore: Any,
        publisher: Publisher,
        counts: CallCounts | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.db = firestore
        self.publisher = publisher
        self.counts = counts or CallCounts()
        self.clock = clock or (lambda: datetime.now(UTC))
        # Names this process in claims and launch leases (logs only; correctness never needs it).
        self.worker_id = uuid.uuid4().hex[:12]

    # --- reading ----------------------------------------------------------------------------

    def ref(self, job_id: str) -> Any:
        return self.db.collection(JOBS_COLLECTION).document(job_id)

    def get(self, job_id: str) -> dict[str, Any] | None:
        snapshot = self.ref(job_id).get(timeout=self.settings.api_timeout_seconds)
        self.counts.add(reads=1)
        return _document(snapshot) if snapshot.exists else None

    def query_states(self, states: Sequence[JobState], *, limit: int | None = None) -> list[dict[str, Any]]:
        """Jobs in any of `states`, oldest first (index: state, created_at)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self.db.collection(JOBS_COLLECTION)
            .where(filter=FieldFilter("state", "in", [s.value for s in states]))
            .order_by("created_at")
        )
        if limit is not None:
            query = query.limit(limit)
        documents = [_document(s) for s in query.stream(timeout=self.settings.api_timeout_seconds)]
        self.counts.add(reads=max(len(documents), 1))
        return documents

    def queue_position(self, queued_at: datetime | None) -> int:
        """1 for the head of the queue (index: state, queued_at)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self.db.collection(JOBS_COLLECTION).where(
            filter=FieldFilter("state", "==", JobState.QUEUED.value)
        )
        if queued_at is not None:
            query = query.where(filter=FieldFilter("queued_at", "<", queued_at))
        result = query.count().get(timeout=self.settings.api_timeout_seconds)
        self.counts.add(reads=1)
        return int(result[0][0].value) + 1

    # --- creating ---------------------------------------------------------------------------

    def create(
        self, document: Mapping[str, Any], state: JobState, *, event: EventSpec | None, reason: str
    ) -> TransitionResult | None:
        """Claim the job with one create(); None when it exists already (a repeated delivery)."""
        from google.api_core.exceptions import AlreadyExists, Conflict
        from google.cloud import firestore

        now = self.clock()
        job_id = str(document["job_id"])
        new = dict(document) | {
            "state": state.value,
            "state_changed_at": now,
            "updated_at": now,
            "history": [{"from": None, "to": state.value, "at": now, "reason": reason}],
        }
        batch = self.db.batch()
        entries = self._outbox_entries(new, None, state, 0, event, now)
        for entry in entries:
            batch.set(self._claim_ref(entry["id"]), self._claim(job_id, entry, now))
        new["outbox"] = entries
        new["outbox_pending"] = bool(entries)
        stored = new | {"created_at": firestore.SERVER_TIMESTAMP, "queued_at": firestore.SERVER_TIMESTAMP}
        batch.create(self.ref(job_id), stored)
        try:
            batch.commit(timeout=self.settings.api_timeout_seconds)
        except (AlreadyExists, Conflict):
            log.info("job already claimed", extra=log_fields(job_id=job_id))
            return None
        self.counts.add(writes=1 + len(entries))
        log.info("job created", extra=log_fields(job_id=job_id, state=state.value, reason=reason))
        result = TransitionResult(job_id, None, state, new, tuple(e["id"] for e in entries))
        self._publish_own(job_id, entries)
        return result

    # --- transitions ------------------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        *,
        expected: JobState | Iterable[JobState],
        to: JobState,
        fields: Mapping[str, Any] | None = None,
        event: EventSpec | None = None,
        reason: str = "",
        precondition: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> TransitionResult | None:
        """Move a job from one of `expected` to `to` in one transaction, or refuse and say why.

        `fields` are written with the state; `precondition` is checked on the current document
        inside the transaction (e.g. "the Vertex state is still the one I saw"). Returns None when
        refused: the job is missing, in another state, the move is illegal, or the precondition
        failed. The event, if any, is published after the commit.
        """
        from google.cloud import firestore

        allowed = {expected} if isinstance(expected, JobState) else set(expected)
        ref = self.ref(job_id)

        @firestore.transactional
        def run(transaction: Any) -> TransitionResult | None:
            snapshot = ref.get(transaction=transaction)
            self.counts.add(reads=1)
            if not snapshot.exists:
                log.warning("transition refused: no such job", extra=log_fields(job_id=job_id, to=to.value))
                return None
            document = _document(snapshot)
            current = JobState(document["state"])
            if current not in allowed:
                log.info(
                    "transition skipped: the job is no longer in the expected state",
                    extra=log_fields(
                        job_id=job_id,
                        state=current.value,
                        expected=sorted(s.value for s in allowed),
                        to=to.value,
                    ),
                )
                return None
            if precondition is not None and not precondition(document):
                log.info(
                    "transition skipped: precondition no longer holds",
                    extra=log_fields(job_id=job_id, state=current.value, to=to.value, reason=reason),
                )
                return None
            return self._apply(transaction, ref, document, to, fields or {}, event, reason)

        try:
            result: TransitionResult | None = self._transact(run)
        except IllegalTransitionError as error:
            log.warning(
                "illegal transition refused",
                extra=log_fields(job_id=job_id, problem=str(error), to=to.value, reason=reason),
            )
            return None
        if result is not None:
            self._after_commit(result)
        return result

    def update_fields(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        *,
        expected: JobState | Iterable[JobState] | None = None,
        precondition: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> bool:
        """Write fields other than the state (metrics, progress); False if the state moved on or
        `precondition`, checked on the current document inside the transaction, fails."""
        from google.cloud import firestore

        if expected is None and precondition is None:
            self.ref(job_id).update(
                dict(fields) | {"updated_at": self.clock()}, timeout=self.settings.api_timeout_seconds
            )
            self.counts.add(writes=1)
            return True
        allowed = (
            set(JobState)
            if expected is None
            else {expected}
            if isinstance(expected, JobState)
            else set(expected)
        )
        ref = self.ref(job_id)

        @firestore.transactional
        def run(transaction: Any) -> bool:
            snapshot = ref.get(transaction=transaction)
            self.counts.add(reads=1)
            if not snapshot.exists or JobState(snapshot.get("state")) not in allowed:
                return False
            if precondition is not None and not precondition(snapshot.to_dict() or {}):
                return False
            transaction.update(ref, dict(fields) | {"updated_at": self.clock()})
            self.counts.add(writes=1)
            return True

        updated: bool = self._transact(run)
        return updated

    def allocate_slots(
        self, limit: int, *, lease: timedelta, fields: Mapping[str, Any] | None = None
    ) -> list[TransitionResult]:
        """Move the oldest queued jobs to `launching`, as many as free slots allow (M1.11).

        One process at a time allocates: it holds the allocator document, created with one
        `create()` and deleted afterwards (a holder that died is replaced once its lease is over).
        While it holds it, nothing else moves a job into a slot, so the count of jobs in slot
        states is exact; jobs leave the slots by changing state, which needs no lock (a count
        read meanwhile can only be too high, never too low). A process that finds the allocator
        busy tries again briefly, then leaves its job queued for the holder or the next tick.

        (A transaction reading the slot count and the queue was tried first: with a handful of
        identical deliveries, the Firestore emulator aborted every one of them again and again.)
        """
        from google.cloud.firestore_v1.base_query import FieldFilter

        jobs = self.db.collection(JOBS_COLLECTION)
        token = uuid.uuid4().hex
        results: list[TransitionResult] = []
        for attempt in range(ALLOCATOR_ATTEMPTS):
            if not self._queue_head():
                return results
            holder = self._acquire_allocator(token)
            if holder is None:
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))  # noqa: S311 - jitter
                continue
            try:
                while True:
                    active = list(
                        jobs.where(filter=FieldFilter("state", "in", [s.value for s in SLOT_STATES]))
                        .select(["state"])
                        .stream(timeout=self.settings.api_timeout_seconds)
                    )
                    free = limit - len(active)
                    self.counts.add(reads=max(len(active), 1))
                    if free <= 0:
                        return results
                    queued = list(
                        jobs.where(filter=FieldFilter("state", "==", JobState.QUEUED.value))
                        .order_by("queued_at")
                        .limit(free)
                        .stream(timeout=self.settings.api_timeout_seconds)
                    )
                    self.counts.add(reads=max(len(queued), 1))
                    moved = [
                        result
                        for snapshot in queued
                        if (
                            result := self._to_launching(
                                snapshot,
                                token=token,
                                lease=lease,
                                fields=fields,
                                in_use=len(active),
                                limit=limit,
                            )
                        )
                    ]
                    results.extend(moved)
                    if not moved:
                        return results
            finally:
                self._release_allocator(holder)
        return results

    def _to_launching(
        self,
        snapshot: Any,
        *,
        token: str,
        lease: timedelta,
        fields: Mapping[str, Any] | None,
        in_use: int,
        limit: int,
    ) -> TransitionResult | None:
        attempts = int((snapshot.to_dict() or {}).get("launch_attempts") or 0) + 1
        return self.transition(
            snapshot.id,
            expected=JobState.QUEUED,
            to=JobState.LAUNCHING,
            fields=dict(fields or {})
            | {
                "launch_token": token,
                "launch_lease_until": self.clock() + lease,
                "launch_attempts": attempts,
                "launched_by": self.worker_id,
            },
            reason=f"a slot is free ({in_use} of {limit} in use)",
        )

    def _queue_head(self) -> bool:
        from google.cloud.firestore_v1.base_query import FieldFilter

        head = list(
            self.db.collection(JOBS_COLLECTION)
            .where(filter=FieldFilter("state", "==", JobState.QUEUED.value))
            .limit(1)
            .stream(timeout=self.settings.api_timeout_seconds)
        )
        self.counts.add(reads=1)
        return bool(head)

    def _acquire_allocator(self, token: str) -> Any | None:
        """The allocator document if this process now holds it, else None."""
        from google.api_core.exceptions import AlreadyExists, Conflict, FailedPrecondition, NotFound

        lock = self.db.collection(SLOTS_COLLECTION).document(SLOTS_DOCUMENT)
        now = self.clock()
        try:
            result = lock.create(
                {
                    "holder": self.worker_id,
                    "token": token,
                    "lease_until": now + ALLOCATOR_LEASE,
                    "expire_at": now + ALLOCATOR_LEASE,
                },
                timeout=self.settings.api_timeout_seconds,
            )
            self.counts.add(writes=1)
            return (lock, result.update_time)
        except (AlreadyExists, Conflict):
            pass
        snapshot = lock.get(timeout=self.settings.api_timeout_seconds)
        self.counts.add(reads=1)
        if snapshot.exists and _as_datetime((snapshot.to_dict() or {}).get("lease_until")) < now:
            # Its holder died mid-allocation: remove exactly that version, then try again.
            log.warning(
                "allocator lease expired; taking over",
                extra=log_fields(holder=(snapshot.to_dict() or {}).get("holder")),
            )
            try:
                lock.delete(
                    option=self.db.write_option(last_update_time=snapshot.update_time),
                    timeout=self.settings.api_timeout_seconds,
                )
                self.counts.add(writes=1)
            except (FailedPrecondition, NotFound):
                pass
        return None

    def _release_allocator(self, holder: Any) -> None:
        from google.api_core.exceptions import FailedPrecondition, NotFound

        lock, update_time = holder
        try:
            lock.delete(
                option=self.db.write_option(last_update_time=update_time),
                timeout=self.settings.api_timeout_seconds,
            )
            self.counts.add(writes=1)
        except (FailedPrecondition, NotFound):
            log.warning("allocator was taken over before release (the allocation took too long)")

    # --- the outbox ---------------------------------------------------------------------------

    def jobs_with_pending_events(self) -> list[dict[str, Any]]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self.db.collection(JOBS_COLLECTION).where(filter=FieldFilter("outbox_pending", "==", True))
        documents = [_document(s) for s in query.stream(timeout=self.settings.api_timeout_seconds)]
        self.counts.add(reads=max(len(documents), 1))
        return documents

    def publish_pending(self, document: Mapping[str, Any]) -> int:
        """Publish what a job's outbox still holds, taking over claims whose lease has expired."""
        from google.cloud import firestore

        job_id = str(document["job_id"])
        published: list[str] = []
        settled: list[str] = []
        for entry in document.get("outbox") or []:
            claim_ref = self._claim_ref(entry["id"])
            now = self.clock()

            @firestore.transactional
            def take(
                transaction: Any,
                claim_ref: Any = claim_ref,
                entry: Mapping[str, Any] = entry,
                now: datetime = now,
            ) -> str:
                claim = claim_ref.get(transaction=transaction)
                self.counts.add(reads=1)
                if claim.exists and claim.get("published"):
                    return "settled"
                if claim.exists and _as_datetime((claim.to_dict() or {}).get("lease_until")) > now:
                    return "busy"
                transaction.set(claim_ref, self._claim(job_id, entry, now))
                self.counts.add(writes=1)
                return "mine"

            outcome = self._transact(take)
            if outcome == "settled":
                settled.append(entry["id"])
            elif outcome == "mine" and self._publish(job_id, entry):
                published.append(entry["id"])
        if published or settled:
            self._settle(job_id, published, settled)
        return len(published)

    # --- internals ---------------------------------------------------------------------------

    def _transact(self, function: Callable[[Any], T]) -> T:
        """Run a `@firestore.transactional` function, retrying aborts with jittered backoff."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                return function(self.db.transaction(max_attempts=1))
            except ValueError as error:
                # The library's way of saying "aborted" once its own attempts are used up.
                if "Failed to commit transaction" not in str(error) or attempt == TRANSACTION_ATTEMPTS - 1:
                    raise
            time.sleep(random.uniform(0, _BACKOFF_S * 2 ** min(attempt, 6)))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    def _apply(  # noqa: PLR0917 - internal, called from two transactions
        self,
        transaction: Any,
        ref: Any,
        document: Mapping[str, Any],
        to: JobState,
        fields: Mapping[str, Any],
        event: EventSpec | None,
        reason: str,
    ) -> TransitionResult:
        current = JobState(document["state"])
        if not is_legal(current, to):
            raise IllegalTransitionError(f"{current.value} → {to.value} is not a legal transition")
        now = self.clock()
        history = list(document.get("history") or [])
        sequence = len(history)
        history.append({"from": current.value, "to": to.value, "at": now, "reason": reason})
        changes: dict[str, Any] = dict(fields) | {"state": to.value, "updated_at": now, "history": history}
        if to is not current:
            changes["state_changed_at"] = now
        new = dict(document) | changes
        entries = self._outbox_entries(new, current, to, sequence, event, now)
        for entry in entries:
            transaction.set(self._claim_ref(entry["id"]), self._claim(str(document["job_id"]), entry, now))
        outbox = list(document.get("outbox") or []) + entries
        changes |= {"outbox": outbox, "outbox_pending": bool(outbox)}
        new |= {"outbox": outbox, "outbox_pending": bool(outbox)}
        transaction.update(ref, changes)
        self.counts.add(writes=1 + len(entries))
        return TransitionResult(str(document["job_id"]), current, to, new, tuple(e["id"] for e in entries))

    def _outbox_entries(  # noqa: PLR0917 - internal
        self,
        document: Mapping[str, Any],
        previous: JobState | None,
        to: JobState,
        sequence: int,
        event: EventSpec | None,
        now: datetime,
    ) -> list[dict[str, Any]]:
        if event is None:
            return []
        job_id = str(document["job_id"])
        data = _json_safe(
            event_summary(document)
            | {"previous_state": previous.value if previous else None, "sequence": sequence}
            | dict(event.data)
        )
        cloud_event = make_event(
            event.type,
            source=SOURCE,
            subject=f"jobs/{job_id}",
            data=data,
            discriminator=f"{sequence}:{previous.value if previous else ''}->{to.value}",
            now=now,
        )
        return [{"id": cloud_event.id, "body": cloud_event.to_json(), "attributes": cloud_event.attributes()}]

    def _claim_ref(self, event_id: str) -> Any:
        return self.db.collection(TRANSITION_CLAIMS_COLLECTION).document(event_id)

    def _claim(self, job_id: str, entry: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "event_type": entry["body"]["type"],
            "claimed_by": self.worker_id,
            "lease_until": now + CLAIM_LEASE,
            "published": False,
            "expire_at": now + CLAIM_RETENTION,
        }

    def _after_commit(self, result: TransitionResult) -> None:
        log.info(
            "job state changed",
            extra=log_fields(
                job_id=result.job_id,
                previous=result.previous.value if result.previous else None,
                state=result.state.value,
            ),
        )
        entries = [e for e in result.document.get("outbox") or [] if e["id"] in result.event_ids]
        self._publish_own(result.job_id, entries)

    def _publish_own(self, job_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
        published = [entry["id"] for entry in entries if self._publish(job_id, entry)]
        if published:
            self._settle(job_id, published, [])

    def _publish(self, job_id: str, entry: Mapping[str, Any]) -> bool:
        try:
            self.publisher.publish_json(self.settings.events_topic, entry["body"], entry["attributes"])
        except Exception:  # the event stays in the outbox; the next poller tick publishes it
            log.warning(
                "event not published yet; it stays in the job's outbox",
                exc_info=True,
                extra=log_fields(job_id=job_id, event_id=entry["id"], type=entry["body"]["type"]),
            )
            return False
        log.info(
            "event published",
            extra=log_fields(job_id=job_id, event_id=entry["id"], type=entry["body"]["type"]),
        )
        return True

    def _settle(self, job_id: str, published: Sequence[str], settled: Sequence[str]) -> None:
        """Mark claims published and drop the entries from the job's outbox, in one transaction."""
        from google.cloud import firestore

        ref = self.ref(job_id)
        done = set(published) | set(settled)
        now = self.clock()

        @firestore.transactional
        def run(transaction: Any) -> None:
            snapshot = ref.get(transaction=transaction)
            self.counts.add(reads=1)
            for event_id in published:
                transaction.update(self._claim_ref(event_id), {"published": True, "published_at": now})
            if snapshot.exists:
                outbox = [e for e in snapshot.get("outbox") or [] if e["id"] not in done]
                transaction.update(ref, {"outbox": outbox, "outbox_pending": bool(outbox)})
            self.counts.add(writes=len(published) + 1)

        self._transact(run)


class IllegalTransitionError(ValueError):
    """A move the state machine does not allow (refused and logged by `transition`)."""


def _document(snapshot: Any) -> dict[str, Any]:
    document: dict[str, Any] = snapshot.to_dict() or {}
    document.setdefault("job_id", snapshot.id)
    return document


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
