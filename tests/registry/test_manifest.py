"""pitstop.yaml validation: every error names the file and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pitstop.errors import InvalidInput
from pitstop.protocol.tensor import TensorSpec
from pitstop.registry import ModelManifest, read_manifest
from pitstop.registry.options import BatchingOptions, CacheOptions, SwapPolicy

from .conftest import MakePackage

FULL: dict[str, Any] = {
    "runtime": "sklearn",
    "artifact": "model.skops",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    "parameters": {"format": "skops"},
    "warmup": [
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    ],
    "batching": {"max_batch_size": 8},
    "cache": {"enabled": True, "ttl_s": 5},
    "swap": "resource-preserving",
}


def test_full_manifest_round_trips_through_json(make_package: MakePackage) -> None:
    folder = make_package(manifest=FULL, files={"model.skops": b"s"})
    manifest = read_manifest(folder)
    assert manifest == ModelManifest(
        runtime="sklearn",
        artifact="model.skops",
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("label", "INT64", (-1,)),),
        parameters={"format": "skops"},
        warmup=(FULL["warmup"][0],),
        batching=BatchingOptions(max_batch_size=8),
        cache=CacheOptions(ttl_s=5.0),
        source_format="pitstop",
        swap=SwapPolicy.RESOURCES,
    )
    assert ModelManifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize(
    ("section", "value", "fragment"),
    [
        ("batching", {"max_batch_size": 8, "nope": 1}, "pitstop.yaml: batching.nope"),
        ("batching", {"max_queue_delay_microseconds": 5}, "batching.max_batch_size: required"),
        ("batching", [8], "pitstop.yaml: batching"),
        ("cache", {"enabled": "yes"}, "pitstop.yaml: cache.enabled"),
        ("cache", {"enabled": True, "ttl_s": 0}, "pitstop.yaml: cache.ttl_s"),
        ("swap", "fast", "pitstop.yaml: swap: expected one of"),
        ("sequence", [8], "pitstop.yaml: sequence: expected a mapping"),
        ("sequence", {"nope": 1}, "pitstop.yaml: sequence.nope: unknown setting"),
        ("sequence", {"max_sequences": 0}, "sequence.max_sequences: expected an integer > 0"),
        (
            "sequence",
            {"controls": [{"name": "S", "kind": "begin"}]},
            "sequence.controls[0].kind: expected one of",
        ),
        (
            "sequence",
            {"controls": [{"name": "S", "kind": "corrid", "datatype": "FP32"}]},
            "sequence.controls[0].datatype: expected one of",
        ),
        (
            "sequence",
            {"controls": [{"name": "S", "kind": "start"}]},
            "sequence names 'S', which is not in inputs",
        ),
        (
            "sequence",
            {"controls": [{"name": "x", "kind": "start", "datatype": "INT32"}]},
            "sequence gives 'x' datatype INT32, inputs FP32",
        ),
        (
            "sequence",
            {"state": [{"input": "x", "output": "label", "datatype": "FP32", "shape": [-1]}]},
            "sequence.state[0].shape: expected a list of positive integers",
        ),
    ],
)
def test_serving_options_are_checked_when_pushed(
    make_package: MakePackage, section: str, value: object, fragment: str
) -> None:
    folder = make_package(manifest={**FULL, section: value}, files={"model.skops": b"s"})
    with pytest.raises(InvalidInput, match=re.escape(fragment)):
        read_manifest(folder)


def test_a_sequence_section_round_trips_and_names_what_the_server_supplies(
    make_package: MakePackage,
) -> None:
    tensors = [
        {"name": "x", "datatype": "FP32", "shape": [1]},
        {"name": "START", "datatype": "BOOL", "shape": [1]},
        {"name": "ID", "datatype": "BYTES", "shape": [1]},
        {"name": "S", "datatype": "FP32", "shape": [2]},
    ]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [1]},
               {"name": "S_NEXT", "datatype": "FP32", "shape": [2]}]  # fmt: skip
    sequence = {
        "max_sequences": 8,
        "controls": [{"name": "START", "kind": "start", "datatype": "BOOL"},
                     {"name": "ID", "kind": "corrid", "datatype": "BYTES"}],
        "state": [{"input": "S", "output": "S_NEXT", "datatype": "FP32", "shape": [2]}],
    }  # fmt: skip
    manifest = read_manifest(
        make_package(
            manifest={"runtime": "python", "inputs": tensors, "outputs": outputs,
                      "sequence": sequence},
        )
    )  # fmt: skip
    assert manifest.sequence is not None
    assert manifest.sequence.max_sequence_idle_microseconds == 60_000_000
    assert manifest.sequence.supplied_inputs == {"START", "ID", "S"}
    assert manifest.sequence.kept_outputs == {"S_NEXT"}
    assert ModelManifest.from_json(manifest.to_json()) == manifest


def test_a_stored_manifest_with_bad_options_reads_but_names_its_problem() -> None:
    """Older pitstops checked serving options at load only: such a version must not break the
    registry read; its load fails with the reason."""
    stored = {"runtime": "python", "batching": {"max_batch_size": 8, "nope": 1}}
    manifest = ModelManifest.from_json(stored)
    assert manifest.batching is None
    assert manifest.problem is not None
    assert "batching.nope" in manifest.problem


def test_minimal_python_manifest(make_package: MakePackage) -> None:
    folder = make_package(
        manifest={"runtime": "python", "parameters": {"handler": "handler:Model"}},
        files={"handler.py": b"class Model: ...\n"},
    )
    manifest = read_manifest(folder)
    assert (manifest.runtime, manifest.artifact, manifest.inputs) == ("python", None, ())
    assert (manifest.batching, manifest.cache, manifest.warmup) == (None, None, ())


def with_change(path: str, value: object) -> dict[str, Any]:
    """FULL with one field replaced; ``path`` is dotted with list indexes."""
    manifest: Any = {**FULL, "inputs": [dict(FULL["inputs"][0])], "warmup": [
        {"inputs": [dict(FULL["warmup"][0]["inputs"][0])]}
    ]}  # fmt: skip
    *parents, last = path.split(".")
    target = manifest
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return dict(manifest)


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("inputs.0.datatype", "FP33", "pitstop.yaml: inputs[0].datatype: unknown datatype 'FP33'"),
        ("runtime", "tensorflow", "pitstop.yaml: runtime: unknown runtime 'tensorflow'"),
        ("runtime", DELETE, "pitstop.yaml: runtime: required"),
        ("artifact", "missing.onnx", "pitstop.yaml: artifact: file 'missing.onnx' not found"),
        ("artifact", "../model.skops", "pitstop.yaml: artifact: '../model.skops' must be"),
        ("artifact", DELETE, "pitstop.yaml: artifact: required for runtime 'sklearn'"),
        ("inputs.0.shape", [-1, "4"], "pitstop.yaml: inputs[0].shape: dimensions must be"),
        ("inputs.0.shape", [-2], "pitstop.yaml: inputs[0].shape: dimensions must be"),
        ("inputs.0.name", "", "pitstop.yaml: inputs[0].name: required"),
        ("inputs.0.dtype", "FP32", "pitstop.yaml: inputs[0]: unknown field 'dtype'"),
        ("outputs", {"name": "y"}, "pitstop.yaml: outputs: expected a list"),
        ("parameters", ["a"], "pitstop.yaml: parameters: expected a mapping"),
        ("parameters", {"x": float("nan")}, "pitstop.yaml: parameters: not representable"),
        ("batching", 8, "pitstop.yaml: batching: expected a mapping"),
        ("runtme", "onnx", "pitstop.yaml: unknown field 'runtme'"),
        ("warmup.0.inputs.0.data", [1, 2, 3], "warmup[0].inputs[0].data: 3 values do not fill"),
        ("warmup.0.inputs.0.name", "y", "warmup[0].inputs[0].name: 'y' is not a declared input"),
        ("warmup.0.inputs.0.datatype", "FP64", "warmup[0].inputs[0].datatype: FP64 but input"),
        ("warmup.0.inputs.0.shape", [4], "warmup[0].inputs[0].shape: [4] does not fit input"),
        ("warmup.0.inputs", [], "pitstop.yaml: warmup[0].inputs: must not be empty"),
        ("warmup.0.inputs.0.data", DELETE, "pitstop.yaml: warmup[0].inputs[0].data: required"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_field(
    make_package: MakePackage, path: str, value: object, message: str
) -> None:
    folder = make_package(manifest=with_change(path, value), files={"model.skops": b"s"})
    with pytest.raises(InvalidInput) as caught:
        read_manifest(folder)
    assert message in str(caught.value)


def test_duplicate_input_names(make_package: MakePackage) -> None:
    spec = {"name": "x", "datatype": "FP32", "shape": [1]}
    folder = make_package(manifest={"runtime": "onnx", "artifact": "model.onnx",
                                    "inputs": [spec, spec]})  # fmt: skip
    with pytest.raises(InvalidInput, match=r"inputs\[1\]\.name: duplicate name 'x'"):
        read_manifest(folder)


def test_folder_without_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=re.escape("neither pitstop.yaml nor MLmodel found in")):
        read_manifest(tmp_path)


def test_broken_yaml(tmp_path: Path) -> None:
    (tmp_path / "pitstop.yaml").write_text("runtime: [onnx\n")
    with pytest.raises(InvalidInput, match=re.escape("pitstop.yaml: not valid YAML")):
        read_manifest(tmp_path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "pitstop.yaml").write_text("- onnx\n")
    with pytest.raises(InvalidInput, match=re.escape("pitstop.yaml: expected a mapping")):
        read_manifest(tmp_path)
