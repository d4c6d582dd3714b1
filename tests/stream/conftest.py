"""The broker of each stream test: NATS JetStream and Redis Streams in turn, with streams made
for the test and deleted after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stream.brokers import Streams, streams


@pytest.fixture(params=["nats", "redis"])
def where(request: pytest.FixtureRequest) -> Iterator[Streams]:
    made = streams(request.param)
    yield made
    made.teardown()
