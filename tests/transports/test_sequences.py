"""Stateful models (Triton's sequence extension) through Triton's own clients: a running sum
per sequence id kept in implicit state, interleaved sequences over REST, gRPC and the gRPC
stream, controls filled in by the server, expiry, END, and a version swap that ends sequences
clearly instead of mixing versions."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry, wait_for
from tests.transports.served import transport_server, triton_client

SUM_HANDLER = '''\
import numpy as np


class Model:
    """OUTPUT is the running sum of INPUT over the sequence (STATE_IN starts at 0 and is
    ignored on START); CORR echoes the sequence id (a string id: its length), FIRST the START
    control."""

    @staticmethod
    def corr(sequence_id):
        return len(sequence_id) if isinstance(sequence_id, bytes) else sequence_id

    def predict(self, inputs):
        previous = 0 if inputs["START"][0] else inputs["STATE_IN"][0]
        total = np.array([previous + inputs["INPUT"][0]], dtype=np.int32)
        assert inputs["READY"][0] == 1
        return {
            "OUTPUT": total * FACTOR,
            "STATE_OUT": total,
            "CORR": np.array([self.corr(inputs["CORRID"][0])], dtype=np.uint64),
            "FIRST": inputs["START"].astype(np.int32),
        }
'''


def make_sum_package(
    directory: Path, *, factor: int = 1, idle_us: int = 60_000_000, corrid: str = "UINT64"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(SUM_HANDLER.replace("FACTOR", str(factor)))
    scalar = [1]

    def tensor(name: str, datatype: str = "INT32") -> dict[str, Any]:
        return {"name": name, "datatype": datatype, "shape": scalar}

    return mf.write_manifest(
        directory,
        {
            "runtime": "python",
            "inputs": [
                tensor("INPUT"),
                tensor("START"),
                tensor("READY"),
                tensor("CORRID", corrid),
                tensor("STATE_IN"),
            ],
            "outputs": [
                tensor("OUTPUT"),
                tensor("STATE_OUT"),
                tensor("CORR", "UINT64"),
                tensor("FIRST"),
            ],
            "parameters": {"handler": "handler:Model"},
            "sequence": {
                "max_sequence_idle_microseconds": idle_us,
                "controls": [
                    {"name": "START", "kind": "start", "datatype": "INT32"},
                    {"name": "READY", "kind": "ready", "datatype": "INT32"},
                    {"name": "CORRID", "kind": "corrid", "datatype": corrid},
                ],
                "state": [
                    {"input": "STATE_IN", "output": "STATE_OUT", "datatype": "INT32", "shape": [1]},
                ],
            },
        },
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    def push_sum_models(registry: Registry, src: Path) -> None:
        for name, idle_us, corrid in (
            ("acc", 60_000_000, "UINT64"),
            ("brief", 1_000_000, "UINT64"),
            ("named", 60_000_000, "BYTES"),
        ):
            registry.push(
                make_sum_package(src / name, idle_us=idle_us, corrid=corrid), name=name,
                aliases=["production"], actor="test", trust_code=True,
            )  # fmt: skip

    yield from transport_server(tmp_path_factory, push_sum_models)


def value(module: Any, number: int) -> list[Any]:
    x = module.InferInput("INPUT", [1], "INT32")
    x.set_data_from_numpy(np.array([number], dtype=np.int32))
    return [x]


def step(client: Any, model: str, sequence: int | str, number: int, **flags: bool) -> int:
    module = thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc
    result = client.infer(model, value(module, number), sequence_id=sequence, **flags)
    return int(result.as_numpy("OUTPUT")[0])


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    made = triton_client(request.param, server)
    yield made
    made.close()


def test_interleaved_sequences_keep_their_own_running_sums(client: Any) -> None:
    a, b, text = 1001, 1002, "session-a"
    assert step(client, "acc", a, 1, sequence_start=True) == 1
    assert step(client, "acc", b, 10, sequence_start=True) == 10
    assert step(client, "named", text, 100, sequence_start=True) == 100
    assert step(client, "acc", a, 2) == 3
    assert step(client, "acc", b, 20) == 30
    assert step(client, "named", text, 200) == 300
    assert step(client, "acc", a, 3, sequence_end=True) == 6
    assert step(client, "acc", b, 30, sequence_end=True) == 60
    # START on a live sequence restarts it (Triton's behaviour).
    assert step(client, "named", text, 5, sequence_start=True) == 5
    assert step(client, "named", text, 1, sequence_end=True) == 6
    # String ids need a model whose CORRID is BYTES.
    assert "sequence ids are UINT64 integers" in refusal(client, "acc", text, sequence_start=True)


def test_controls_reach_the_model_and_stay_out_of_the_interface(
    client: Any, server: ServerProcess
) -> None:
    module = thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc
    first = client.infer("acc", value(module, 7), sequence_id=77, sequence_start=True)
    later = client.infer("acc", value(module, 1), sequence_id=77, sequence_end=True)
    assert (int(first.as_numpy("FIRST")[0]), int(later.as_numpy("FIRST")[0])) == (1, 0)
    assert int(first.as_numpy("CORR")[0]) == 77
    assert later.as_numpy("STATE_OUT") is None  # state stays on the server
    metadata = httpx.get(server.url + "/v2/models/acc", timeout=5).json()
    assert [t["name"] for t in metadata["inputs"]] == ["INPUT"]
    assert [t["name"] for t in metadata["outputs"]] == ["OUTPUT", "CORR", "FIRST"]
    config = httpx.get(server.url + "/v2/models/acc/config", timeout=5).json()
    assert config["sequence_batching"] == {"max_sequence_idle_microseconds": 60_000_000}
    assert "sequence" in httpx.get(server.url + "/v2", timeout=5).json()["extensions"]


def refusal(client: Any, model: str, sequence: int | str, **flags: bool) -> str:
    with pytest.raises(InferenceServerException) as caught:
        step(client, model, sequence, 1, **flags)
    return str(caught.value.message())


def test_requests_outside_a_sequence_are_refused_clearly(client: Any) -> None:
    assert "must specify a non-zero or non-empty correlation ID" in refusal(client, "acc", 0)
    assert "must specify the START flag" in refusal(client, "acc", 555)
    assert step(client, "acc", 556, 1, sequence_start=True) == 1
    assert step(client, "acc", 556, 1, sequence_end=True) == 2
    assert "must specify the START flag" in refusal(client, "acc", 556)  # it ended
    assert "not stateful" in refusal(client, "py", 9, sequence_start=True)
    module = thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc
    start = module.InferInput("START", [1], "INT32")
    start.set_data_from_numpy(np.array([1], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="supplied by the server"):
        client.infer("acc", [*value(module, 1), start], sequence_id=557, sequence_start=True)
    # A START that failed left no sequence behind.
    assert "must specify the START flag" in refusal(client, "acc", 557)


def test_an_idle_sequence_expires_with_a_clear_error(client: Any) -> None:
    sequence = 4242 if isinstance(client, thttp.InferenceServerClient) else 4343
    assert step(client, "brief", sequence, 3, sequence_start=True) == 3
    assert step(client, "brief", sequence, 4) == 7  # within its idle second
    time.sleep(1.5)
    assert "expired" in refusal(client, "brief", sequence)
    assert step(client, "brief", sequence, 1, sequence_start=True) == 1


def test_sequences_interleaved_on_one_grpc_stream(server: ServerProcess) -> None:
    results: queue.Queue[Any] = queue.Queue()
    client = tgrpc.InferenceServerClient(server.grpc_target)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    plan = [(31, 1, True, False), (32, 5, True, False), (31, 2, False, False),
            (32, 5, False, False), (31, 3, False, True), (32, 5, False, True)]  # fmt: skip
    try:
        for index, (sequence, number, start, end) in enumerate(plan):
            client.async_stream_infer(
                "acc", value(tgrpc, number), request_id=str(index), sequence_id=sequence,
                sequence_start=start, sequence_end=end,
            )  # fmt: skip
        answers = [results.get(timeout=10) for _ in plan]
    finally:
        client.stop_stream()
        client.close()
    assert not any(isinstance(a, InferenceServerException) for a in answers), answers
    got = {a.get_response().id: int(a.as_numpy("OUTPUT")[0]) for a in answers}
    assert [got[str(i)] for i in range(len(plan))] == [1, 5, 3, 10, 6, 15]


def test_a_version_swap_ends_its_sequences_clearly_never_mixing_versions(
    server: ServerProcess, tmp_path: Path
) -> None:
    with open_registry(server.home) as registry:
        v2 = registry.push(
            make_sum_package(tmp_path / "v2", factor=100), name="acc", actor="test",
            trust_code=True,
        ).version.number  # fmt: skip
    client = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    assert step(client, "acc", 900, 2, sequence_start=True) == 2
    with open_registry(server.home) as registry:
        registry.set_alias("acc", "production", v2, actor="test")

    def v1_gone() -> bool:
        return httpx.get(server.url + "/v2/models/acc/versions/1/ready").status_code != 200

    assert wait_for(v1_gone, timeout=10)
    with pytest.raises(InferenceServerException) as caught:
        step(client, "acc", 900, 3)
    assert caught.value.status() == "409"
    assert "started on version 1, which no longer serves" in caught.value.message()
    assert step(client, "acc", 900, 3, sequence_start=True) == 300  # on version 2, afresh
    assert step(client, "acc", 900, 1, sequence_end=True) == 400
    client.close()
