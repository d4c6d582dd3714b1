"""Sequences at their seams: the request parameters, the pure admission decision (tables), and
the live table with a fake clock and fake loaded versions."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from pitstop.errors import Conflict, InternalError, InvalidInput, NotFound, Overloaded
from pitstop.protocol.reference import VersionRef
from pitstop.protocol.tensor import InferRequest, InferResponse, RequestedOutput
from pitstop.registry.sequencing import Control, SequenceOptions, StateSpec
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.sequence import (
    Admission,
    Live,
    SequenceFlags,
    Sequences,
    admit,
    sequence_flags,
)
from pitstop.serving.version_policy import VersionState
from tests.serving.fakes import record


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, None),
        ({"sequence_id": 0}, None),
        ({"sequence_id": ""}, None),
        ({"sequence_id": 7}, SequenceFlags(7, False, False)),
        ({"sequence_id": "a", "sequence_start": True}, SequenceFlags("a", True, False)),
        ({"sequence_id": 2**64 - 1, "sequence_end": True}, SequenceFlags(2**64 - 1, False, True)),
    ],
)
def test_sequence_flags(parameters: dict[str, Any], expected: SequenceFlags | None) -> None:
    assert sequence_flags(parameters) == expected


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({"sequence_start": True}, "need a non-zero parameters.sequence_id"),
        ({"sequence_id": 0, "sequence_end": True}, "need a non-zero"),
        ({"sequence_id": True}, "must be an integer or a string"),
        ({"sequence_id": 1.5}, "must be an integer or a string"),
        ({"sequence_id": -3}, "within 1..2^64-1"),
        ({"sequence_id": 2**64}, "within 1..2^64-1"),
        ({"sequence_id": "x" * 257}, "longer than 256"),
        ({"sequence_id": 1, "sequence_start": "yes"}, "sequence_start must be a bool"),
    ],
)
def test_bad_sequence_parameters_name_the_field(parameters: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(fragment)):
        sequence_flags(parameters)


OPTIONS = SequenceOptions(max_sequence_idle_microseconds=1_000_000, max_sequences=2)


def live(last_used: float = 10.0, busy: int = 0) -> Live:
    return Live(1, False, OPTIONS, {}, last_used, busy)


START = SequenceFlags(5, True, False)
NEXT = SequenceFlags(5, False, False)


@pytest.mark.parametrize(
    ("known", "expired", "flags", "now", "count", "most", "expected"),
    [
        (None, False, START, 10.0, 0, 2, Admission.START),
        (live(), False, START, 10.0, 2, 2, Admission.START),  # a restart needs no room
        (live(), False, NEXT, 10.5, 1, None, Admission.CONTINUE),
        (live(), False, NEXT, 11.5, 1, None, Admission.EXPIRED),  # idle past 1 s
        (live(busy=1), False, NEXT, 11.5, 1, None, Admission.CONTINUE),  # never while busy
        (None, True, NEXT, 12.0, 0, None, Admission.EXPIRED),  # swept, remembered
    ],
)
def test_admit(
    known: Live | None,
    expired: bool,
    flags: SequenceFlags,
    now: float,
    count: int,
    most: int | None,
    expected: Admission,
) -> None:
    assert admit(known, expired, flags, now, count, most, "m") == expected


def test_admit_refuses_a_sequence_never_started_and_one_past_the_bound() -> None:
    with pytest.raises(InvalidInput, match="must specify the START flag"):
        admit(None, False, NEXT, 10.0, 0, None, "m")
    with pytest.raises(Overloaded, match="2 live sequences"):
        admit(None, False, START, 10.0, 2, 2, "m")


STATEFUL = SequenceOptions(
    max_sequence_idle_microseconds=1_000_000,
    max_sequences=4,
    controls=(Control("START", "start", "BOOL"), Control("ID", "corrid", "UINT64")),
    state=(StateSpec("S", "S_NEXT", "FP32", (2,)),),
)


class Versions:
    """Loaded versions of model 'm' by number; 'production' → ``current``."""

    def __init__(self) -> None:
        self.versions: dict[int, LoadedVersion] = {}
        self.current = 1

    def add(self, number: int, options: SequenceOptions | None) -> None:
        base = record("m", number)
        manifest = dataclasses.replace(base.manifest, sequence=options)
        self.versions[number] = LoadedVersion(
            dataclasses.replace(base, manifest=manifest), VersionState.READY, datetime.now(UTC)
        )

    def resolve(self, ref: VersionRef) -> LoadedVersion:
        number = self.current if ref is None else ref
        if not isinstance(number, int) or number not in self.versions:
            raise NotFound(f"version {ref} is not served")
        return self.versions[number]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sequence_runs_on_its_version_with_controls_and_state() -> None:
    versions, clock = Versions(), Clock()
    versions.add(1, STATEFUL)
    sequences = Sequences(clock)
    pick = lambda: (None, False)  # noqa: E731
    ticket = sequences.admit("m", None, SequenceFlags(9, True, False), versions.resolve, pick)
    fed = sequences.request(ticket, "m", InferRequest({"x": np.ones((1, 4), np.float32)},
                                                      outputs=(RequestedOutput("y"),)))  # fmt: skip
    assert fed.inputs["START"].tolist() == [True]
    assert fed.inputs["ID"].tolist() == [9]
    assert fed.inputs["S"].tolist() == [0.0, 0.0]  # zeros before the first request
    assert {o.name for o in fed.outputs} == {"y", "S_NEXT"}  # the state is asked for
    answer = InferResponse("m", "1", {"y": np.ones(1), "S_NEXT": np.array([1.0, 2.0])})
    assert set(sequences.keep(ticket, "m", answer).outputs) == {"y"}
    sequences.release(ticket)
    # The next request sees that state, START false; then the version goes away.
    ticket = sequences.admit("m", None, SequenceFlags(9, False, False), versions.resolve, pick)
    fed = sequences.request(ticket, "m", InferRequest({}))
    assert (fed.inputs["START"].tolist(), fed.inputs["S"].tolist()) == ([False], [1.0, 2.0])
    with pytest.raises(InternalError, match="state output 'S_NEXT'"):
        sequences.keep(ticket, "m", InferResponse("m", "1", {"y": np.ones(1)}))
    sequences.release(ticket)
    versions.add(2, STATEFUL)
    versions.current = 2
    with pytest.raises(InvalidInput, match="runs on version 1"):
        sequences.admit("m", 2, SequenceFlags(9, False, False), versions.resolve, pick)
    del versions.versions[1]
    with pytest.raises(Conflict, match="started on version 1, which no longer serves"):
        sequences.admit("m", None, SequenceFlags(9, False, False), versions.resolve, pick)
    assert len(sequences) == 0


def test_idle_sequences_are_swept_and_remembered_as_expired() -> None:
    versions, clock = Versions(), Clock()
    versions.add(1, STATEFUL)
    sequences = Sequences(clock)
    pick = lambda: (None, False)  # noqa: E731
    for sequence in (1, 2):
        ticket = sequences.admit("m", None, SequenceFlags(sequence, True, False),
                                 versions.resolve, pick)  # fmt: skip
        sequences.release(ticket)
    clock.now += 5
    ticket = sequences.admit("m", None, SequenceFlags(3, True, False), versions.resolve, pick)
    assert len(sequences) == 1  # 1 and 2 were swept
    sequences.release(ticket)
    with pytest.raises(InvalidInput, match="expired"):
        sequences.admit("m", None, SequenceFlags(1, False, False), versions.resolve, pick)
    versions.add(3, None)
    versions.current = 3
    with pytest.raises(InvalidInput, match="not stateful"):
        sequences.admit("m", None, SequenceFlags(8, False, False), versions.resolve, pick)
    ticket = sequences.admit("m", 1, SequenceFlags(4, True, False), versions.resolve, pick)
    with pytest.raises(InvalidInput, match="supplied by the server"):
        sequences.request(ticket, "m", InferRequest({"S": np.zeros(2, np.float32)}))
    sequences.failed(ticket, "m")  # a failed START leaves nothing behind
    sequences.release(ticket)
    with pytest.raises(InvalidInput, match="must specify the START flag"):
        sequences.admit("m", 1, SequenceFlags(4, False, False), versions.resolve, pick)
