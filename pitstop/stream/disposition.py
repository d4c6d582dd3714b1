"""What becomes of a message once its model call ended: pure decisions, table-tested.

=====================================  ==============================================
the call ended with                    the message
=====================================  ==============================================
an answer                              answered, then acknowledged
InvalidInput, Unsupported (its bytes)  dead-lettered at once, then acknowledged
Unavailable, Overloaded, NotFound      held and tried again in this process (the
(the server's state, not the message)  model loads, queues empty, an alias returns);
                                       given back at once when the consumer stops
anything else (the runtime raised,     given back for redelivery after a back-off
a deadline), delivery < max_deliver    (``backoff_s`` · 2^(delivery-1), capped)
the same at delivery max_deliver       dead-lettered, then acknowledged
=====================================  ==============================================

A message that arrives with more deliveries than ``max_deliver`` (the consumers holding it died
or stalled past ``ack_wait`` each time: a message that crashes its consumer) is dead-lettered
unread.
"""

from __future__ import annotations

import enum

from pitstop.errors import InvalidInput, NotFound, Overloaded, Unavailable, Unsupported


class Action(enum.Enum):
    ANSWER = "answer"
    DEAD = "dead"
    RETRY = "retry"
    HOLD = "hold"


def disposition(error: BaseException | None, delivery: int, max_deliver: int) -> Action:
    """What to do with a message whose call ended with ``error`` (None: it was answered) on
    its ``delivery``-th delivery."""
    if error is None:
        return Action.ANSWER
    if isinstance(error, InvalidInput | Unsupported):
        return Action.DEAD
    if holds(error):
        return Action.HOLD
    return Action.RETRY if delivery < max_deliver else Action.DEAD


def holds(error: BaseException | None) -> bool:
    """Whether ``error`` is the server's state (not the message's fault): hold and try again."""
    return isinstance(error, Unavailable | Overloaded | NotFound)


def backoff(delivery: int, base_s: float, cap_s: float) -> float:
    """Seconds before the next delivery of a message that failed on its ``delivery``-th."""
    return float(min(cap_s, base_s * 2 ** max(0, min(delivery - 1, 30))))


def exhausted(delivery: int, max_deliver: int) -> bool:
    """Whether a message arriving for the ``delivery``-th time goes to the dead letters
    unread."""
    return delivery > max_deliver
