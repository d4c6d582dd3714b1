"""Model manifests: how a model folder tells pitstop which runtime serves it and how.

A folder describes itself with a ``pitstop.yaml`` (see ``docs/model-packages.md``) or, failing
that, with MLflow's ``MLmodel`` file, which :mod:`pitstop.registry.mlmodel` translates into the
same shape first so that both go through one validation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, TypeVar, cast

import yaml

from pitstop.errors import InvalidInput
from pitstop.protocol.datatype import DATATYPES
from pitstop.protocol.tensor import TensorSpec
from pitstop.registry.mlmodel import MLMODEL_FILE, translate_mlmodel
from pitstop.registry.options import (
    BatchingOptions,
    CacheOptions,
    IsolationOptions,
    SwapPolicy,
)
from pitstop.registry.sequencing import SequenceOptions
from pitstop.runtimes.base import runtime_names

MANIFEST_FILE: Final = "pitstop.yaml"

SourceFormat = Literal["pitstop", "mlflow"]
T = TypeVar("T")

ARTIFACT_REQUIRED: Final = frozenset({"onnx", "sklearn", "xgboost", "lightgbm", "embeddings"})
"""Built-in runtimes that cannot work without a model file."""

_FIELDS: Final = frozenset(
    {
        "runtime",
        "artifact",
        "inputs",
        "outputs",
        "parameters",
        "warmup",
        "batching",
        "cache",
        "swap",
        "columns",
        "sequence",
        "isolation",
    }
)


@dataclass(frozen=True)
class ModelManifest:
    """What a version needs to be served, as declared by its folder. Immutable like the version."""

    runtime: str
    """Runtime name (built-in or entry point)."""
    artifact: str | None
    """The model file, a POSIX path relative to the folder; ``None`` when the runtime needs none."""
    inputs: tuple[TensorSpec, ...] = ()
    """Declared inputs; empty means the runtime reads them from the model."""
    outputs: tuple[TensorSpec, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    """Runtime-specific parameters (JSON values)."""
    warmup: tuple[dict[str, Any], ...] = ()
    """Example V2 request bodies run before the version takes traffic."""
    batching: BatchingOptions | None = None
    """Adaptive batching; ``None`` when not configured (or ``max_batch_size`` 0)."""
    cache: CacheOptions | None = None
    """The response cache; ``None`` unless enabled."""
    source_format: SourceFormat = "pitstop"
    """Which file the manifest came from: ``pitstop.yaml`` or MLflow's ``MLmodel``."""
    swap: SwapPolicy = SwapPolicy.AVAILABILITY
    columns: tuple[str, ...] = ()
    """Names of the columns along the last axis of the one 2-D input, in order: how a table
    (MLflow's ``dataframe_split``/``dataframe_records``, CSV, records by name) becomes that
    tensor. Empty: columns are taken by position."""
    sequence: SequenceOptions | None = None
    """A stateful model's sequence options (Triton's sequence batcher); ``None``: stateless."""
    isolation: IsolationOptions | None = None
    """Where the runtime runs (``isolation:``); None: the runtime's default (a worker process
    for ``python`` handlers, the server process for the rest)."""
    problem: str | None = None
    """Why a manifest stored by an older pitstop (which checked serving options only at load)
    cannot be served; its load fails with this reason. Never set on a manifest pushed now."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict; :meth:`from_json` turns it back into an equal manifest."""
        return {
            "runtime": self.runtime,
            "artifact": self.artifact,
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
            "parameters": self.parameters,
            "warmup": list(self.warmup),
            "batching": None if self.batching is None else self.batching.to_json(),
            "cache": None if self.cache is None else self.cache.to_json(),
            "source_format": self.source_format,
            "swap": self.swap.value,
            "columns": list(self.columns),
            "sequence": None if self.sequence is None else self.sequence.to_json(),
            **({} if self.isolation is None else {"isolation": self.isolation.to_json()}),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ModelManifest:
        """Rebuild a manifest stored by :meth:`to_json`. The data is trusted (it was validated
        when pushed); the runtime is not checked, since it may be uninstalled since."""
        source_format = body.get("source_format", "pitstop")
        if source_format not in ("pitstop", "mlflow"):
            raise InvalidInput(f"stored manifest: unknown source_format {source_format!r}")
        batching = cache = sequence = isolation = None
        swap = SwapPolicy.AVAILABILITY
        problem = None
        try:
            batching = BatchingOptions.parse(body.get("batching"))
            cache = CacheOptions.parse(body.get("cache"))
            swap = SwapPolicy.parse(body.get("swap"))
            sequence = SequenceOptions.parse(body.get("sequence"))
            isolation = IsolationOptions.parse(body.get("isolation"))
        except InvalidInput as exc:
            problem = str(exc)
        return cls(
            runtime=body["runtime"],
            artifact=body.get("artifact"),
            inputs=tuple(_stored_spec(spec) for spec in body.get("inputs", ())),
            outputs=tuple(_stored_spec(spec) for spec in body.get("outputs", ())),
            parameters=dict(body.get("parameters") or {}),
            warmup=tuple(dict(example) for example in body.get("warmup", ())),
            batching=batching,
            cache=cache,
            source_format=cast(SourceFormat, source_format),
            swap=swap,
            columns=tuple(body.get("columns") or ()),
            sequence=sequence,
            isolation=isolation,
            problem=problem,
        )


def read_manifest(folder: Path) -> ModelManifest:
    """The validated manifest of a model folder.

    Reads ``pitstop.yaml`` when present, else MLflow's ``MLmodel``. Every problem raises
    :class:`~pitstop.errors.InvalidInput` whose message starts with the file and names the
    field, e.g. ``"pitstop.yaml: inputs[0].datatype: unknown datatype 'FP33'"``.
    """
    if (folder / MANIFEST_FILE).is_file():
        return parse_manifest(_load_yaml(folder / MANIFEST_FILE), MANIFEST_FILE, folder, "pitstop")
    if (folder / MLMODEL_FILE).is_file():
        document = translate_mlmodel(folder)
        try:
            return parse_manifest(document, MLMODEL_FILE, folder, "mlflow")
        except InvalidInput:
            if "warmup" not in document:
                raise
        # MLflow's input examples are a convenience: one that does not fit is dropped, not fatal.
        del document["warmup"]
        return parse_manifest(document, MLMODEL_FILE, folder, "mlflow")
    raise InvalidInput(f"neither {MANIFEST_FILE} nor {MLMODEL_FILE} found in {folder}")


def parse_manifest(
    document: object, source: str, folder: Path, source_format: SourceFormat
) -> ModelManifest:
    """Validate a manifest document (a parsed ``pitstop.yaml``) against the files in ``folder``.

    ``source`` prefixes every error message.
    """
    if not isinstance(document, Mapping):
        raise InvalidInput(f"{source}: expected a mapping of fields at the top level")
    unknown = sorted(str(key) for key in document if key not in _FIELDS)
    if unknown:
        raise InvalidInput(f"{source}: unknown field {unknown[0]!r}; known: {sorted(_FIELDS)}")
    runtime = _runtime(source, document.get("runtime"))
    artifact = _artifact(source, document.get("artifact"), folder, runtime)
    inputs = _specs(f"{source}: inputs", document.get("inputs"))
    outputs = _specs(f"{source}: outputs", document.get("outputs"))
    parameters = _json_mapping(f"{source}: parameters", document.get("parameters")) or {}
    warmup = _warmup(f"{source}: warmup", document.get("warmup"), inputs)
    columns = _columns(f"{source}: columns", document.get("columns"), inputs)
    sequence = _option(source, SequenceOptions.parse, document.get("sequence"), "sequence")
    if sequence is not None:
        _check_sequence(source, sequence, inputs, outputs)
    return ModelManifest(
        runtime=runtime,
        artifact=artifact,
        inputs=inputs,
        outputs=outputs,
        parameters=parameters,
        warmup=warmup,
        batching=_option(source, BatchingOptions.parse, document.get("batching"), "batching"),
        cache=_option(source, CacheOptions.parse, document.get("cache"), "cache"),
        source_format=source_format,
        swap=_option(source, SwapPolicy.parse, document.get("swap"), "swap"),
        columns=columns,
        sequence=sequence,
        isolation=_option(source, IsolationOptions.parse, document.get("isolation"), "isolation"),
    )


def _check_sequence(
    source: str,
    sequence: SequenceOptions,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
) -> None:
    """Controls and state must be declared tensors of the same datatype (when the manifest
    declares its tensors; otherwise the load checks them against the model)."""
    declared_in = {spec.name: spec for spec in inputs}
    declared_out = {spec.name: spec for spec in outputs}
    wanted = [(c.name, c.datatype, declared_in, "inputs") for c in sequence.controls]
    for state in sequence.state:
        wanted.append((state.input, state.datatype, declared_in, "inputs"))
        wanted.append((state.output, state.datatype, declared_out, "outputs"))
    for name, datatype, declared, kind in wanted:
        if not declared:
            continue
        spec = declared.get(name)
        if spec is None:
            raise InvalidInput(f"{source}: sequence names {name!r}, which is not in {kind}")
        if spec.datatype != datatype:
            raise InvalidInput(
                f"{source}: sequence gives {name!r} datatype {datatype}, {kind} {spec.datatype}"
            )


def _columns(where: str, value: object, inputs: tuple[TensorSpec, ...]) -> tuple[str, ...]:
    """Column names for the one 2-D input: unique non-empty strings, as many as its width."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"{where}: expected a list of column names")
    if len(set(value)) != len(value):
        raise InvalidInput(f"{where}: duplicate column name")
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise InvalidInput(f"{where}: needs exactly one declared input, of rank 2")
    width = inputs[0].shape[1]
    if width not in (-1, len(value)):
        raise InvalidInput(
            f"{where}: {len(value)} names for input {inputs[0].name!r} of width {width}"
        )
    return tuple(value)


def _option(source: str, parse: Callable[[Any], T], value: object, name: str) -> T:
    """``parse(value)``, its error prefixed with the file; a section must be a JSON mapping."""
    if name not in ("swap", "isolation"):
        _json_mapping(f"{source}: {name}", value)
    try:
        return parse(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc}") from None


def _load_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path.name}: not valid YAML: {exc}") from exc


def _runtime(source: str, value: object) -> str:
    if value is None:
        raise InvalidInput(f"{source}: runtime: required (one of {', '.join(runtime_names())})")
    known = runtime_names()
    if not isinstance(value, str) or value not in known:
        raise InvalidInput(
            f"{source}: runtime: unknown runtime {value!r}; known runtimes: {', '.join(known)}"
        )
    return value


def _artifact(source: str, value: object, folder: Path, runtime: str) -> str | None:
    if value is None:
        if runtime in ARTIFACT_REQUIRED:
            raise InvalidInput(f"{source}: artifact: required for runtime {runtime!r}")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{source}: artifact: expected a file name, got {value!r}")
    relative = PurePosixPath(value)
    if relative.is_absolute() or ".." in relative.parts or "\\" in value:
        raise InvalidInput(
            f"{source}: artifact: {value!r} must be a relative POSIX path inside the folder"
        )
    path = folder.joinpath(*relative.parts)
    if path.is_symlink() or not path.is_file():
        raise InvalidInput(f"{source}: artifact: file {value!r} not found in {folder}")
    return relative.as_posix()


def _specs(where: str, value: object) -> tuple[TensorSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: expected a list of {{name, datatype, shape}}")
    specs: list[TensorSpec] = []
    for index, item in enumerate(value):
        spec = _spec(f"{where}[{index}]", item)
        if any(seen.name == spec.name for seen in specs):
            raise InvalidInput(f"{where}[{index}].name: duplicate name {spec.name!r}")
        specs.append(spec)
    return tuple(specs)


def _spec(where: str, item: object) -> TensorSpec:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where}: expected a mapping with name, datatype and shape")
    extra = sorted(str(key) for key in item if key not in ("name", "datatype", "shape"))
    if extra:
        raise InvalidInput(f"{where}: unknown field {extra[0]!r}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: required, a non-empty string")
    datatype = _datatype(f"{where}.datatype", item.get("datatype"))
    shape = _shape(f"{where}.shape", item.get("shape"), minimum=-1)
    return TensorSpec(name, datatype, shape)


def _datatype(where: str, value: object) -> str:
    if value is None:
        raise InvalidInput(f"{where}: required")
    if not isinstance(value, str) or value not in DATATYPES:
        raise InvalidInput(f"{where}: unknown datatype {value!r}")
    return value


def _shape(where: str, value: object, *, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: expected a list of integers, got {value!r}")
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < minimum:
            raise InvalidInput(f"{where}: dimensions must be integers >= {minimum}, got {dim!r}")
    return tuple(value)


def _json_mapping(where: str, value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidInput(f"{where}: expected a mapping with string keys")
    _check_json(where, value)
    return dict(value)


def _check_json(where: str, value: object) -> None:
    """Refuse what cannot be stored as JSON (YAML dates, NaN, ...): the registry keeps it so."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}: not representable as JSON ({exc})") from exc


def _warmup(
    where: str, value: object, inputs: tuple[TensorSpec, ...]
) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: expected a list of example requests")
    declared = {spec.name: spec for spec in inputs}
    examples: list[dict[str, Any]] = []
    for index, example in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(example, Mapping) or not isinstance(example.get("inputs"), list):
            raise InvalidInput(f"{at}: expected a V2 request body with an 'inputs' list")
        tensors = example["inputs"]
        if not tensors:
            raise InvalidInput(f"{at}.inputs: must not be empty")
        for position, tensor in enumerate(tensors):
            _warmup_tensor(f"{at}.inputs[{position}]", tensor, declared)
        _check_json(at, example)
        examples.append(dict(example))
    return tuple(examples)


def _warmup_tensor(where: str, tensor: object, declared: Mapping[str, TensorSpec]) -> None:
    if not isinstance(tensor, Mapping):
        raise InvalidInput(f"{where}: expected a mapping with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: required, a non-empty string")
    datatype = _datatype(f"{where}.datatype", tensor.get("datatype"))
    shape = _shape(f"{where}.shape", tensor.get("shape"), minimum=0)
    if "data" not in tensor:
        raise InvalidInput(f"{where}.data: required")
    count = _count_elements(tensor["data"])
    if count != math.prod(shape):
        raise InvalidInput(
            f"{where}.data: {count} values do not fill shape {list(shape)} "
            f"({math.prod(shape)} values)"
        )
    if declared:
        spec = declared.get(name)
        if spec is None:
            raise InvalidInput(f"{where}.name: {name!r} is not a declared input")
        if spec.datatype != datatype:
            raise InvalidInput(
                f"{where}.datatype: {datatype} but input {name!r} is {spec.datatype}"
            )
        if not spec.accepts_shape(shape):
            raise InvalidInput(
                f"{where}.shape: {list(shape)} does not fit input {name!r} {list(spec.shape)}"
            )


def _count_elements(data: object) -> int:
    if isinstance(data, list):
        return sum(_count_elements(item) for item in data)
    return 1


def _stored_spec(body: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(body["name"], body["datatype"], tuple(body["shape"]))
