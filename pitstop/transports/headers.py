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
