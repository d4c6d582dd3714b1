"""The request log as an observer: one line per request the caller sent — its final attempt —
none for a failed arm a fallback answered, a shadow copy or a body refused before decoding."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pitstop.errors import InternalError, InvalidInput
from pitstop.monitoring.attempt import Attempt
from pitstop.monitoring.logs import RequestLog
from pitstop.protocol.tensor import InferRequest

REQUEST = InferRequest(inputs={"x": np.ones((1, 2), np.float32)}, id="req-1")


def attempt(**changes: object) -> Attempt:
    fields: dict[str, object] = {
        "model": "m", "registered": True, "version": 2, "digest": "sha256:d",
        "transport": "rest", "request": REQUEST, "metadata": None, "started_ns": 0,
        "elapsed_ns": 1_000_000, "request_ns": 3_000_000,
    }  # fmt: skip
    return Attempt(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attempts", "lines"),
    [
        ([attempt()], [("ok", 2, None, 3.0)]),
        (  # the canary failed, the fallback answered: one line, for the answer
            [
                attempt(version=1, error=InternalError("boom"), final=False, routed=True),
                attempt(fallback="error"),
            ],
            [("ok", 2, "error", 3.0)],
        ),
        ([attempt(error=InternalError("boom"))], [("internal", None, None, 3.0)]),
        ([attempt(transport="shadow")], []),
        ([attempt(version=None, request=None, error=InvalidInput("body"))], []),
    ],
)
def test_one_line_per_request(
    attempts: list[Attempt],
    lines: list[tuple[str, int | None, str | None, float]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("pitstop.test.requests")
    log = RequestLog(logger=logger, trace_id=lambda: "0af7651916cd43dd8448eb211c80319c")
    with caplog.at_level(logging.INFO, logger=logger.name):
        for each in attempts:
            log.observe_attempt(each)
    fields = [record.fields for record in caplog.records]  # type: ignore[attr-defined]
    got = [(f["status"], f["version"], f.get("fallback"), f["latency_ms"]) for f in fields]
    assert got == lines
    assert all(f["request_id"] == "req-1" for f in fields)
    assert all(f["trace_id"] == "0af7651916cd43dd8448eb211c80319c" for f in fields)
