"""The names of pitstop's own response headers (HTTP) and trailing metadata (gRPC)."""

from __future__ import annotations

from typing import Final

VERSION_HEADER: Final = "pitstop-model-version"
"""The version number that answered."""
DIGEST_HEADER: Final = "pitstop-model-digest"
"""That version's content digest."""
FALLBACK_HEADER: Final = "pitstop-fallback"
"""Set when the traffic policy's fallback answered; its value says why."""
TRUNCATED_HEADER: Final = "pitstop-truncated"
"""OpenAI embeddings: how many texts were cut to the model's maximum length."""
PREDICTION_HEADER: Final = "pitstop-prediction-id"
"""The answer's prediction id (the response's id), for feedback."""


def header_safe(value: str | None) -> str | None:
    """``value`` if it can be sent as a header value as it is (printable ASCII, at most 128
    characters), else None: a caller's id is echoed in the body only."""
    if value and len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None
