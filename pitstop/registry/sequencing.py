"""The manifest's ``sequence`` section: a stateful model (Triton's sequence batcher), parsed
once when the manifest is pushed. Errors are InvalidInput naming the field.

    sequence:
      max_sequence_idle_microseconds: 60000000   # idle sequences expire (default 60 s)
      max_sequences: 1024                        # live sequences per model and server
      controls:                                  # inputs the server fills in, per request
        - {name: START, kind: start, datatype: INT32}    # 1 on a sequence's first request
        - {name: END, kind: end, datatype: INT32}        # 1 on its last
        - {name: READY, kind: ready, datatype: INT32}    # always 1
        - {name: CORRID, kind: corrid, datatype: UINT64} # the sequence id (BYTES: string ids)
      state:                                     # implicit state, carried between requests
        - {input: STATE_IN, output: STATE_OUT, datatype: FP32, shape: [1]}

Controls and state inputs are inputs of the model (declared in ``inputs`` like any other) that
clients never send; a state output is an output the server keeps for the sequence's next
request (zeros before the first) and never returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pitstop.errors import InvalidInput
from pitstop.protocol.datatype import DATATYPES

CONTROL_KINDS: Final = ("start", "end", "ready", "corrid")
FLAG_DATATYPES: Final = frozenset(
    {"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
     "FP16", "FP32", "FP64"}
)  # fmt: skip
"""Datatypes of start, end and ready controls (0 false, 1 true)."""
CORRID_DATATYPES: Final = frozenset({"INT32", "INT64", "UINT32", "UINT64", "BYTES"})
DEFAULT_IDLE_US: Final = 60_000_000
DEFAULT_MAX_SEQUENCES: Final = 1024
MAX_STATE_ELEMENTS: Final = 1 << 24
"""Elements in one state tensor (held per live sequence, so bounded)."""


@dataclass(frozen=True)
class Control:
    """An input the server supplies: which ``kind`` of value, in which datatype."""

    name: str
    kind: str
    datatype: str


@dataclass(frozen=True)
class StateSpec:
    """Implicit state: ``output`` of one request is ``input`` of the next (zeros at first)."""

    input: str
    output: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SequenceOptions:
    max_sequence_idle_microseconds: int = DEFAULT_IDLE_US
    max_sequences: int = DEFAULT_MAX_SEQUENCES
    controls: tuple[Control, ...] = ()
    state: tuple[StateSpec, ...] = ()

    @property
    def supplied_inputs(self) -> frozenset[str]:
        """Inputs the server fills in (clients never send them)."""
        return frozenset(c.name for c in self.controls) | {s.input for s in self.state}

    @property
    def kept_outputs(self) -> frozenset[str]:
        """Outputs the server keeps as state (never returned)."""
        return frozenset(s.output for s in self.state)

    @classmethod
    def parse(cls, section: Mapping[str, Any] | None) -> SequenceOptions | None:
        """``None`` when the model is not stateful (no section)."""
        if section is None:
            return None
        if not isinstance(section, Mapping):
            raise InvalidInput("sequence: expected a mapping")
        known = {"max_sequence_idle_microseconds", "max_sequences", "controls", "state"}
        for key in section:
            if key not in known:
                raise InvalidInput(f"sequence.{key}: unknown setting; known: {sorted(known)}")
        idle = _positive(section, "max_sequence_idle_microseconds", DEFAULT_IDLE_US)
        most = _positive(section, "max_sequences", DEFAULT_MAX_SEQUENCES)
        controls = tuple(
            _control(f"sequence.controls[{i}]", item)
            for i, item in enumerate(_list(section, "controls"))
        )
        state = tuple(
            _state(f"sequence.state[{i}]", item) for i, item in enumerate(_list(section, "state"))
        )
        names = [c.name for c in controls] + [s.input for s in state]
        if len(set(names)) != len(names):
            raise InvalidInput("sequence: a control or state input is named twice")
        kinds = [c.kind for c in controls]
        if len(set(kinds)) != len(kinds):
            raise InvalidInput("sequence.controls: a kind is given twice")
        if len({s.output for s in state}) != len(state):
            raise InvalidInput("sequence.state: an output is named twice")
        return cls(idle, most, controls, state)

    def to_json(self) -> dict[str, Any]:
        """The section as written; :meth:`parse` reads it back."""
        return {
            "max_sequence_idle_microseconds": self.max_sequence_idle_microseconds,
            "max_sequences": self.max_sequences,
            "controls": [
                {"name": c.name, "kind": c.kind, "datatype": c.datatype} for c in self.controls
            ],
            "state": [
                {
                    "input": s.input,
                    "output": s.output,
                    "datatype": s.datatype,
                    "shape": list(s.shape),
                }
                for s in self.state
            ],
        }


def _positive(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"sequence.{key}: expected an integer > 0, got {value!r}")
    return value


def _list(section: Mapping[str, Any], key: str) -> list[Any]:
    value = section.get(key, [])
    if not isinstance(value, list):
        raise InvalidInput(f"sequence.{key}: expected a list")
    return value


def _name(where: str, item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}.{key}: expected a non-empty string")
    return value


def _control(where: str, item: object) -> Control:
    if not isinstance(item, Mapping) or set(item) - {"name", "kind", "datatype"}:
        raise InvalidInput(f"{where}: expected {{name, kind, datatype}}")
    name, kind = _name(where, item, "name"), _name(where, item, "kind")
    if kind not in CONTROL_KINDS:
        raise InvalidInput(f"{where}.kind: expected one of {list(CONTROL_KINDS)}, got {kind!r}")
    allowed = CORRID_DATATYPES if kind == "corrid" else FLAG_DATATYPES
    datatype = item.get("datatype", "UINT64" if kind == "corrid" else "INT32")
    if datatype not in allowed:
        raise InvalidInput(f"{where}.datatype: expected one of {sorted(allowed)}, got {datatype!r}")
    return Control(name, kind, datatype)


def _state(where: str, item: object) -> StateSpec:
    if not isinstance(item, Mapping) or set(item) - {"input", "output", "datatype", "shape"}:
        raise InvalidInput(f"{where}: expected {{input, output, datatype, shape}}")
    datatype = item.get("datatype")
    if datatype not in DATATYPES or datatype in ("BYTES", "BF16"):
        raise InvalidInput(f"{where}.datatype: expected a numeric or BOOL datatype")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise InvalidInput(f"{where}.shape: expected a list of positive integers (fixed)")
    elements = 1
    for dim in shape:
        elements *= dim
    if elements > MAX_STATE_ELEMENTS:
        raise InvalidInput(f"{where}.shape: more than {MAX_STATE_ELEMENTS} elements")
    return StateSpec(_name(where, item, "input"), _name(where, item, "output"), datatype,
                     tuple(shape))  # fmt: skip
