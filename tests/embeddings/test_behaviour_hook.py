"""Every embedding response the DataPlane serves feeds the version's behaviour statistics."""

from __future__ import annotations

import asyncio

import numpy as np

from pitstop.monitoring.behaviour import BehaviourRecorder
from pitstop.protocol.tensor import InferRequest
from pitstop.serving.dataplane import DataPlane
from pitstop.serving.manager import ManagerOptions, ModelManager
from pitstop.serving.model_view import ServerInfo
from tests.embeddings.conftest import MODEL, Imported, open_registry


async def test_responses_feed_norm_and_cosine_to_centroid(imported: Imported) -> None:
    registry = await asyncio.to_thread(open_registry, imported.home)
    manager = ModelManager(registry, ManagerOptions(replica="hook-test", warmup_runs=0))
    try:
        await manager.refresh()
        for _ in range(600):
            if manager.model_ready(MODEL, None):
                break
            await asyncio.sleep(0.05)
        behaviour = BehaviourRecorder()
        dataplane = DataPlane(manager, ServerInfo("pitstop", "test", ()), observers=[behaviour])
        texts = np.array([b"a sentence", b"another sentence", b"word " * 300], dtype=object)
        served = await dataplane.infer(MODEL, None, InferRequest(inputs={"text": texts}))
        await dataplane.infer(MODEL, None, InferRequest(inputs={"text": texts[:1]}))
    finally:
        await manager.close()
        await asyncio.to_thread(registry.close)
    assert served.response.parameters == {"truncated": 1, "tokens": 4 + 4 + 256}
    stats = behaviour.snapshot(MODEL, imported.version.number)["embedding"]
    assert stats["norm"]["count"] == 4
    assert abs(stats["norm"]["mean"] - 1.0) < 1e-4
    assert 0.0 < stats["cosine_to_centroid"]["mean"] < 1.0
