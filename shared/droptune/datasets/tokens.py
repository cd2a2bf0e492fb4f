"""Token counting: exact with the model's tokenizer when the caller has one, otherwise an estimate
whose method and error bound go into the report (issue 3, §4; M1.12).

The core never loads a tokenizer itself (no transformers import here): the caller injects
`count_tokens`, e.g. built from a `tokenizer.json` in a custom base model folder.
"""

from collections.abc import Callable
from dataclasses import dataclass

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class TokenMethod:
    description: str
    exact: bool
    relative_error: float  # the bound the report states; 0.0 when exact


ESTIMATE_METHOD = TokenMethod(
    description=(
        "estimate: ASCII characters / 4 plus one token per 2 UTF-8 bytes beyond ASCII; about ±25% "
        "for English prose, wider for code and for scripts other than Latin; chat-template tokens "
        "and images are not counted"
    ),
    exact=False,
    relative_error=0.25,
)


def exact_method(name: str = "the model's tokenizer") -> TokenMethod:
    return TokenMethod(f"exact: {name}; chat-template tokens and images are not counted", True, 0.0)


def estimate_tokens(text: str) -> int:
    """About 4 characters per token for English; CJK and similar scripts are closer to one token
    per character, which the extra UTF-8 bytes approximate (3 bytes → +1 token)."""
    length = len(text)
    if text.isascii():
        return (length + 3) // 4
    extra_bytes = len(text.encode("utf-8", "surrogatepass")) - length
    return (length + 3) // 4 + (extra_bytes + 1) // 2
