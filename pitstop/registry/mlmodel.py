"""MLflow model folders: translate an ``MLmodel`` file into a ``pitstop.yaml`` document.

The translation only reads YAML and JSON; it never imports MLflow or a framework. The result is
validated by :func:`pitstop.registry.manifest.parse_manifest` like a hand-written manifest.

Flavors are tried in this order: ``onnx``, ``xgboost``, ``lightgbm``, ``sklearn``, then
``python_function`` (MLflow's pyfunc, served by the ``pyfunc`` runtime through MLflow itself,
which runs the model's code: only for versions pushed with ``--trust-code``). The signature
becomes the declared inputs and outputs (a column-based input keeps its column names, in
order, as the manifest's ``columns``); an ``input_example.json`` in the ``dataframe`` (split)
or ``inputs`` form becomes one warm-up request, other examples are skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from pitstop.errors import InvalidInput

MLMODEL_FILE: Final = "MLmodel"

_TENSOR_DTYPES: Final[dict[str, str]] = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "str": "BYTES",
    "object": "BYTES",
    "bytes": "BYTES",
}
"""numpy dtype names in MLflow tensor specs → V2 datatypes."""

_COLUMN_DATATYPES: Final[dict[str, str]] = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
}
"""MLflow column types → V2 datatypes."""

_WIDTH: Final[dict[str, int]] = {"BOOL": 0, "INT32": 1, "INT64": 2, "FP32": 3, "FP64": 4}

_XGBOOST_FORMATS: Final = ("json", "ubj", "xgb")


def translate_mlmodel(folder: Path) -> dict[str, Any]:
    """The ``pitstop.yaml`` document equivalent to ``folder/MLmodel``.

    Raises :class:`~pitstop.errors.InvalidInput` prefixed ``"MLmodel: "`` naming the field
    when the file is unreadable, has no supported flavor, or has a signature pitstop cannot map.
    """
    try:
        mlmodel = yaml.safe_load((folder / MLMODEL_FILE).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{MLMODEL_FILE}: not valid YAML: {exc}") from exc
    if not isinstance(mlmodel, Mapping):
        raise InvalidInput(f"{MLMODEL_FILE}: expected a mapping at the top level")
    flavors = mlmodel.get("flavors")
    if not isinstance(flavors, Mapping):
        raise InvalidInput(f"{MLMODEL_FILE}: flavors: required, a mapping")
    document = _flavor(flavors)
    signature = mlmodel.get("signature")
    if signature is not None:
        if not isinstance(signature, Mapping):
            raise InvalidInput(f"{MLMODEL_FILE}: signature: expected a mapping")
        inputs, columns = _schema("signature.inputs", signature.get("inputs"), "input")
        outputs, _ = _schema("signature.outputs", signature.get("outputs"), "output")
        document["inputs"], document["outputs"] = inputs, outputs
        if columns:
            document["columns"] = columns
        _fit_to_runtime(document)
    if document["runtime"] == "pyfunc":
        requirements = _requirements(folder)
        if requirements:
            document["parameters"]["requirements"] = requirements
    example = _warmup_example(folder, mlmodel.get("saved_input_example_info"), document)
    if example is not None:
        document["warmup"] = [example]
    return document


def _flavor(flavors: Mapping[Any, Any]) -> dict[str, Any]:
    handlers: list[tuple[str, Callable[[Mapping[Any, Any]], dict[str, Any]]]] = [
        ("onnx", _onnx),
        ("xgboost", _xgboost),
        ("lightgbm", _lightgbm),
        ("sklearn", _sklearn),
        ("python_function", _pyfunc),
    ]
    for name, handler in handlers:
        config = flavors.get(name)
        if config is not None:
            if not isinstance(config, Mapping):
                raise InvalidInput(f"{MLMODEL_FILE}: flavors.{name}: expected a mapping")
            return handler(config)
    raise InvalidInput(
        f"{MLMODEL_FILE}: flavors: no supported flavor in {sorted(map(str, flavors))}; "
        f"pitstop serves {', '.join(name for name, _ in handlers)} (or write a pitstop.yaml)"
    )


def _file(flavor: str, config: Mapping[Any, Any], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{MLMODEL_FILE}: flavors.{flavor}.{key}: required, a file name")
    return value


def _onnx(config: Mapping[Any, Any]) -> dict[str, Any]:
    return {"runtime": "onnx", "artifact": _file("onnx", config, "data")}


def _xgboost(config: Mapping[Any, Any]) -> dict[str, Any]:
    # MLflow wrote only XGBoost's legacy binary format before it started to record the format.
    model_format = config.get("model_format", "xgb")
    if model_format not in _XGBOOST_FORMATS:
        raise InvalidInput(
            f"{MLMODEL_FILE}: flavors.xgboost.model_format: {model_format!r} is not one of "
            f"{', '.join(_XGBOOST_FORMATS)}"
        )
    parameters: dict[str, Any] = {"model_format": model_format}
    model_class = config.get("model_class")
    if isinstance(model_class, str) and model_class.endswith("Classifier"):
        # XGBClassifier.predict (so MLflow's pyfunc) answers labels, not the booster's scores.
        parameters["predict"] = "label"
    return {
        "runtime": "xgboost",
        "artifact": _file("xgboost", config, "data"),
        "parameters": parameters,
    }


def _lightgbm(config: Mapping[Any, Any]) -> dict[str, Any]:
    serialization = config.get("serialization_format")
    if serialization in ("skops", "cloudpickle", "pickle"):
        # MLflow 3 saves scikit-learn-API LightGBM models (LGBMClassifier, ...) as a serialised
        # estimator rather than a booster text file: serve it with the sklearn runtime.
        return {
            "runtime": "sklearn",
            "artifact": _file("lightgbm", config, "data"),
            "parameters": {"format": "skops" if serialization == "skops" else "pickle"},
        }
    return {"runtime": "lightgbm", "artifact": _file("lightgbm", config, "data")}


def _sklearn(config: Mapping[Any, Any]) -> dict[str, Any]:
    serialization = config.get("serialization_format", "cloudpickle")
    if serialization in ("cloudpickle", "pickle"):
        model_format = "pickle"
    elif serialization == "skops":
        model_format = "skops"
    else:
        raise InvalidInput(
            f"{MLMODEL_FILE}: flavors.sklearn.serialization_format: unsupported "
            f"{serialization!r}; expected cloudpickle, pickle or skops"
        )
    return {
        "runtime": "sklearn",
        "artifact": _file("sklearn", config, "pickled_model"),
        "parameters": {"format": model_format},
    }


def _pyfunc(config: Mapping[Any, Any]) -> dict[str, Any]:
    """Any other pyfunc model (a custom ``PythonModel``, a flavor pitstop has no runtime for):
    MLflow loads it, in the server, with its code."""
    loader = config.get("loader_module")
    if not isinstance(loader, str) or not loader:
        raise InvalidInput(f"{MLMODEL_FILE}: flavors.python_function.loader_module: required")
    model = config.get("python_model")
    artifact = model if isinstance(model, str) and model else None
    return {
        "runtime": "pyfunc",
        "artifact": artifact,
        "parameters": {"loader_module": loader},
    }


def _requirements(folder: Path) -> list[str]:
    """The pip requirements MLflow recorded (``requirements.txt``), comments dropped."""
    try:
        text = (folder / "requirements.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-")][:200]


_UNNAMED = re.compile(r"(input|output)-\d+")


def _fit_to_runtime(document: dict[str, Any]) -> None:
    """Name signature tensors the way the chosen runtime knows them.

    MLflow signatures often leave tensors unnamed (``input-0``/``output-0`` here). ONNX models
    name their own tensors, so unnamed specs are dropped and the runtime reads the model's.
    Booster runtimes (xgboost, lightgbm) produce ``prediction`` (the booster's raw output, e.g.
    class probabilities) whatever the signature says MLflow's pyfunc returned, so their outputs
    are left to the runtime; a single unnamed input becomes their ``input``. A single unnamed
    scikit-learn output is ``prediction`` (``predict``).
    """
    runtime = document["runtime"]
    inputs, outputs = document["inputs"], document["outputs"]
    if runtime == "onnx":
        if any(_UNNAMED.fullmatch(spec["name"]) for spec in inputs):
            document["inputs"] = []
        if any(_UNNAMED.fullmatch(spec["name"]) for spec in outputs):
            document["outputs"] = []
        return
    if runtime in ("xgboost", "lightgbm"):
        document["outputs"] = []
    if len(inputs) == 1 and _UNNAMED.fullmatch(inputs[0]["name"]):
        inputs[0]["name"] = "input"
    # "output": a column-based output schema's one tensor (see _columns).
    single = len(outputs) == 1 and (
        _UNNAMED.fullmatch(outputs[0]["name"]) or outputs[0]["name"] == "output"
    )
    if runtime in ("sklearn", "pyfunc") and single:
        outputs[0]["name"] = "prediction"


def _schema(where: str, value: object, default_name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Tensor specs for one side of an MLflow signature (a JSON string in the MLmodel), and the
    column names when it is column-based and every column is named."""
    if value is None:
        return [], []
    try:
        columns = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{MLMODEL_FILE}: {where}: not valid JSON: {exc}") from exc
    if not isinstance(columns, list) or not all(isinstance(c, Mapping) for c in columns):
        raise InvalidInput(f"{MLMODEL_FILE}: {where}: expected a list of column or tensor specs")
    if not columns:
        return [], []
    if all(column.get("type") == "tensor" for column in columns):
        specs = [
            _tensor(f"{where}[{index}]", column, f"{default_name}-{index}")
            for index, column in enumerate(columns)
        ]
        return specs, []
    if any(column.get("type") == "tensor" for column in columns):
        raise InvalidInput(f"{MLMODEL_FILE}: {where}: mixes tensor and column specs")
    spec = _columns(where, columns, default_name)
    if default_name == "output" and len(columns) == 1:
        spec["shape"] = [-1]  # one value per row: what MLflow's pyfunc returns (a Series)
    names = [column.get("name") for column in columns]
    if all(isinstance(name, str) and name for name in names) and len(set(names)) == len(names):
        return [spec], [str(name) for name in names]
    return [spec], []


def _tensor(where: str, column: Mapping[Any, Any], default_name: str) -> dict[str, Any]:
    spec = column.get("tensor-spec")
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"{MLMODEL_FILE}: {where}.tensor-spec: required, a mapping")
    dtype = spec.get("dtype")
    datatype = _TENSOR_DTYPES.get(dtype) if isinstance(dtype, str) else None
    if datatype is None:
        raise InvalidInput(f"{MLMODEL_FILE}: {where}.tensor-spec.dtype: unsupported {dtype!r}")
    shape = spec.get("shape")
    if not isinstance(shape, list):
        raise InvalidInput(f"{MLMODEL_FILE}: {where}.tensor-spec.shape: expected a list")
    name = column.get("name")
    return {
        "name": name if isinstance(name, str) and name else default_name,
        "datatype": datatype,
        "shape": shape,
    }


def _columns(where: str, columns: list[Mapping[Any, Any]], name: str) -> dict[str, Any]:
    """A column-based schema as one 2-D tensor ``[-1, ncols]`` of the widest column type."""
    datatypes: list[str] = []
    for index, column in enumerate(columns):
        kind = column.get("type")
        datatype = _COLUMN_DATATYPES.get(kind) if isinstance(kind, str) else None
        if datatype is None:
            raise InvalidInput(
                f"{MLMODEL_FILE}: {where}[{index}].type: column type {kind!r} cannot be part "
                f"of a tensor; expected one of {', '.join(_COLUMN_DATATYPES)}"
            )
        datatypes.append(datatype)
    return {"name": name, "datatype": _widest(where, datatypes), "shape": [-1, len(columns)]}


def _widest(where: str, datatypes: list[str]) -> str:
    if all(datatype == "BYTES" for datatype in datatypes):
        return "BYTES"
    if "BYTES" in datatypes:
        raise InvalidInput(
            f"{MLMODEL_FILE}: {where}: mixes string and numeric columns, which one tensor "
            "cannot hold; describe the model with a pitstop.yaml instead"
        )
    widest = max(datatypes, key=_WIDTH.__getitem__)
    # A float32 cannot hold every int64, so together they need float64 (numpy's rule too).
    if widest == "FP32" and "INT64" in datatypes:
        return "FP64"
    return widest


def _warmup_example(
    folder: Path, info: object, document: Mapping[str, Any]
) -> dict[str, Any] | None:
    """One V2 request body from MLflow's saved input example, or ``None`` when not easy.

    Only examples whose structure maps directly onto the declared inputs are used: a
    dataframe (``split`` orient, possibly wrapped in ``dataframe_split``) for a column-based
    input, or ``{"inputs": ...}`` for tensor inputs. Anything else is skipped, never refused:
    the example is a convenience.
    """
    inputs = document.get("inputs") or []
    if not isinstance(info, Mapping) or not inputs:
        return None
    artifact_path = info.get("artifact_path")
    if not isinstance(artifact_path, str) or "/" in artifact_path or "\\" in artifact_path:
        return None
    try:
        example = json.loads((folder / artifact_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(example, Mapping):
        return None
    if info.get("type") == "dataframe" and len(inputs) == 1:
        frame = example.get("dataframe_split", example)
        rows = frame.get("data") if isinstance(frame, Mapping) else None
        spec = inputs[0]
        if _is_matrix(rows, width=spec["shape"][-1]):
            tensor = _request_tensor(spec, rows)
            return {"inputs": [tensor]}
        return None
    tensors = example.get("inputs")
    if isinstance(tensors, list) and len(inputs) == 1:
        tensors = {inputs[0]["name"]: tensors}
    if not isinstance(tensors, Mapping):
        return None
    by_name = {spec["name"]: spec for spec in inputs}
    if set(tensors) != set(by_name):
        return None
    return {"inputs": [_request_tensor(by_name[name], data) for name, data in tensors.items()]}


def _is_matrix(rows: object, width: int) -> bool:
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(isinstance(row, list) and len(row) == width for row in rows)
    )


def _request_tensor(spec: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """A V2 request tensor; its shape is read off the nesting of ``data``. Whether it fits the
    spec is left to manifest validation (``read_manifest`` drops an example that does not)."""
    shape: list[int] = []
    level = data
    while isinstance(level, list):
        shape.append(len(level))
        level = level[0] if level else None
    return {"name": spec["name"], "datatype": spec["datatype"], "shape": shape, "data": data}
