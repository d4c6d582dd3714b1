"""BYTES elements reach every runtime that takes strings intact: a NUL inside or at the end, an
empty element, a 1 MiB element; an element that is not UTF-8 reaches a Python handler as is and
is refused, naming the input, by the runtimes whose frameworks take text only (onnxruntime and
scikit-learn are handed Python ``str``, which they encode as UTF-8).

Before the fix, the ONNX runtime handed onnxruntime a fixed-width ``str`` array, which it reads
as C strings: ``b"he\\x00llo"`` came back as ``b"he"``, silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pitstop.errors import InvalidInput
from pitstop.runtimes.base import Runtime
from tests import model_factory as mf
from tests.runtimes.package import runtime_for

ELEMENTS = [b"he\x00llo", b"hello\x00", b"", b"x" * (1 << 20), "café".encode(), b"he", b"hello"]
NOT_UTF8 = b"\xff\xfe\x00"


def column(items: list[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def loaded(folder: Path, **trust: bool) -> Runtime:
    runtime = runtime_for(folder, **trust)
    runtime.load()
    return runtime


def onnx_echo(folder: Path) -> Path:
    """An ONNX model whose string output is its string input (Identity)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])], "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, [None])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    return mf.write_manifest(folder, {
        "runtime": "onnx", "artifact": "model.onnx",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "echo", "datatype": "BYTES", "shape": [-1]}],
    })  # fmt: skip


def test_onnx_string_inputs_keep_every_byte(tmp_path: Path) -> None:
    runtime = loaded(onnx_echo(tmp_path / "echo"))
    echoed = runtime.predict({"text": column(ELEMENTS)})["echo"]
    assert echoed.tolist() == ELEMENTS
    with pytest.raises(InvalidInput, match=r"input 'text': BYTES element 1 is not valid UTF-8"):
        runtime.predict({"text": column([b"ok", NOT_UTF8])})


def test_sklearn_string_inputs_keep_every_byte(tmp_path: Path) -> None:
    import skops.io
    from sklearn.preprocessing import OrdinalEncoder

    categories = [item.decode() for item in ELEMENTS]
    encoder = OrdinalEncoder(categories=[categories], handle_unknown="use_encoded_value",
                             unknown_value=-1)  # fmt: skip
    encoder.fit(np.array(categories, dtype=object).reshape(-1, 1))
    folder = tmp_path / "encoder"
    folder.mkdir()
    skops.io.dump(encoder, folder / "model.skops")
    mf.write_manifest(folder, {
        "runtime": "sklearn", "artifact": "model.skops",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": "code", "datatype": "FP64", "shape": [-1, 1]}],
        "parameters": {"methods": {"code": "transform"}},
    })  # fmt: skip
    runtime = loaded(folder)
    codes = runtime.predict({"text": column(ELEMENTS).reshape(-1, 1)})["code"]
    # each element is its own category: none was cut to another ("he\0llo" to "he", ...)
    assert codes.ravel().tolist() == [float(i) for i in range(len(ELEMENTS))]
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        runtime.predict({"text": column([NOT_UTF8]).reshape(-1, 1)})


def test_a_python_handler_gets_the_bytes_as_sent(tmp_path: Path) -> None:
    folder = mf.make_identity_package(tmp_path / "identity", {"text": "BYTES"})
    runtime = loaded(folder, trust_code=True)
    sent = column([*ELEMENTS, NOT_UTF8]).reshape(-1, 1)
    assert runtime.predict({"text": sent})["text"].ravel().tolist() == [*ELEMENTS, NOT_UTF8]
