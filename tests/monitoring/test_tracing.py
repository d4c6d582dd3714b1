"""Trace spans and W3C traceparent propagation, through the real app (REST and gRPC) served by
uvicorn in this process, so an in-memory exporter can collect the spans."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pitstop.engine import Engine
from pitstop.monitoring.tracing import Tracing
from pitstop.registry import Shadow, TrafficPolicy
from pitstop.security.token import Authenticator, TokenFile
from pitstop.settings import Settings
from pitstop.transports.app import Host
from pitstop.transports.proto import inference_pb2 as pb
from tests import model_factory as mf
from tests.server import free_port, open_registry, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
TRIPLE = mf.DEFAULT_HANDLER.replace("* 2", "* 3")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Any]]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("src")
    with open_registry(home) as registry:
        push = {"name": "m", "actor": "t", "trust_code": True}
        registry.push(mf.make_python_package(src / "v1"), aliases=["production"], **push)
        registry.push(mf.make_python_package(src / "v2", source=TRIPLE), **push)
        policy = TrafficPolicy(shadows=(Shadow("2", 1.0),))
        registry.delivery.set_policy("m", policy, actor="t")
    exporter = InMemorySpanExporter()
    port = free_port()
    settings = Settings(home=Path(home), http_port=port, grpc_port=free_port(), drift_enabled=False)
    hosts: list[Host] = []

    async def main() -> None:
        async with Engine(settings, tracing=Tracing(exporter, batch=False)) as engine:
            hosts.append(Host(engine, settings, Authenticator(TokenFile(home))))
            await hosts[0].serve()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            # Both: production answers, version 2 gets the shadow copies.
            return all(
                httpx.get(f"{url}/v2/models/m{path}/ready").status_code == 200
                for path in ("", "/versions/2")
            )
        except httpx.TransportError:
            return False

    try:
        assert wait_for(ready, 30)
        yield url, f"127.0.0.1:{settings.grpc_port}", exporter
    finally:
        assert wait_for(lambda: bool(hosts), 10)
        hosts[0].exit()
        thread.join(30)


def spans_of(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    return {
        s.name: s
        for s in spans
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    }


def test_rest_request_spans_follow_the_callers_trace(served: tuple[str, str, Any]) -> None:
    url, _target, exporter = served
    response = httpx.post(f"{url}/v2/models/m/infer", json=X, headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    # The shadow copy finishes in the background.
    assert wait_for(lambda: len(spans_of(exporter, TRACE_ID)) >= 8, 10)
    spans = spans_of(exporter, TRACE_ID)
    [request] = [s for s in spans if s.name == "pitstop.request"]
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == PARENT_ID
    assert request.attributes is not None
    assert request.attributes["pitstop.version"] == 1
    assert request.attributes["pitstop.transport"] == "rest"
    below = children(spans, request)
    assert {"pitstop.queue", "pitstop.batch", "pitstop.shadow"} <= set(below)
    queue, batch = below["pitstop.queue"], below["pitstop.batch"]
    assert queue.end_time is not None
    assert batch.start_time is not None
    assert queue.end_time == batch.start_time
    assert request.start_time is not None
    assert request.start_time <= queue.start_time
    assert set(children(spans, batch)) == {"pitstop.compute"}
    assert batch.attributes is not None
    assert batch.attributes["pitstop.batch_size"] == 1
    shadow = below["pitstop.shadow"]
    assert shadow.attributes is not None
    assert shadow.attributes["pitstop.version"] == 2
    assert {"pitstop.queue", "pitstop.batch"} <= set(children(spans, shadow))


def test_grpc_metadata_traceparent(served: tuple[str, str, Any]) -> None:
    _url, target, exporter = served
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([1, 2, 3, 4])
        metadata = (("traceparent", f"00-{trace_id}-b7ad6b7169203331-01"),)
        call(pb.ModelInferRequest(model_name="m", inputs=[tensor]), metadata=metadata, timeout=10)
    assert wait_for(
        lambda: any(s.name == "pitstop.request" for s in spans_of(exporter, trace_id)), 5
    )
    [request] = [s for s in spans_of(exporter, trace_id) if s.name == "pitstop.request"]
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == "b7ad6b7169203331"
    assert request.attributes is not None
    assert request.attributes["pitstop.transport"] == "grpc"


def test_failed_request_span_has_error_status(served: tuple[str, str, Any]) -> None:
    url, _target, exporter = served
    trace_id = "11111111111111111111111111111111"
    bad = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    headers = {"traceparent": f"00-{trace_id}-2222222222222222-01"}
    assert httpx.post(f"{url}/v2/models/m/infer", json=bad, headers=headers).status_code == 400
    time.sleep(0.05)
    [request] = [s for s in spans_of(exporter, trace_id) if s.name == "pitstop.request"]
    assert not request.status.is_ok
    assert request.attributes is not None
    assert request.attributes["error.type"] == "InvalidInput"
