"""Images of multimodal examples (M1.4): JPEG, PNG or WEBP, as gs:// objects or base64 data: URLs.

`data:` URLs are decoded here and checked by magic bytes. `gs://` objects are checked by the
caller's injected `check_gcs_images`, once per distinct URI after the file has streamed by, so
the core never opens a network client.
"""

import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

SUPPORTED_MIME_TYPES = ("image/jpeg", "image/png", "image/webp")

# If the images live in another bucket than the JSONL, both service agents need objectUser on it
# (https://cloud.google.com/vertex-ai/generative-ai/docs/models/open-model-tuning).
CROSS_BUCKET_IAM_REMEDY = (
    "Grant roles/storage.objectUser on the image bucket to "
    "service-PROJECT_NUMBER@gcp-sa-vertex-moss-ft.iam.gserviceaccount.com and "
    "service-PROJECT_NUMBER@gcp-sa-aiplatform.iam.gserviceaccount.com."
)


class ImageProblemKind(StrEnum):
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    UNSUPPORTED_TYPE = "unsupported_type"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ImageProblem:
    kind: ImageProblemKind
    detail: str = ""


GcsImageChecker = Callable[[Sequence[str]], Mapping[str, ImageProblem | None]]


def sniff_image_type(head: bytes) -> str | None:
    """The MIME type of a supported image from its first bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class UrlProblem:
    code: str
    message: str
    remedy: str


def check_data_url(url: str) -> UrlProblem | None:
    """A `data:image/...;base64,` URL must decode and hold the type it declares."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        return UrlProblem(
            "image_data_url_malformed",
            "The data: URL is not of the form data:image/TYPE;base64,DATA.",
            "Encode the image as data:image/jpeg;base64,<base64 bytes> (or png, webp).",
        )
    declared = header[len("data:") : -len(";base64")].lower()
    if declared not in SUPPORTED_MIME_TYPES:
        return UrlProblem(
            "image_type_unsupported",
            f"The data: URL declares {declared or 'no type'!r}.",
            f"Use one of {', '.join(SUPPORTED_MIME_TYPES)}.",
        )
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error as error:
        return UrlProblem(
            "image_base64_invalid",
            f"The base64 data of the image does not decode ({error}).",
            "Encode the image bytes with standard base64 (no line breaks, no URL-safe alphabet).",
        )
    actual = sniff_image_type(data[:16])
    if actual is None:
        return UrlProblem(
            "image_type_unsupported",
            "The decoded data: URL is not a JPEG, PNG or WEBP image.",
            f"Convert the image to one of {', '.join(SUPPORTED_MIME_TYPES)}.",
        )
    if actual != declared:
        return UrlProblem(
            "image_type_mismatch",
            f"The data: URL declares {declared} but holds {actual}.",
            f"Declare data:{actual};base64,…",
        )
    return None


def bucket_of(uri: str) -> str | None:
    if not uri.startswith("gs://"):
        return None
    return uri[len("gs://") :].split("/", 1)[0] or None


def describe_gcs_problem(uri: str, problem: ImageProblem, dataset_bucket: str | None) -> UrlProblem:
    """Message and remedy for a gs:// image the caller found missing, forbidden or unusable."""
    detail = f" ({problem.detail})" if problem.detail else ""
    if problem.kind is ImageProblemKind.NOT_FOUND:
        return UrlProblem(
            "image_not_found", f"The image {uri} does not exist{detail}.", "Upload it or fix the URI."
        )
    if problem.kind is ImageProblemKind.FORBIDDEN:
        other_bucket = dataset_bucket is not None and bucket_of(uri) != dataset_bucket
        remedy = (
            CROSS_BUCKET_IAM_REMEDY
            if other_bucket
            else "Give the tuning service agents read access (roles/storage.objectUser) to the bucket."
        )
        return UrlProblem(
            "image_forbidden", f"The image {uri} cannot be read: access denied{detail}.", remedy
        )
    if problem.kind is ImageProblemKind.UNSUPPORTED_TYPE:
        return UrlProblem(
            "image_type_unsupported",
            f"The image {uri} is not a JPEG, PNG or WEBP image{detail}.",
            f"Convert it to one of {', '.join(SUPPORTED_MIME_TYPES)}.",
        )
    return UrlProblem("image_unreadable", f"The image {uri} could not be read{detail}.", "Check the object.")
