"""Quantisation helpers on small ONNX graphs built here: which nodes to keep fp32, and that
they are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pitstop.runtimes.quantize import outlier_ranking, quantize_onnx

WIDTH = 16


def two_branch_model(path: Path) -> Path:
    """y = x1 @ W1 + x2 @ W2 (one weight-bearing MatMul per input), and z = h1 @ h2ᵀ, a MatMul
    of two activations, which is not a candidate."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(WIDTH, WIDTH)).astype(np.float32), name)
        for name in ("w1", "w2")
    ]
    nodes = [
        helper.make_node("MatMul", ["x1", "w1"], ["h1"], name="calm"),
        helper.make_node("MatMul", ["x2", "w2"], ["h2"], name="spiky"),
        helper.make_node("Add", ["h1", "h2"], ["y"], name="sum"),
        helper.make_node("Transpose", ["h2"], ["h2t"], name="flip"),
        helper.make_node("MatMul", ["h1", "h2t"], ["z"], name="activations_only"),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", WIDTH])
        for name in ("x1", "x2")
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", "n"]),
    ]
    graph = helper.make_graph(nodes, "two-branch", inputs, outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def feeds(count: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        x1 = rng.normal(size=(64, WIDTH)).astype(np.float32)
        x2 = rng.normal(size=(64, WIDTH)).astype(np.float32)
        x2[3, 5] = 400.0  # one activation far above the rest: int8 with one scale crushes the rest
        out.append({"x1": x1, "x2": x2})
    return out


def test_the_node_with_outlier_inputs_ranks_first(tmp_path: Path) -> None:
    ranking = outlier_ranking(two_branch_model(tmp_path / "m.onnx"), feeds())
    assert [node for node, _score in ranking] == ["spiky", "calm"]
    scores = dict(ranking)
    assert scores["spiky"] > 10 * scores["calm"]


def test_kept_nodes_stay_fp32_and_the_rest_is_quantised(tmp_path: Path) -> None:
    source = two_branch_model(tmp_path / "m.onnx")
    target = tmp_path / "q.onnx"
    quantize_onnx(source, target, "int8", keep_fp32=["spiky"])
    graph = onnx.load(str(target)).graph
    plain = {node.name for node in graph.node if node.op_type == "MatMul"}
    assert "spiky" in plain
    assert "calm" not in plain
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.node)


def test_no_weight_bearing_matmul_ranks_nothing(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((WIDTH, WIDTH), dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(WIDTH, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x1", "w", "b"], ["y"], name="gemm")],
        "gemm-only",
        [helper.make_tensor_value_info("x1", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "gemm.onnx"))
    assert outlier_ranking(tmp_path / "gemm.onnx", [{"x1": feeds()[0]["x1"]}]) == []


def test_unnamed_nodes_are_never_candidates(tmp_path: Path) -> None:
    """onnxruntime excludes nodes by name: an empty name would keep every unnamed node fp32."""
    path = two_branch_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.name == "calm":
            node.name = ""
    onnx.save(model, str(path))
    assert [node for node, _score in outlier_ranking(path, feeds())] == ["spiky"]
