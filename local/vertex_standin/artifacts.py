"""Datasets in and checkpoints out, through Cloud Storage (the emulator when STORAGE_EMULATOR_HOST is set).

The checkpoint layout is the one the open-model tuning service produces (SPEC M1.8):
`<output>/postprocess/node-0/checkpoints/{checkpoint-N,final}/model-0000k-of-0000n.safetensors`,
with the index file Hugging Face needs to load shards and the config and tokenizer beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from google.cloud import storage  # type: ignore[attr-defined, unused-ignore]  # seen or not, by entry point

STORAGE_TIMEOUT_S = 120.0
CHECKPOINTS_FOLDER = "postprocess/node-0/checkpoints"
_SAFETENSORS_INDEX = "model.safetensors.index.json"


class DatasetUnreadableError(ValueError):
    """The dataset object cannot be read; the message names the URI."""


def split_gs_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ValueError(f"{uri} is not a gs:// URI")
    bucket, _, path = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise ValueError(f"{uri} names no bucket")
    return bucket, path.strip("/")


@cache
def storage_client(project: str) -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client(project=project)


def read_dataset_text(uri: str, project: str) -> str:
    try:
        bucket, path = split_gs_uri(uri)
    except ValueError as error:
        raise DatasetUnreadableError(f"Dataset {uri} could not be read: {error}") from error
    from google.api_core import exceptions

    try:
        data: bytes = (
            storage_client(project).bucket(bucket).blob(path).download_as_bytes(timeout=STORAGE_TIMEOUT_S)
        )
    except exceptions.NotFound as error:
        raise DatasetUnreadableError(f"Dataset {uri} could not be read: the object does not exist") from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetUnreadableError(f"Dataset {uri} is not UTF-8 text (byte {error.start})") from error


def ensure_bucket(uri: str, project: str) -> None:
    """Create the bucket behind `uri` if it is missing (the emulator starts empty)."""
    from google.api_core import exceptions

    bucket, _ = split_gs_uri(uri)
    client = storage_client(project)
    with contextlib.suppress(exceptions.Conflict):  # it exists already: fine
        client.create_bucket(bucket, timeout=STORAGE_TIMEOUT_S)


def upload_folder(local: Path, uri: str, project: str) -> list[str]:
    bucket_name, prefix = split_gs_uri(uri)
    bucket = storage_client(project).bucket(bucket_name)
    written = []
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        name = f"{prefix}/{file.relative_to(local).as_posix()}".lstrip("/")
        bucket.blob(name).upload_from_filename(str(file), timeout=STORAGE_TIMEOUT_S)
        written.append(f"gs://{bucket_name}/{name}")
    return written


def download_folder(uri: str, local: Path, project: str) -> Path:
    bucket_name, prefix = split_gs_uri(uri)
    client = storage_client(project)
    blobs = list(
        client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None, timeout=STORAGE_TIMEOUT_S)
    )
    if not blobs:
        raise DatasetUnreadableError(f"{uri} holds no files")
    for blob in blobs:
        relative = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
        if not relative or relative.endswith("/"):
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target), timeout=STORAGE_TIMEOUT_S)
    return local


def name_shards_as_vertex(folder: Path) -> list[str]:
    """Rename a single `model.safetensors` to `model-00001-of-00001.safetensors` plus an index.

    Hugging Face names a lone shard `model.safetensors`; the tuning service always writes the
    numbered form, and the index lets `from_pretrained` load it back.
    """
    single = folder / "model.safetensors"
    if single.exists() and not (folder / _SAFETENSORS_INDEX).exists():
        from safetensors import safe_open

        shard = "model-00001-of-00001.safetensors"
        with safe_open(str(single), framework="pt") as handle:
            names = list(handle.keys())
        single.rename(folder / shard)
        index: dict[str, Any] = {
            "metadata": {"total_size": (folder / shard).stat().st_size},
            "weight_map": dict.fromkeys(names, shard),
        }
        (folder / _SAFETENSORS_INDEX).write_text(json.dumps(index, indent=1))
    return sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
