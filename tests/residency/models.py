"""Models for the many-models tests: ONNX models of a chosen size, and python handlers that
crash, exhaust their memory or hang on a marked input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests import model_factory as mf

MARK = 666.0
"""An input whose first value is this sets off the misbehaving handlers."""


def make_weighted_onnx(directory: Path, mib: float, seed: int) -> Path:
    """``y = sum(x @ W, axis=1)`` with ``W`` float32 ``[4, N]`` of ``mib`` MiB: a model that
    holds about that much memory once loaded, and answers ``[rows, 1]``."""
    directory.mkdir(parents=True, exist_ok=True)
    columns = max(1, int(mib * (1 << 20) / 16))
    weights = np.random.default_rng(seed).random((4, columns), dtype=np.float32) / columns
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("ReduceSum", ["xw", "axes"], ["y"], keepdims=1),
        ],
        f"weighted{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    return mf.write_manifest(
        directory,
        {
            "runtime": "onnx",
            "artifact": "model.onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
        },
    )


HANDLERS = {
    "calm": "",
    "crash": "        if float(x[0, 0]) == MARK:\n            os.abort()\n",
    "hog": (
        "        if float(x[0, 0]) == MARK:\n"
        "            hoard = []\n"
        "            while True:\n"
        "                hoard.append(bytearray(32 << 20))\n"
    ),
    "hang": "        if float(x[0, 0]) == MARK:\n            time.sleep(3600)\n",
}


def make_handler(directory: Path, kind: str, isolation: dict[str, object] | None) -> Path:
    """A python handler answering ``y = sum(x)`` per row, misbehaving as ``kind`` says on a
    marked input; ``isolation``: the manifest's section (None: the runtime's default)."""
    source = (
        "import os\nimport time\n\nimport numpy as np\n\n"
        f"MARK = {MARK}\n\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        x = inputs['x']\n"
        f"{HANDLERS[kind]}"
        "        return {'y': x.sum(axis=1, keepdims=True).astype(np.float32)}\n"
    )
    mf.make_python_package(directory, source=source)
    manifest = {
        "runtime": "python",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
        "parameters": {"handler": "handler:Model"},
    }
    if isolation is not None:
        manifest["isolation"] = isolation
    return mf.write_manifest(directory, manifest)
