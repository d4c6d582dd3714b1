"""Shared-memory tensors on the inference path: a request's inputs read out of registered
regions and its outputs written into them, the two steps REST and gRPC share
(``transports/shared_memory_api.py`` and ``transports/shared_memory_rpc.py`` serve the
extension's own calls over the same :class:`SharedTensors`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pitstop import errors
from pitstop.protocol.datatype import datatype_of
from pitstop.protocol.raw_tensor import decode_raw, encode_raw
from pitstop.protocol.shared_memory import SharedOutput, shared_ref
from pitstop.protocol.tensor import InferRequest, InferResponse, RequestedOutput
from pitstop.transports.shared_memory import SharedMemory


class SharedTensors:
    """Requests' shared-memory references over ``regions`` (None: the extension is turned off;
    a request naming a region, and every call of the extension, is then refused with 501)."""

    def __init__(self, regions: SharedMemory | None) -> None:
        self._regions = regions

    def regions(self) -> SharedMemory:
        """The registered regions; Unsupported when the extension is turned off."""
        if self._regions is None:
            raise errors.Unsupported(
                "system shared memory is turned off on this server (PITSTOP_SYSTEM_SHARED_MEMORY)"
            )
        return self._regions

    def read_inputs(self, request: InferRequest) -> InferRequest:
        """``request`` with its shared-memory inputs read (copied) into arrays."""
        if not request.shared_inputs:
            return request
        regions = self.regions()
        inputs = dict(request.inputs)
        datatypes = dict(request.input_datatypes)
        for name, shared in request.shared_inputs.items():
            where = f"input {name!r}"
            data = regions.read(shared.ref, where)
            inputs[name] = decode_raw(shared.datatype, shared.shape, data, where)
            datatypes[name] = shared.datatype
        return dataclasses.replace(
            request, inputs=inputs, input_datatypes=datatypes, shared_inputs={}
        )

    def check_outputs(self, outputs: Sequence[RequestedOutput]) -> None:
        """Refuse, before the model runs, requested outputs whose reference is malformed or
        names an unknown region."""
        for output in outputs:
            ref = shared_ref(output.parameters, f"output {output.name!r}")
            if ref is not None:
                self.regions().check(ref, f"output {output.name!r}")

    def write_outputs(
        self, response: InferResponse, outputs: Sequence[RequestedOutput]
    ) -> InferResponse:
        """``response`` with the outputs requested into shared memory written there and
        described instead of carried."""
        refs = {
            output.name: ref
            for output in outputs
            if (ref := shared_ref(output.parameters, f"output {output.name!r}")) is not None
        }
        if not refs:
            return response
        regions = self.regions()
        kept = dict(response.outputs)
        written: dict[str, SharedOutput] = {}
        for name, ref in refs.items():
            array = kept.pop(name, None)
            if array is None:
                continue
            data = encode_raw(array)
            regions.write(ref, data, f"output {name!r}")
            written[name] = SharedOutput(datatype_of(array), array.shape, ref, len(data))
        return dataclasses.replace(response, outputs=kept, shared_outputs=written)
