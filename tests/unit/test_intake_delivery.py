"""The validator core against in-memory storage, Firestore and Pub/Sub (issue 3 §3 and §8).

What is checked here needs control the emulators do not give: a publish that fails half way, how
many image reads run at once, an image bucket that denies access. The fakes implement only the
calls `Intake` makes, and record the timeout of each one (STYLE: timeouts on every blocking call).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.api_core.exceptions import Forbidden, NotFound, ServiceUnavailable

from droptune.datasets import ImageProblem, ImageProblemKind
from droptune.envelopes import StorageObject
from droptune.intake import IMAGE_CHECK_PARALLELISM, Intake, IntakeResult, describe_image_head
from droptune.settings import Settings

BUCKET = "data"
SCOUT = "meta/llama4@llama-4-scout-17b-16e-instruct"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 24
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 16
GIF = b"GIF89a" + b"\x00" * 24


# --- the fakes ----------------------------------------------------------------------------------


@dataclass
class FakeStorage:
    """Objects by (bucket, name); buckets in `forbidden` answer 403 like one the agent cannot read."""

    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    unavailable: set[str] = field(default_factory=set)
    uploads: list[str] = field(default_factory=list)
    head_reads: Counter[str] = field(default_factory=Counter)
    timeouts: list[float | None] = field(default_factory=list)
    read_delay_s: float = 0.0
    barrier: threading.Barrier | None = None
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bucket(self, name: str) -> FakeBucket:
        return FakeBucket(self, name)


@dataclass
class FakeBucket:
    storage: FakeStorage
    name: str

    def blob(self, name: str, generation: int | None = None) -> FakeBlob:
        return FakeBlob(self.storage, self.name, name)

    def get_blob(self, name: str, timeout: float | None = None) -> FakeBlob | None:
        self.storage.timeouts.append(timeout)
        return FakeBlob(self.storage, self.name, name) if (self.name, name) in self.storage.objects else None


@dataclass
class FakeBlob:
    storage: FakeStorage
    bucket: str
    name: str

    def open(self, mode: str, **kwargs: Any) -> io.BytesIO:
        self.storage.timeouts.append(kwargs.get("timeout"))
        try:
            return io.BytesIO(self.storage.objects[(self.bucket, self.name)])
        except KeyError:
            raise NotFound(f"gs://{self.bucket}/{self.name}") from None

    def upload_from_string(self, data: str, **kwargs: Any) -> None:
        self.storage.timeouts.append(kwargs.get("timeout"))
        self.storage.objects[(self.bucket, self.name)] = data.encode()
        self.storage.uploads.append(self.name)

    @property
    def size(self) -> int | None:
        data = self.storage.objects.get((self.bucket, self.name))
        return None if data is None else len(data)

    def download_as_bytes(
        self, start: int | None = None, end: int | None = None, timeout: float | None = None
    ) -> bytes:
        storage = self.storage
        storage.timeouts.append(timeout)
        uri = f"gs://{self.bucket}/{self.name}"
        with storage.lock:
            storage.head_reads[uri] += 1
            storage.in_flight += 1
            storage.most_in_flight = max(storage.most_in_flight, storage.in_flight)
        try:
            if storage.barrier is not None:
                # Only as many reads at once as the barrier has parties can pass it: serial
                # checks would break it (BrokenBarrierError fails the test).
                storage.barrier.wait()
            time.sleep(storage.read_delay_s)
            if self.bucket in storage.unavailable:
                raise ServiceUnavailable("backend error")
            if self.bucket in storage.forbidden:
                raise Forbidden(f"validator@ does not have storage.objects.get access to {uri}")
            try:
                data = storage.objects[(self.bucket, self.name)]
            except KeyError:
                raise NotFound(f"No such object: {self.bucket}/{self.name}") from None
            return data[start or 0 : None if end is None else end + 1]
        finally:
            with storage.lock:
                storage.in_flight -= 1


@dataclass
class FakeSnapshot:
    data: dict[str, Any] | None

    @property
    def exists(self) -> bool:
        return self.data is not None

    def to_dict(self) -> dict[str, Any] | None:
        return None if self.data is None else dict(self.data)


@dataclass
class FakeDocument:
    db: FakeFirestore
    key: str

    def get(self, timeout: float | None = None) -> FakeSnapshot:
        self.db.timeouts.append(timeout)
        return FakeSnapshot(self.db.documents.get(self.key))

    def set(self, document: dict[str, Any], timeout: float | None = None) -> None:
        self.db.timeouts.append(timeout)
        self.db.documents[self.key] = dict(document)

    def update(self, fields: dict[str, Any], timeout: float | None = None) -> None:
        self.db.timeouts.append(timeout)
        if self.key not in self.db.documents:
            raise NotFound(self.key)
        self.db.documents[self.key] |= fields


@dataclass
class FakeCollection:
    db: FakeFirestore
    name: str

    def document(self, document_id: str) -> FakeDocument:
        return FakeDocument(self.db, f"{self.name}/{document_id}")


@dataclass
class FakeFirestore:
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeouts: list[float | None] = field(default_factory=list)

    def collection(self, name: str) -> FakeCollection:
        return FakeCollection(self, name)


@dataclass
class FakePublisher:
    """Messages by topic; `fail_on` names a topic whose next publish raises, as an outage would."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_on: str | None = None

    def publish_json(self, topic: str, body: Any, attributes: Any) -> str:
        if topic == self.fail_on:
            self.fail_on = None
            raise ServiceUnavailable(f"publish to {topic} failed")
        self.messages.append((topic, dict(body)))
        return str(len(self.messages))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [body for name, body in self.messages if name == topic]

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [body for body in self.on(SETTINGS.events_topic) if body["type"] == event_type]


SETTINGS = Settings.from_environ(
    {"DROPTUNE_PROJECT": "my-project-123", "DROPTUNE_DATASETS_BUCKET": BUCKET, "DROPTUNE_DEPLOY": "never"}
)


@dataclass
class World:
    storage: FakeStorage = field(default_factory=FakeStorage)
    firestore: FakeFirestore = field(default_factory=FakeFirestore)
    publisher: FakePublisher = field(default_factory=FakePublisher)

    @property
    def intake(self) -> Intake:
        return Intake(SETTINGS, self.storage, self.firestore, self.publisher)

    def upload(self, name: str, data: bytes, metadata: dict[str, str] | None = None) -> StorageObject:
        self.storage.objects[(BUCKET, name)] = data
        return StorageObject(
            bucket=BUCKET, name=name, generation="1700000000000001", size=len(data), metadata=metadata or {}
        )

    def report(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.storage.objects[(BUCKET, name + ".report.json")])
        return result

    def all_timeouts(self) -> list[float | None]:
        return self.storage.timeouts + self.firestore.timeouts


def chat_jsonl(count: int) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": f"Hello {i}"}]}
        for i in range(count)
    ]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def image_chat(url: str) -> dict[str, Any]:
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        ]
    }


def same_answer(first: IntakeResult, second: IntakeResult) -> bool:
    keys = ("outcome", "dataset_id", "job_id", "report_uri")
    return all(getattr(first, key) == getattr(second, key) for key in keys)


# --- a repeated delivery (§8) -------------------------------------------------------------------


def test_a_repeated_delivery_of_a_valid_upload_gives_the_same_answer_and_no_second_tune_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    obj = world.upload("datasets/a/train.jsonl", chat_jsonl(12))

    first = world.intake.handle(obj, "event-1")
    report_after_first = world.report(obj.name)
    with caplog.at_level(logging.INFO, logger="droptune.intake"):
        second = world.intake.handle(obj, "event-1")

    assert first.outcome == "validated" and first.job_id, first
    assert same_answer(first, second), (first, second)
    assert second.reason == first.reason, "the answer repeats the recorded verdict line"
    assert len(world.publisher.on(SETTINGS.tune_topic)) == 1, "exactly one tune request"
    assert len(world.publisher.events("droptune.dataset.validated")) == 1
    assert world.storage.uploads == [obj.name + ".report.json"], "the report is written once"
    assert world.report(obj.name) == report_after_first
    duplicate = [r for r in caplog.records if r.getMessage() == "duplicate delivery"]
    assert duplicate and duplicate[0].fields["dataset_id"] == first.dataset_id  # type: ignore[attr-defined]
    assert None not in world.all_timeouts(), "every storage and Firestore call has a timeout"


def test_a_repeated_delivery_of_an_invalid_upload_is_not_rejected_twice() -> None:
    world = World()
    obj = world.upload("datasets/a/broken.jsonl", chat_jsonl(2) + b'{"messages": [\n')

    first = world.intake.handle(obj, "event-1")
    second = world.intake.handle(obj, "event-2")

    assert first.outcome == "rejected" and first.report_uri, first
    assert same_answer(first, second), (first, second)
    assert second.reason == first.reason
    assert len(world.publisher.events("droptune.dataset.rejected")) == 1
    assert world.publisher.on(SETTINGS.tune_topic) == []


def test_a_repeated_delivery_with_bad_options_is_not_rejected_twice() -> None:
    world = World()
    world.storage.objects[(BUCKET, "datasets/a/train.manifest.json")] = b"{not json"
    obj = world.upload("datasets/a/train.jsonl", chat_jsonl(3))

    first = world.intake.handle(obj, "event-1")
    second = world.intake.handle(obj, "event-1")

    assert first.outcome == "rejected", first
    assert same_answer(first, second), (first, second)
    assert len(world.publisher.events("droptune.dataset.rejected")) == 1
    assert world.report(obj.name)["errors"][0]["code"] == "invalid_manifest"


def test_a_crash_between_the_record_and_the_publish_publishes_on_redelivery() -> None:
    world = World()
    obj = world.upload("datasets/a/train.jsonl", chat_jsonl(12))
    world.publisher.fail_on = SETTINGS.events_topic  # the tune request goes out, the event does not

    with pytest.raises(ServiceUnavailable):
        world.intake.handle(obj, "event-1")
    (record,) = world.firestore.documents.values()
    assert record["state"] == "validated" and "announced_at" not in record, record

    redelivered = world.intake.handle(obj, "event-1")
    again = world.intake.handle(obj, "event-1")

    assert redelivered.outcome == "validated"
    assert same_answer(redelivered, again)
    validated = world.publisher.events("droptune.dataset.validated")
    assert len(validated) == 1, "the event the crash lost is published once, on the redelivery"
    # At least once: the tune request of the failed try went out and is sent again; the launcher
    # takes one job per job id.
    requests = world.publisher.on(SETTINGS.tune_topic)
    assert [r["job_id"] for r in requests] == [redelivered.job_id] * 2
    (record,) = world.firestore.documents.values()
    assert record["announced_at"] is not None


# --- gs:// images (§3) --------------------------------------------------------------------------


def test_each_distinct_image_is_read_once_and_at_most_the_parallelism_at_a_time() -> None:
    world = World()
    distinct = [f"gs://{BUCKET}/images/{i}.png" for i in range(2 * IMAGE_CHECK_PARALLELISM)]
    for uri in distinct:
        world.storage.objects[(BUCKET, uri.removeprefix(f"gs://{BUCKET}/"))] = PNG
    world.storage.barrier = threading.Barrier(IMAGE_CHECK_PARALLELISM, timeout=10)

    results = world.intake._check_images(distinct * 3)

    assert results == dict.fromkeys(distinct), "every image is a PNG"
    assert set(world.storage.head_reads.values()) == {1}, world.storage.head_reads
    assert world.storage.most_in_flight == IMAGE_CHECK_PARALLELISM
    assert None not in world.storage.timeouts


def test_a_png_with_wrong_bytes_a_missing_and_a_forbidden_image_are_named_in_the_report() -> None:
    world = World()
    for name, data in {
        "ok.png": PNG,
        "ok.jpg": JPEG,
        "ok.webp": WEBP,
        "gif.png": GIF,
        "empty.png": b"",
    }.items():
        world.storage.objects[(BUCKET, f"images/{name}")] = data
    world.storage.forbidden.add("partner-bucket")
    urls = [f"gs://{BUCKET}/images/{n}" for n in ("ok.png", "ok.jpg", "ok.webp", "gif.png", "empty.png")]
    urls += [f"gs://{BUCKET}/images/missing.png", "gs://partner-bucket/cat.png"]
    examples = [image_chat(url) for url in urls * 2]
    data = b"".join(json.dumps(example).encode() + b"\n" for example in examples)
    obj = world.upload("datasets/a/pictures.jsonl", data, {"droptune-base-model": SCOUT})

    result = world.intake.handle(obj, "event-1")

    assert result.outcome == "rejected", result
    errors = {e["code"] + " " + e["message"] for e in world.report(obj.name)["errors"]}
    assert any(
        e.startswith("image_type_unsupported") and "gif.png" in e and "GIF image" in e for e in errors
    ), errors
    assert any(e.startswith("image_type_unsupported") and "empty.png" in e and "empty" in e for e in errors)
    assert any(e.startswith("image_not_found") and "missing.png" in e for e in errors), errors
    assert any(e.startswith("image_forbidden") and "partner-bucket" in e for e in errors), errors
    assert not any("ok." in e for e in errors), "JPEG, PNG and WEBP pass"
    assert len(errors) == 4, errors
    assert set(world.storage.head_reads.values()) == {1}, "each image read once though used twice"


def test_an_image_check_that_fails_transiently_raises_so_the_upload_is_retried() -> None:
    world = World()
    world.storage.unavailable.add("flaky-bucket")
    obj = world.upload(
        "datasets/a/pictures.jsonl",
        json.dumps(image_chat("gs://flaky-bucket/cat.png")).encode() + b"\n",
        {"droptune-base-model": SCOUT},
    )

    with pytest.raises(ServiceUnavailable):
        world.intake.handle(obj, "event-1")
    assert world.publisher.messages == [], "nothing is announced about an image nobody could read"
    assert world.firestore.documents == {}


def test_a_missing_object_is_not_found() -> None:
    world = World()
    uri = f"gs://{BUCKET}/images/gone.png"
    assert world.intake._check_images([uri]) == {uri: ImageProblem(ImageProblemKind.NOT_FOUND)}


@pytest.mark.parametrize(
    ("head", "looks"),
    [
        (GIF, "a GIF image"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 8, "a HEIC/HEIF image"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "a RIFF file of type b'WAVE', not WEBP"),
        (b'{"not": "an image"}', "JSON text"),
        (b"\x89PNX\r\n\x1a\n\x00", "match no JPEG, PNG or WEBP signature"),
        (b"", "the object is empty"),
    ],
)
def test_an_unsupported_image_is_described_by_what_its_bytes_look_like(head: bytes, looks: str) -> None:
    assert looks in describe_image_head(head[:16])


# --- exact token counts (§4) --------------------------------------------------------------------


def one_token_per_word_tokenizer() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {"[UNK]": 0, "Hi": 1, "Hello": 2}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str().encode()


def test_a_custom_base_models_own_tokenizer_gives_exact_counts() -> None:
    world = World()
    world.storage.objects[("ckpt", "tuned/job-1/final/tokenizer.json")] = one_token_per_word_tokenizer()
    obj = world.upload(
        "datasets/a/train.jsonl",
        chat_jsonl(12),
        {
            "droptune-base-model": "meta/llama3_1@llama-3.1-8b",
            "droptune-custom-base-model": "gs://ckpt/tuned/job-1/final/",
        },
    )
    assert world.intake.handle(obj, "event-1").outcome == "validated"
    tokens = world.report(obj.name)["tokens"]
    assert tokens["method"].startswith(
        "exact: the tokenizer.json at gs://ckpt/tuned/job-1/final/tokenizer.json"
    )
    # "Hi 3" and "Hello 3": two words each, so exactly 4 tokens per example, 48 in all.
    assert tokens["total_tokens"] == 48


def test_without_a_tokenizer_at_hand_the_counts_are_an_estimate_that_says_so() -> None:
    world = World()
    obj = world.upload(
        "datasets/a/train.jsonl",
        chat_jsonl(12),
        {
            "droptune-base-model": "meta/llama3_1@llama-3.1-8b",
            "droptune-custom-base-model": "gs://ckpt/none/",
        },
    )
    assert world.intake.handle(obj, "event-1").outcome == "validated"
    assert world.report(obj.name)["tokens"]["method"].startswith("estimate")
