"""The system shared-memory extension, through Triton's own clients and their shared-memory
helper (tritonclient.utils.shared_memory, which creates regions with shm_open), against a real
server; and the region table two workers share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from pitstop import errors
from pitstop.protocol.shared_memory import SharedRef
from pitstop.transports.shared_memory import SharedMemory
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry
from tests.transports.served import transport_server, triton_client

ROWS = np.arange(64, dtype=np.float32).reshape(16, 4)
SIZE = ROWS.nbytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from transport_server(tmp_path_factory)


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    made = triton_client(request.param, server)
    made.unregister_system_shared_memory()
    yield made
    made.unregister_system_shared_memory()
    made.close()


def module_of(client: Any) -> Any:
    return thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc


@pytest.fixture
def regions() -> Iterator[dict[str, Any]]:
    """An input region holding ROWS and an output region of the same size, destroyed after."""
    tag = f"{os.getpid()}_{id(object())}"
    handles = {
        "input": shm.create_shared_memory_region("in", f"/pitstop_in_{tag}", SIZE),
        "output": shm.create_shared_memory_region("out", f"/pitstop_out_{tag}", SIZE),
    }
    shm.set_shared_memory_region(handles["input"], [ROWS])
    yield {"keys": {"input": f"/pitstop_in_{tag}", "output": f"/pitstop_out_{tag}"}, **handles}
    for handle in handles.values():
        shm.destroy_shared_memory_region(handle)


def registered(client: Any, regions: dict[str, Any]) -> None:
    client.register_system_shared_memory("in", regions["keys"]["input"], SIZE)
    client.register_system_shared_memory("out", regions["keys"]["output"], SIZE)


def status_names(client: Any) -> set[str]:
    status = client.get_system_shared_memory_status(**as_json(client))
    rows = status if isinstance(status, list) else list(status.get("regions", {}).values())
    return {row["name"] for row in rows}


def as_json(client: Any) -> dict[str, bool]:
    return {"as_json": True} if module_of(client) is tgrpc else {}


def test_inputs_and_outputs_round_trip_through_shared_memory(
    client: Any, regions: dict[str, Any]
) -> None:
    registered(client, regions)
    assert status_names(client) == {"in", "out"}
    module = module_of(client)
    x = module.InferInput("x", list(ROWS.shape), "FP32")
    x.set_shared_memory("in", SIZE)
    y = module.InferRequestedOutput("y")
    y.set_shared_memory("out", SIZE)
    result = client.infer("py", [x], outputs=[y])
    output = result.get_output("y")
    shape = list(output["shape"] if isinstance(output, dict) else output.shape)
    datatype = output["datatype"] if isinstance(output, dict) else output.datatype
    assert (shape, datatype) == ([16, 4], "FP32")
    parameters = output["parameters"] if isinstance(output, dict) else output.parameters
    region = parameters["shared_memory_region"]
    assert (region if isinstance(region, str) else region.string_param) == "out"
    got = shm.get_contents_as_numpy(regions["output"], np.float32, [16, 4])
    np.testing.assert_array_equal(got, ROWS * 2)


def test_one_way_only_and_an_offset(client: Any, regions: dict[str, Any]) -> None:
    registered(client, regions)
    module = module_of(client)
    # Input in the body, output in memory at an offset within the region.
    x = module.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(ROWS[:1])
    y = module.InferRequestedOutput("y")
    y.set_shared_memory("out", 16, offset=SIZE - 16)
    client.infer("py", [x], outputs=[y])
    tail = shm.get_contents_as_numpy(regions["output"], np.float32, [1, 4], offset=SIZE - 16)
    np.testing.assert_array_equal(tail, ROWS[:1] * 2)
    # Input from memory at an offset (the second half), output in the body.
    x = module.InferInput("x", [8, 4], "FP32")
    x.set_shared_memory("in", SIZE // 2, offset=SIZE // 2)
    result = client.infer("py", [x])
    np.testing.assert_array_equal(result.as_numpy("y"), ROWS[8:] * 2)


def test_references_outside_a_region_are_refused(client: Any, regions: dict[str, Any]) -> None:
    registered(client, regions)
    module = module_of(client)
    x = module.InferInput("x", list(ROWS.shape), "FP32")
    x.set_shared_memory("in", SIZE, offset=4)  # one float past the end
    with pytest.raises(InferenceServerException) as caught:
        client.infer("py", [x])
    assert "Invalid offset + byte size for shared memory region: 'in'" in caught.value.message()
    x.set_shared_memory("nowhere", SIZE)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("py", [x])
    assert "Unable to find shared memory region: 'nowhere'" in caught.value.message()
    x = module.InferInput("x", list(ROWS.shape), "FP32")
    x.set_shared_memory("in", SIZE)
    y = module.InferRequestedOutput("y")
    y.set_shared_memory("out", SIZE - 4)  # too small for the output
    with pytest.raises(InferenceServerException) as caught:
        client.infer("py", [x], outputs=[y])
    assert (
        f"request for output 'y' ({SIZE - 4} bytes) should be at least {SIZE} bytes"
        in caught.value.message()
    )


def test_registration_is_checked(client: Any, regions: dict[str, Any], tmp_path: Path) -> None:
    registered(client, regions)
    with pytest.raises(InferenceServerException, match="already in manager"):
        client.register_system_shared_memory("in", regions["keys"]["input"], SIZE)
    with pytest.raises(InferenceServerException, match="past the object's"):
        client.register_system_shared_memory("big", regions["keys"]["input"], SIZE + 1)
    with pytest.raises(InferenceServerException, match="no shared memory object"):
        client.register_system_shared_memory("gone", "/pitstop_no_such_key", 8)
    with pytest.raises(InferenceServerException, match="shared-memory key"):
        client.register_system_shared_memory("bad", "/dev/shm/../../etc/passwd", 8)
    link = Path("/dev/shm") / f"pitstop_link_{os.getpid()}"
    link.symlink_to(Path("/dev/shm") / regions["keys"]["input"][1:])
    try:
        with pytest.raises(InferenceServerException, match="cannot be opened"):
            client.register_system_shared_memory("link", "/" + link.name, 8)
    finally:
        link.unlink()
    assert status_names(client) == {"in", "out"}
    client.unregister_system_shared_memory("in")
    assert status_names(client) == {"out"}
    client.unregister_system_shared_memory()
    assert status_names(client) == set()


def test_cuda_shared_memory_says_there_is_no_gpu(client: Any) -> None:
    with pytest.raises(InferenceServerException, match="no GPU"):
        client.register_cuda_shared_memory("gpu", b"\x00" * 64, 0, 64)
    status = client.get_cuda_shared_memory_status(**as_json(client))
    assert not (status if isinstance(status, list) else status.get("regions"))
    client.unregister_cuda_shared_memory()


def test_the_extension_is_advertised(client: Any) -> None:
    metadata = client.get_server_metadata(**as_json(client))
    assert "system_shared_memory" in metadata["extensions"]


def test_http_errors_name_the_field(server: ServerProcess) -> None:
    url = f"{server.url}/v2/systemsharedmemory/region/r/register"
    answer = httpx.post(url, json={"key": "/k"})
    assert answer.status_code == 400
    assert "'byte_size' is missing" in answer.json()["error"]
    answer = httpx.post(url, json={"key": "/k", "byte_size": -1})
    assert answer.status_code == 400
    assert "byte_size must be a non-negative integer" in answer.json()["error"]
    answer = httpx.get(f"{server.url}/v2/systemsharedmemory/region/none/status")
    assert answer.status_code == 404


def test_the_region_table_is_shared_by_workers(tmp_path: Path) -> None:
    """Two SharedMemory over one table (what two workers of a server hold): a region registered
    through one is read and written through the other, and unregistering reaches both."""
    root = tmp_path / "shm"
    root.mkdir()
    (root / "buf").write_bytes(bytes(range(64)))
    table = tmp_path / "shared-memory.json"
    first, second = SharedMemory(table, root), SharedMemory(table, root)
    first.register("r", "/buf", 16, 32)
    assert [row.name for row in second.status(None)] == ["r"]
    assert second.read(SharedRef("r", 0, 4), "x") == bytes([16, 17, 18, 19])
    second.write(SharedRef("r", 28, 4), b"abcd", "y")
    assert (root / "buf").read_bytes()[44:48] == b"abcd"
    with pytest.raises(errors.InvalidInput, match="already in manager"):
        second.register("r", "/buf", 0, 8)
    second.unregister("r")
    with pytest.raises(errors.InvalidInput, match="not registered"):
        first.read(SharedRef("r", 0, 4), "x")
    first.close()
    second.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_another_users_memory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "theirs").write_bytes(bytes(8))
    os.chown(tmp_path / "theirs", 65534, 65534)
    with pytest.raises(errors.InvalidInput, match="another user"):
        SharedMemory(None, tmp_path).register("t", "/theirs", 0, 8)


def test_raw_contents_belong_to_the_inputs_not_in_shared_memory() -> None:
    from pitstop.transports import grpc_convert as convert
    from pitstop.transports.proto import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="m")
    shared = request.inputs.add(name="a", datatype="FP32", shape=[2])
    shared.parameters["shared_memory_region"].string_param = "r"
    shared.parameters["shared_memory_byte_size"].int64_param = 8
    request.inputs.add(name="b", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([7], "<i4").tobytes())
    decoded = convert.decode_infer_request(request)
    assert decoded.inputs["b"].tolist() == [7]
    assert decoded.shared_inputs["a"].ref == SharedRef("r", 0, 8)
    request.raw_input_contents.append(b"\x00" * 8)  # one entry too many
    with pytest.raises(errors.InvalidInput, match="1 inputs with data"):
        convert.decode_infer_request(request)


def test_turned_off_the_extension_answers_501_and_is_not_advertised(
    tmp_path: Path, regions: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    with open_registry(home) as registry:
        mf.push_transport_models(registry, tmp_path / "packages", {"max_batch_size": 16})
    with ServerProcess(home, env={"PITSTOP_SYSTEM_SHARED_MEMORY": "false"}) as server:
        metadata = httpx.get(server.url + "/v2", timeout=5).json()
        assert "system_shared_memory" not in metadata["extensions"]
        refused = httpx.post(
            server.url + "/v2/systemsharedmemory/region/in/register",
            json={"key": regions["keys"]["input"], "offset": 0, "byte_size": SIZE},
            timeout=5,
        )
        assert refused.status_code == 501
        assert "PITSTOP_SYSTEM_SHARED_MEMORY" in refused.json()["error"]
        body = {
            "inputs": [
                {
                    "name": "x", "shape": [16, 4], "datatype": "FP32",
                    "parameters": {"shared_memory_region": "in", "shared_memory_byte_size": SIZE},
                }
            ]
        }  # fmt: skip
        answer = httpx.post(server.url + "/v2/models/py/infer", json=body, timeout=5)
        assert answer.status_code == 501, answer.text
        grpc_client = tgrpc.InferenceServerClient(server.grpc_target)
        with pytest.raises(InferenceServerException) as caught:
            grpc_client.get_system_shared_memory_status()
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        grpc_client.close()
