"""Atheris (libFuzzer) targets for the three decoders a client's bytes reach first.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python bench/fuzz/targets.py json   -runs=1000000 -rss_limit_mb=2048 corpus/json
    .venv/bin/python bench/fuzz/targets.py binary -runs=1000000 -rss_limit_mb=2048 corpus/binary
    .venv/bin/python bench/fuzz/targets.py grpc   -runs=1000000 -rss_limit_mb=2048 corpus/grpc

``json``: a body without the binary extension (orjson, then the V2 JSON decoder).
``binary``: the binary tensor extension: the first 2 bytes of the input choose the
Inference-Header-Content-Length (a length within the body, or, above 0xF000, those two bytes
as the header's text), the rest is the body.
``grpc``: a serialized ModelInferRequest (protobuf parse, then typed and raw contents to arrays,
and the worker-process normalisation of typed contents).

The promise under test: a decoder either returns a request or raises InvalidInput (the 400 /
INVALID_ARGUMENT a client sees, PayloadTooLarge's 413 included) or Unsupported (501, a datatype
such as BF16 this server does not serve); anything else (another exception,
a crash, a hang, memory past -rss_limit_mb) is a finding. Inputs are at most -max_len bytes
(libFuzzer's default grows to 4096); the server's body limit bounds memory the same way, with
the factors docs/hostile-input.md states. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from google.protobuf.message import DecodeError

    from pitstop.errors import InvalidInput, Unsupported
    from pitstop.protocol.binary_codec import decode_body
    from pitstop.transports import grpc_convert as convert
    from pitstop.transports.proto import inference_pb2 as pb

SEEDS = {
    "json": [
        b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
        b'{"inputs":[{"name":"t","shape":[2],"datatype":"BYTES","data":["a","b"]}],'
        b'"outputs":[{"name":"t","parameters":{"binary_data":true}}],"parameters":{"timeout":5}}',
    ],
}
_BINARY_HEAD = (
    b'{"inputs":[{"name":"t","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":5}},'
    b'{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}'
)
SEEDS["binary"] = [len(_BINARY_HEAD).to_bytes(2, "little") + _BINARY_HEAD + b"\1\0\0\0a" + bytes(8)]


def _grpc_seed() -> bytes:
    message = pb.ModelInferRequest(model_name="iris", model_version="1")
    tensor = message.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    return message.SerializeToString()


def plant(corpus: Path, name: str) -> None:
    """Seed an empty corpus folder with valid requests, so mutation starts near them."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    seeds = SEEDS.get(name) or [_grpc_seed()]
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(seed)


def _json(data: bytes) -> None:
    decode_body(data, None)


def _binary(data: bytes) -> None:
    selector, body = int.from_bytes(data[:2], "little"), data[2:]
    # Below 0xF000: a JSON length within the body, as clients send it; above: garbage.
    length = str(selector % (len(body) + 1)) if selector < 0xF000 else data[:2].decode("latin-1")
    decode_body(body, length)


def _grpc(data: bytes) -> None:
    try:
        request = convert.parse(pb.ModelInferRequest, data)
    except DecodeError:
        return  # the transport answers INVALID_ARGUMENT "not a valid ModelInferRequest"
    convert.decode_infer_request(request)
    normal = convert.normalize_infer(data, None)
    decode_body(normal.body, normal.header_length)


TARGETS: dict[str, Callable[[bytes], None]] = {"json": _json, "binary": _binary, "grpc": _grpc}


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in TARGETS:
        sys.exit(f"usage: targets.py {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[name]

    def one(data: bytes) -> None:
        # A clear 400 / 413 / 501 (gRPC INVALID_ARGUMENT / UNIMPLEMENTED) is the promise kept.
        with contextlib.suppress(InvalidInput, Unsupported):
            target(data)

    corpora = [a for a in sys.argv[2:] if not a.startswith("-")]
    if corpora:
        plant(Path(corpora[0]), name)
    argv = [sys.argv[0], *sys.argv[2:]]
    atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
