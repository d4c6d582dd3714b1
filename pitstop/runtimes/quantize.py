"""Post-training quantisation of ONNX models with onnxruntime (needs the ``onnx`` package).

Dynamic int8: weights are quantised ahead of time, activations at run time, so no calibration set
is needed. Weights are quantised per output channel: on all-MiniLM-L6-v2 that kept a mean cosine
of 0.993 (min 0.985) to the fp32 embeddings, where the per-tensor default gave only 0.964
(min 0.933), at the same 1.7-2.2x speed-up on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from pitstop.errors import LoadError, Unsupported

QUANTIZATIONS: Final = ("int8",)


def quantize_onnx(source: Path, target: Path, scheme: str) -> None:
    """Write the ``scheme``-quantised form of the ONNX model ``source`` to ``target``.

    :class:`Unsupported` for an unknown scheme or a missing ``onnx`` package; :class:`LoadError`
    when onnxruntime cannot quantise the model.
    """
    if scheme not in QUANTIZATIONS:
        raise Unsupported(f"quantization {scheme!r}: supported are {', '.join(QUANTIZATIONS)}")
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise Unsupported(
            f"quantization needs the onnx package (pip install 'pitstop[embeddings]'): {exc}"
        ) from exc
    # onnxruntime logs advice ("consider pre-processing") through the root logger, which a CLI
    # without logging configured prints as noise; silence it for this call only.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            model_input=source,
            model_output=target,
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    except Exception as exc:
        raise LoadError(f"onnxruntime cannot quantise {source.name}: {exc}") from exc
    finally:
        root.setLevel(level)
