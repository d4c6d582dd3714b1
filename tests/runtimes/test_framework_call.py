"""framework_call: how every runtime translates what its framework raises."""

from __future__ import annotations

import pytest

from pitstop.errors import InternalError, InvalidInput, PitstopError, Unavailable
from pitstop.runtimes.signature import framework_call


class Refused(Exception):
    pass


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (ValueError("NaN in column 2"), InvalidInput, "input 'x': NaN in column 2"),
        (Refused("bad rank"), InvalidInput, "input 'x': bad rank"),
        (RuntimeError("CUDA exploded"), InternalError, "the model failed: CUDA exploded"),
        (Unavailable("not loaded"), Unavailable, "not loaded"),  # pitstop's own pass through
    ],
)
def test_framework_errors_become_pitstop_errors(
    raised: Exception, expected: type[PitstopError], message: str
) -> None:
    with (
        pytest.raises(expected) as caught,
        framework_call(
            "the model failed", lambda exc: f"input 'x': {exc}", refusals=(ValueError, Refused)
        ),
    ):
        raise raised
    assert str(caught.value) == message
