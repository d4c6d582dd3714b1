"""The registry: what models, versions and aliases exist, and the files behind each version.

The rest of pitstop uses :class:`Registry` and the frozen records it returns; SQLAlchemy and
Alembic stay inside this package. See ``docs/model-packages.md`` for the folder format.
"""

from pitstop.registry.audit import AuditEvent
from pitstop.registry.catalog import Registry
from pitstop.registry.delivery import Delivery
from pitstop.registry.digest import FileEntry, digest_of, scan, verify
from pitstop.registry.manifest import ModelManifest, read_manifest
from pitstop.registry.names import LATEST
from pitstop.registry.outcomes import FeedbackRecord, Outcomes, OutcomeSums, PredictionRecord
from pitstop.registry.policy import DEFAULT_TARGET, Arm, Bandit, Shadow, TrafficPolicy
from pitstop.registry.records import (
    ModelRecord,
    PushResult,
    RegistrySnapshot,
    VersionRecord,
)
from pitstop.registry.references import References, StoredReference
from pitstop.registry.replicas import Acknowledgement, Replica, Replicas, acknowledgement
from pitstop.registry.rollouts import Guard, Rollout, RolloutState, RolloutVerb
from pitstop.registry.serving_state import ServingState
from pitstop.registry.signatures import SignatureRecord, Signatures
from pitstop.registry.step_windows import StepWindow, StepWindows
from pitstop.registry.store import ArtifactStore, LocalArtifactStore
from pitstop.registry.timeline import TimelineEntry, replay, served_at

__all__ = [
    "DEFAULT_TARGET",
    "LATEST",
    "Acknowledgement",
    "Arm",
    "ArtifactStore",
    "AuditEvent",
    "Bandit",
    "Delivery",
    "FeedbackRecord",
    "FileEntry",
    "Guard",
    "LocalArtifactStore",
    "ModelManifest",
    "ModelRecord",
    "OutcomeSums",
    "Outcomes",
    "PredictionRecord",
    "PushResult",
    "References",
    "Registry",
    "RegistrySnapshot",
    "Replica",
    "Replicas",
    "Rollout",
    "RolloutState",
    "RolloutVerb",
    "ServingState",
    "Shadow",
    "SignatureRecord",
    "Signatures",
    "StepWindow",
    "StepWindows",
    "StoredReference",
    "TimelineEntry",
    "TrafficPolicy",
    "VersionRecord",
    "acknowledgement",
    "digest_of",
    "read_manifest",
    "replay",
    "scan",
    "served_at",
    "verify",
]
