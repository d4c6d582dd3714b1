"""The read side of the DataPlane: readiness, model metadata and configuration, statistics and
the repository extension, answered from the ModelManager's loaded versions.

Stateful models' server-supplied inputs (sequence controls and state) and kept state outputs
are left out of their metadata and configuration: clients never send or receive them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pitstop.errors import PitstopError, Unavailable
from pitstop.protocol.model_config import DynamicBatching, ModelConfig, model_config
from pitstop.protocol.reference import VersionRef
from pitstop.protocol.scoring import Signature
from pitstop.protocol.tensor import ModelMetadata, TensorSpec
from pitstop.runtimes.base import RuntimeMetadata
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.manager import DEFAULT_POLICY, ModelManager
from pitstop.serving.repository import RepositoryEntry
from pitstop.serving.statistics import Statistics, VersionStatistics


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    extensions: tuple[str, ...]


class ModelView:
    def __init__(
        self, manager: ModelManager, info: ServerInfo, statistics: Statistics | None
    ) -> None:
        self._manager = manager
        self._info = info
        self._draining = False
        self.statistics = statistics if statistics is not None else Statistics()

    @property
    def info(self) -> ServerInfo:
        return self._info

    def live(self) -> bool:
        return True

    @property
    def draining(self) -> bool:
        """True from :meth:`begin_drain` on."""
        return self._draining

    def ready(self) -> bool:
        return not self._draining and self._manager.ready()

    def model_ready(self, model: str, version: VersionRef) -> bool:
        """False for a known model or version that cannot serve now; NotFound for an unknown
        one."""
        return self._manager.model_ready(model, version) and not self._draining

    async def prepare(self, model: str, version: VersionRef) -> None:
        """Load ``version`` first if it loads on demand (metadata and configuration of a
        version that is not resident): see :meth:`ModelManager.demand`."""
        await self._manager.demand(model, version, None)

    def model_metadata(self, model: str, version: VersionRef) -> ModelMetadata:
        loaded = self._manager.resolve(model, version)
        metadata = metadata_of(loaded)
        served = [str(number) for number in self._manager.servable_versions(model)]
        inputs, outputs = _client_tensors(loaded, metadata)
        return ModelMetadata(
            name=model, versions=served, platform=metadata.platform, inputs=inputs,
            outputs=outputs,
        )  # fmt: skip

    def signature(self, model: str, version: VersionRef) -> Signature:
        """The inputs and column names of the version ``version`` resolves to: how a row- or
        table-shaped body (MLflow's ``/invocations``, KServe V1) becomes its tensors."""
        loaded = self._manager.resolve(model, version)
        inputs, _ = _client_tensors(loaded, metadata_of(loaded))
        return Signature(inputs, loaded.record.manifest.columns)

    def model_config(self, model: str, version: VersionRef) -> ModelConfig:
        """Triton's model configuration of the version ``version`` (number, alias or default)
        resolves to; ``max_batch_size`` comes from its manifest's ``batching`` section."""
        loaded = self._manager.resolve(model, version)
        metadata = metadata_of(loaded)
        record = loaded.record
        batching = record.manifest.batching
        inputs, outputs = _client_tensors(loaded, metadata)
        sequence = record.manifest.sequence
        return model_config(
            model,
            metadata.platform,
            record.runtime,
            inputs,
            outputs,
            0 if batching is None else batching.max_batch_size,
            None if batching is None else DynamicBatching(
                batching.preferred_batch_size, batching.max_queue_delay_microseconds
            ),
            decoupled=metadata.decoupled,
            sequence_idle_us=None if sequence is None else sequence.max_sequence_idle_microseconds,
        )  # fmt: skip

    def sticky_header(self, model: str) -> str | None:
        """The request header whose value keeps a caller on one arm of ``model``'s traffic
        policy, or None (a stream groups messages by it before they become one request)."""
        policy = self._manager.policy(model)
        if policy is DEFAULT_POLICY or policy.is_default:
            return None
        return policy.sticky_header or None

    # -- management (repository and statistics extensions) -----------------------------------

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        entries = self._manager.repository_index()
        return [e for e in entries if e.state == "READY"] if ready_only else entries

    async def load_model(self, model: str) -> None:
        await self._manager.load_model(model)

    async def unload_model(self, model: str) -> None:
        await self._manager.unload_model(model)

    def model_statistics(self, model: str | None, version: VersionRef) -> list[VersionStatistics]:
        """Statistics extension rows, live: encode them before awaiting. A version may be a
        number or an alias."""
        number: int | None = None
        if model is not None:
            self._manager.require_model(model)
            if isinstance(version, int):
                number = version
            elif version is not None:
                number = self._manager.resolve(model, version).key.version
        return self.statistics.select(model, number)

    def require_model(self, model: str) -> None:
        """Raise ModelNotFound unless the registry (as last read) has ``model``."""
        self._manager.require_model(model)

    def _registered(self, model: str) -> bool:
        """Whether the registry has ``model`` (so it may be a metric label)."""
        try:
            self._manager.require_model(model)
        except PitstopError:
            return False
        return True

    def begin_drain(self) -> None:
        """Readiness turns false at once; requests keep being served."""
        self._draining = True


def metadata_of(loaded: LoadedVersion) -> RuntimeMetadata:
    if loaded.metadata is None:
        raise Unavailable(f"{loaded.key} is {loaded.state.value}")
    return loaded.metadata


def _client_tensors(
    loaded: LoadedVersion, metadata: RuntimeMetadata
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs a client sends and the outputs it may get: a stateful model's controls and
    state are the server's."""
    sequence = loaded.record.manifest.sequence
    if sequence is None:
        return metadata.inputs, metadata.outputs
    supplied, kept = sequence.supplied_inputs, sequence.kept_outputs
    return (
        tuple(spec for spec in metadata.inputs if spec.name not in supplied),
        tuple(spec for spec in metadata.outputs if spec.name not in kept),
    )
