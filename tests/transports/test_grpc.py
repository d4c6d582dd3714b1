"""The gRPC transport with raw stubs generated from our own .proto, against real servers."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor

from pitstop.registry import Registry
from pitstop.security.token import TokenFile
from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.proto import inference_pb2_grpc as pb_grpc
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry, wait_for

Stub = pb_grpc.GRPCInferenceServiceStub
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "<f4")


def push(registry: Registry, folder: Path, name: str, *aliases: str, **trust: bool) -> None:
    registry.push(folder, name=name, aliases=aliases, actor="test", **trust)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("packages")
    with open_registry(home) as registry:
        mf.push_transport_models(
            registry, src, {"max_batch_size": 8, "max_queue_delay_microseconds": 100}
        )
    env = {"PITSTOP_GRPC_MAX_MESSAGE_BYTES": "200000"}
    with ServerProcess(home, env) as process:
        yield process


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Stub(channel)


def iris_request(model: str = "iris", rows: np.ndarray = ROWS) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="req-1")
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype("<f4").tobytes())
    return request


def error_of(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_health(stub: Stub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    # Readiness covers production aliases; staging's python worker may still be starting.
    staging = pb.ModelReadyRequest(name="py", version="staging")
    assert wait_for(lambda: stub.ModelReady(staging).ready, 20)
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready


def test_server_and_model_metadata(stub: Stub) -> None:
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "pitstop"
    assert {"binary_tensor_data", "model_configuration"} <= set(server.extensions)
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    assert metadata.platform == "onnxruntime_onnx"
    assert list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input", "FP32", [-1, 4])
    ]
    assert {t.name for t in metadata.outputs} == {"label", "probabilities"}


def test_model_config_drops_the_batch_dimension_when_batching(stub: Stub) -> None:
    config = stub.ModelConfig(pb.ModelConfigRequest(name="iris")).config
    assert config.name == "iris"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("input", pb.TYPE_FP32, [4])
    ]
    outputs = {t.name: (t.data_type, list(t.dims)) for t in config.output}
    assert outputs == {"label": (pb.TYPE_INT64, []), "probabilities": (pb.TYPE_FP32, [3])}
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    plain = stub.ModelConfig(pb.ModelConfigRequest(name="py", version="2")).config
    assert plain.max_batch_size == 0
    assert list(plain.input[0].dims) == [-1, 4]
    assert not plain.HasField("dynamic_batching")


def test_infer_raw_with_trailing_metadata(stub: Stub) -> None:
    response, call = stub.ModelInfer.with_call(iris_request(), timeout=10)
    assert response.model_name == "iris"
    assert response.model_version == "1"
    assert response.id == "req-1"
    outputs = {
        o.name: (o, raw)
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    label, raw = outputs["label"]
    assert label.datatype == "INT64"
    assert np.frombuffer(raw, "<i8").tolist() == [0, 2]
    trailing = dict(call.trailing_metadata())
    assert trailing["pitstop-model-version"] == "1"
    assert trailing["pitstop-model-digest"].startswith("sha256:")


def test_infer_typed_contents_requested_outputs_and_version(stub: Stub) -> None:
    request = pb.ModelInferRequest(model_name="py", model_version="staging")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
        [1, 2, 3, 4]
    )
    request.outputs.add(name="y")
    response, call = stub.ModelInfer.with_call(request, timeout=10)
    assert response.model_version == "2"
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [3, 6, 9, 12]
    assert dict(call.trailing_metadata())["pitstop-model-version"] == "2"
    request.model_version = "1"
    assert stub.ModelInfer(request).model_version == "1"


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "'nope'"),
        (lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "9"),
        (lambda r: setattr(r, "model_name", ""), grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
        (
            lambda r: r.raw_input_contents.append(b"x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "raw_input_contents has 2 entries",
        ),
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"123"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "3 bytes of FP32 data",
        ),
        (
            lambda r: r.outputs.add(name="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "requested output 'nope'",
        ),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP33"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown datatype",
        ),
    ],
)
def test_errors_map_to_status_codes(
    stub: Stub, mutate: object, code: object, fragment: str
) -> None:
    request = iris_request()
    mutate(request)  # type: ignore[operator]
    error = error_of(lambda: stub.ModelInfer(request, timeout=10))
    assert error.code() == code
    assert fragment in (error.details() or "")


def test_metadata_of_unknown_model_is_not_found(stub: Stub) -> None:
    error = error_of(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = error_of(lambda: stub.ModelConfig(pb.ModelConfigRequest(name="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_message_size_limit(stub: Stub) -> None:
    big = np.zeros((20000, 4), dtype=np.float32)  # 320 kB > the 200 kB limit
    error = error_of(lambda: stub.ModelInfer(iris_request("spare", big), timeout=10))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = np.zeros((1000, 4), dtype=np.float32)
    assert len(stub.ModelInfer(iris_request("spare", small), timeout=10).outputs) == 2


def test_stream_answers_in_order_and_reports_errors_in_band(stub: Stub) -> None:
    requests = [iris_request() for _ in range(5)]
    for index, request in enumerate(requests):
        request.id = f"r{index}"
    requests[2].model_name = "nope"
    responses = list(stub.ModelStreamInfer(iter(requests), timeout=20))
    assert len(responses) == 5
    assert "'nope'" in responses[2].error_message
    assert [r.infer_response.id for i, r in enumerate(responses) if i != 2] == [
        "r0",
        "r1",
        "r3",
        "r4",
    ]
    assert all(not r.error_message for i, r in enumerate(responses) if i != 2)


def test_stream_longer_than_its_window_keeps_order(stub: Stub) -> None:
    requests = [iris_request("spare") for _ in range(150)]  # STREAM_WINDOW is 64
    for index, request in enumerate(requests):
        request.id = str(index)
    responses = list(stub.ModelStreamInfer(iter(requests), timeout=30))
    assert [r.infer_response.id for r in responses] == [str(i) for i in range(150)]


def test_statistics(stub: Stub) -> None:
    stub.ModelInfer(iris_request(), timeout=10)
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="iris")).model_stats
    assert [(s.name, s.version) for s in stats] == [("iris", "1")]
    inference = stats[0].inference_stats
    assert stats[0].inference_count >= 2
    assert inference.success.count >= 1
    # perf_analyzer refuses statistics whose three compute counts differ.
    assert inference.compute_input.count == inference.compute_infer.count
    assert inference.compute_output.count == inference.compute_infer.count
    error = error_of(lambda: stub.ModelStatistics(pb.ModelStatisticsRequest(name="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_repository_index_and_authenticated_load_unload(server: ServerProcess, stub: Stub) -> None:
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest()).models
    assert {"iris", "spare", "py"} <= {m.name for m in index}
    unload = pb.RepositoryModelUnloadRequest(model_name="spare")
    error = error_of(lambda: stub.RepositoryModelUnload(unload))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    bad = (("authorization", "Bearer wrong"),)
    error = error_of(lambda: stub.RepositoryModelUnload(unload, metadata=bad))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    reader = TokenFile(server.home).create("reader", ["read"])
    read_only = (("authorization", f"Bearer {reader}"),)
    error = error_of(lambda: stub.RepositoryModelUnload(unload, metadata=read_only))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = (("authorization", f"Bearer {(server.home / 'admin.token').read_text().strip()}"),)
    stub.RepositoryModelUnload(unload, metadata=admin, timeout=20)
    assert not stub.ModelReady(pb.ModelReadyRequest(name="spare")).ready
    ready_only = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert "spare" not in {m.name for m in ready_only}
    load = pb.RepositoryModelLoadRequest(model_name="spare")
    stub.RepositoryModelLoad(load, metadata=admin, timeout=20)
    assert stub.ModelReady(pb.ModelReadyRequest(name="spare")).ready


def _fields(descriptor: Descriptor) -> dict[str, tuple[int, int, bool]]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in descriptor.fields}


def test_wire_format_matches_tritons_own_proto() -> None:
    """Every field we declare has the number and type Triton's generated code gives it."""
    triton = pytest.importorskip("tritonclient.grpc.service_pb2")
    triton_config = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    theirs = {
        **triton.DESCRIPTOR.message_types_by_name,
        **triton_config.DESCRIPTOR.message_types_by_name,
    }

    def compare(ours: Descriptor, other: Descriptor) -> None:
        mine, their = _fields(ours), _fields(other)
        for name, spec in mine.items():
            assert their.get(name) == spec, f"{ours.full_name}.{name}"
        for nested in ours.nested_types:
            compare(nested, other.nested_types_by_name[nested.name])

    for name, descriptor in pb.DESCRIPTOR.message_types_by_name.items():
        compare(descriptor, theirs[name])
    assert [(v.name, v.number) for v in pb.DataType.DESCRIPTOR.values] == [
        (v.name, v.number) for v in triton_config.DataType.DESCRIPTOR.values
    ]
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    their_service = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = their_service.methods_by_name[method.name]
        assert method.input_type.name == other.input_type.name
        assert method.output_type.name == other.output_type.name


def test_readiness_turns_false_on_sigterm(tmp_path: Path) -> None:
    with open_registry(tmp_path) as reg:
        push(reg, mf.make_onnx_package(tmp_path / "pkg"), "iris", "production")
    server = ServerProcess(tmp_path, {"PITSTOP_SHUTDOWN_GRACE_S": "3"}).start()
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = Stub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGTERM)
            assert wait_for(
                lambda: not stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready, timeout=2
            )
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
            assert stub.ModelInfer(iris_request(), timeout=5).model_name == "iris"
        assert server.process.wait(timeout=20) == 0
    finally:
        server.stop()
