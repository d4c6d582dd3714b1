"""Stateful models: the requests of one sequence, in order, on one version, with the controls
and implicit state the model's manifest declares (Triton's sequence batcher, ``sequence``
extension; the manifest's section is :mod:`pitstop.registry.sequencing`).

A request names its sequence with the parameters ``sequence_id`` (a non-zero integer or a
non-empty string), ``sequence_start`` and ``sequence_end``. The first request (START) pins the
sequence to the version that serves it (the traffic policy's arm when no version is named);
every later request of the sequence runs on that version, one at a time in arrival order, with
the controls (START, END, READY, CORRID) and the state inputs filled in; the state outputs are
kept for the next request and never returned. END forgets the sequence.

Sequences never move between versions: once a version swap unloads the version a sequence
started on, its next request is refused (409, naming the version) and the client starts the
sequence again; a sequence never silently continues on another version's state. A sequence idle
longer than ``max_sequence_idle_microseconds`` expires: its next request is refused saying so.
Sequences live in this server's memory: replicas do not share them (route a sequence's requests
to one replica, e.g. by a sticky header at the load balancer), and a restart forgets them.

:func:`sequence_flags` and :func:`admit` are pure; :class:`Sequences` keeps the live ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from pitstop.errors import Conflict, InternalError, InvalidInput, Overloaded, PitstopError
from pitstop.protocol.datatype import numpy_dtype
from pitstop.protocol.reference import VersionRef
from pitstop.protocol.tensor import InferRequest, InferResponse, RequestedOutput
from pitstop.registry.sequencing import Control, SequenceOptions
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.parameters import bool_parameter

SEQUENCE_ID: Final = "sequence_id"
SEQUENCE_START: Final = "sequence_start"
SEQUENCE_END: Final = "sequence_end"
MAX_ID_CHARS: Final = 256
EXPIRED_REMEMBERED: Final = 4096
"""Expired sequence ids remembered, so a late request hears 'expired', not 'unknown'."""
SWEEP_EVERY_S: Final = 1.0

SequenceId = int | str
_ID_RANGES: Final = {
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
"""Integer sequence ids each CORRID datatype holds."""


@dataclass(frozen=True)
class SequenceFlags:
    id: SequenceId
    start: bool
    end: bool


def sequence_flags(parameters: Mapping[str, Any]) -> SequenceFlags | None:
    """The sequence a request belongs to, from its parameters; None when it names none."""
    raw = parameters.get(SEQUENCE_ID)
    start = bool_parameter(parameters, SEQUENCE_START)
    end = bool_parameter(parameters, SEQUENCE_END)
    if raw is None or raw == 0 or raw == "":
        if start or end:
            raise InvalidInput(
                f"parameters.{SEQUENCE_START}/{SEQUENCE_END} need a non-zero "
                f"parameters.{SEQUENCE_ID}"
            )
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InvalidInput(f"parameters.{SEQUENCE_ID} must be an integer or a string")
    if isinstance(raw, int) and not 0 < raw < 2**64:
        raise InvalidInput(f"parameters.{SEQUENCE_ID} must be within 1..2^64-1, got {raw}")
    if isinstance(raw, str) and len(raw) > MAX_ID_CHARS:
        raise InvalidInput(f"parameters.{SEQUENCE_ID} is longer than {MAX_ID_CHARS} characters")
    return SequenceFlags(raw, start, end)


@dataclass
class Live:
    """One live sequence. Mutated only on the event loop."""

    version: int
    routed: bool
    options: SequenceOptions
    state: dict[str, np.ndarray]
    last_used: float
    busy: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Admission(enum.Enum):
    START = "start"
    CONTINUE = "continue"
    EXPIRED = "expired"


def admit(
    live: Live | None,
    expired: bool,
    flags: SequenceFlags,
    now: float,
    count: int,
    most: int | None,
    model: str,
) -> Admission:
    """What to do with a request of sequence ``flags.id``: ``live`` is the sequence if known,
    ``expired`` whether it expired lately, ``count`` the model's live sequences and ``most``
    its bound (None until a version is known). Raises InvalidInput for a sequence that never
    started, Overloaded when a new one would pass the bound."""
    if flags.start:
        if live is None and most is not None and count >= most:
            raise Overloaded(
                f"model {model!r} has {count} live sequences (max {most}); end or let some "
                "expire, or retry later"
            )
        return Admission.START  # a START on a live sequence restarts it, as in Triton
    if live is None:
        if expired:
            return Admission.EXPIRED
        raise InvalidInput(
            f"inference request for sequence {flags.id} to model {model!r} must specify the "
            "START flag on the first request of the sequence (parameters.sequence_start: true; "
            "it may also have ended)"
        )
    idle_s = live.options.max_sequence_idle_microseconds / 1e6
    if live.busy == 0 and now - live.last_used > idle_s:
        return Admission.EXPIRED
    return Admission.CONTINUE


@dataclass(frozen=True)
class Ticket:
    """A request admitted to its sequence: where it runs and what the model sees."""

    live: Live
    flags: SequenceFlags
    version: VersionRef
    started: bool
    batched: bool


class Sequences:
    """The live sequences of one server, keyed by (model, sequence id)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._live: dict[tuple[str, SequenceId], Live] = {}
        self._expired: OrderedDict[tuple[str, SequenceId], None] = OrderedDict()
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._live)

    def admit(
        self,
        model: str,
        version: VersionRef,
        flags: SequenceFlags,
        resolve: Callable[[VersionRef], LoadedVersion],
        pick: Callable[[], tuple[VersionRef, bool]],
    ) -> Ticket:
        """Admit a request: start, restart or continue its sequence. ``resolve`` finds a
        loaded version, ``pick`` the traffic policy's arm (and whether a policy chose it)."""
        now = self._clock()
        self._sweep(now)
        key = (model, flags.id)
        live = self._live.get(key)
        count = sum(1 for m, _ in self._live if m == model) if flags.start else 0
        most = None
        loaded = None
        routed = False
        if flags.start:
            target, routed = (version, False) if version is not None else pick()
            loaded = resolve(target)
            most = _options(loaded, model).max_sequences
        elif live is None:  # a stateless model hears so, not 'START missing'
            _options(resolve(version if version is not None else pick()[0]), model)
        verdict = admit(live, key in self._expired, flags, now, count, most, model)
        if verdict is Admission.EXPIRED:
            self._forget(key, expired=True)
            raise InvalidInput(
                f"sequence {flags.id} of model {model!r} expired: no request came within its "
                "idle time (max_sequence_idle_microseconds); start it again "
                "(parameters.sequence_start: true)"
            )
        if verdict is Admission.START:
            assert loaded is not None
            options = _options(loaded, model)
            state = {s.input: np.zeros(s.shape, numpy_dtype(s.datatype)) for s in options.state}
            live = Live(loaded.record.number, routed, options, state, now)
            self._live[key] = live
            self._expired.pop(key, None)
        assert live is not None
        pinned: VersionRef = live.version
        if not flags.start:
            if version is not None and resolve(version).record.number != live.version:
                raise InvalidInput(
                    f"sequence {flags.id} of model {model!r} runs on version {live.version}; "
                    "send its requests without a version, or to that one"
                )
            try:
                loaded = resolve(pinned)
            except PitstopError:
                self._forget(key)
                raise Conflict(
                    f"sequence {flags.id} of model {model!r} started on version {live.version}, "
                    "which no longer serves here (a version swap or unload); its state is gone, "
                    "start the sequence again (parameters.sequence_start: true)"
                ) from None
        assert loaded is not None
        live.busy += 1
        live.last_used = now
        batched = loaded.record.manifest.batching is not None
        return Ticket(live, flags, pinned, flags.start, batched)

    def request(self, ticket: Ticket, model: str, request: InferRequest) -> InferRequest:
        """``request`` with the sequence's controls and state inputs, asking for its state
        outputs too when it names the outputs it wants."""
        options = ticket.live.options
        sent = sorted(set(request.inputs) & options.supplied_inputs)
        if sent:
            raise InvalidInput(
                f"input {sent[0]!r} is supplied by the server to stateful model {model!r} "
                "(a sequence control or state); do not send it"
            )
        inputs = dict(request.inputs)
        datatypes = dict(request.input_datatypes)
        shape = (1, 1) if ticket.batched else (1,)
        for control in options.controls:
            inputs[control.name] = _control_value(control, ticket, shape)
            datatypes[control.name] = control.datatype
        for state in options.state:
            inputs[state.input] = ticket.live.state[state.input]
            datatypes[state.input] = state.datatype
        outputs = request.outputs
        if outputs:
            named = {o.name for o in outputs}
            outputs = (*outputs, *(RequestedOutput(n) for n in options.kept_outputs - named))
        return dataclasses.replace(
            request, inputs=inputs, input_datatypes=datatypes, outputs=outputs
        )

    def keep(self, ticket: Ticket, model: str, response: InferResponse) -> InferResponse:
        """Keep the state outputs of ``response`` for the next request; the response without
        them. An END request forgets the sequence."""
        live = ticket.live
        kept = dict(response.outputs)
        for state in live.options.state:
            array = kept.pop(state.output, None)
            if array is None or array.shape != state.shape:
                got = "nothing" if array is None else f"shape {list(array.shape)}"
                raise InternalError(
                    f"stateful model {model!r} gave {got} for state output {state.output!r}, "
                    f"declared {list(state.shape)}"
                )
            live.state[state.input] = np.array(array, dtype=numpy_dtype(state.datatype))
        if ticket.flags.end:
            self._forget((model, ticket.flags.id))
        return dataclasses.replace(response, outputs=kept)

    def failed(self, ticket: Ticket, model: str) -> None:
        """The request failed. A failed START leaves no sequence behind (it never produced a
        state: its next request must start again); a later request's failure keeps the
        sequence and its state as they were."""
        if ticket.started and self._live.get((model, ticket.flags.id)) is ticket.live:
            self._forget((model, ticket.flags.id))

    def release(self, ticket: Ticket) -> None:
        """The request left its sequence (served or failed)."""
        ticket.live.busy -= 1
        ticket.live.last_used = self._clock()

    def _forget(self, key: tuple[str, SequenceId], *, expired: bool = False) -> None:
        self._live.pop(key, None)
        if expired:
            self._expired[key] = None
            while len(self._expired) > EXPIRED_REMEMBERED:
                self._expired.popitem(last=False)

    def _sweep(self, now: float) -> None:
        """Expire idle sequences (at most once a second), so their state does not linger."""
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        for key, live in list(self._live.items()):
            idle_s = live.options.max_sequence_idle_microseconds / 1e6
            if live.busy == 0 and now - live.last_used > idle_s:
                self._forget(key, expired=True)


def _options(loaded: LoadedVersion, model: str) -> SequenceOptions:
    options = loaded.record.manifest.sequence
    if options is None:
        raise InvalidInput(
            f"model {model!r} version {loaded.record.number} is not stateful (its manifest has "
            "no sequence section): parameters.sequence_id is for stateful models"
        )
    return options


def _control_value(control: Control, ticket: Ticket, shape: tuple[int, ...]) -> np.ndarray:
    if control.kind == "corrid":
        sequence_id = ticket.flags.id
        if control.datatype == "BYTES":
            return np.array([str(sequence_id).encode()], dtype=object).reshape(shape)
        low, high = _ID_RANGES[control.datatype]
        if not isinstance(sequence_id, int) or not low <= sequence_id <= high:
            raise InvalidInput(
                f"parameters.sequence_id {sequence_id!r}: this model's sequence ids are "
                f"{control.datatype} integers"
            )
        dtype = numpy_dtype(control.datatype)
        return np.full(shape, sequence_id, dtype=dtype)
    value = {"start": ticket.started, "end": ticket.flags.end, "ready": True}[control.kind]
    return np.full(shape, 1 if value else 0, dtype=numpy_dtype(control.datatype))
