"""What becomes of a message after its model call (a table over the error and delivery)."""

from __future__ import annotations

import pytest

from pitstop.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    RegistryUnavailable,
    Unavailable,
    Unsupported,
)
from pitstop.stream.disposition import Action, backoff, disposition, exhausted


@pytest.mark.parametrize(
    ("error", "delivery", "want"),
    [
        (None, 1, Action.ANSWER),
        (None, 9, Action.ANSWER),
        (InvalidInput("x"), 1, Action.DEAD),
        (PayloadTooLarge("x"), 1, Action.DEAD),
        (Unsupported("x"), 2, Action.DEAD),
        (Unavailable("loading"), 1, Action.HOLD),
        (Unavailable("loading"), 5, Action.HOLD),
        (RegistryUnavailable("down"), 1, Action.HOLD),
        (Overloaded("full"), 3, Action.HOLD),
        (ModelNotFound("gone"), 1, Action.HOLD),
        (InternalError("boom"), 1, Action.RETRY),
        (InternalError("boom"), 2, Action.RETRY),
        (InternalError("boom"), 3, Action.DEAD),
        (DeadlineExceeded("slow"), 1, Action.RETRY),
        (RuntimeError("a defect"), 1, Action.RETRY),
        (RuntimeError("a defect"), 3, Action.DEAD),
    ],
)
def test_disposition(error: BaseException | None, delivery: int, want: Action) -> None:
    assert disposition(error, delivery, max_deliver=3) is want


@pytest.mark.parametrize(
    ("delivery", "want"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (60, 5.0)]
)
def test_backoff_doubles_up_to_its_cap(delivery: int, want: float) -> None:
    assert backoff(delivery, 0.5, 5.0) == want


@pytest.mark.parametrize(("delivery", "want"), [(1, False), (3, False), (4, True)])
def test_a_message_past_max_deliver_is_exhausted(delivery: int, want: bool) -> None:
    assert exhausted(delivery, 3) is want
