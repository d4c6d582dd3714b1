"""Model folders in the layouts KServe's own runtimes take: a bare model file, no manifest.

KServe's storage initializer puts whatever ``storageUri`` holds in ``/mnt/models``; its sklearn,
xgboost, lightgbm and ONNX servers then look for a conventional file name. :func:`manifest_of`
decides, from the file names alone, the pitstop manifest such a folder stands for (a pure
function, table-tested); ``pitstop serve --model-dir`` writes it beside a copy of the file and
pushes that. A folder with ``pitstop.yaml`` or ``MLmodel`` never comes here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from pitstop.errors import InvalidInput

FORMATS: Final = ("onnx", "sklearn", "xgboost", "lightgbm")
"""KServe model format names this understands (``mlflow`` folders carry ``MLmodel``)."""

_SKLEARN: Final = {
    "model.skops": "skops",
    "model.joblib": "joblib",
    "model.pkl": "pickle",
    "model.pickle": "pickle",
}
_XGBOOST: Final = ("model.json", "model.ubj")
_LIGHTGBM: Final = ("model.txt", "model.bst")


def manifest_of(names: Iterable[str], model_format: str | None = None) -> dict[str, Any]:
    """The ``pitstop.yaml`` document for a folder holding the files ``names`` (top level),
    as KServe's ``model_format`` runtime would read it (None: decided from the names).
    Raises InvalidInput naming what was found and what would have been taken."""
    files = sorted(set(names))
    if model_format is not None and model_format not in FORMATS:
        raise InvalidInput(
            f"model format {model_format!r}: one of {', '.join(FORMATS)} "
            "(or a folder with pitstop.yaml or an MLflow MLmodel)"
        )
    found = {
        fmt: document
        for fmt in (FORMATS if model_format is None else (model_format,))
        if (document := _candidate(fmt, files, explicit=model_format is not None)) is not None
    }
    if len(found) == 1:
        return next(iter(found.values()))
    listed = ", ".join(files) or "nothing"
    if not found:
        wanted = (
            "a *.onnx file, model.skops/joblib/pkl, model.json/ubj (xgboost) "
            "or model.txt/bst (lightgbm)"
        )
        if model_format is not None:
            wanted = f"the {model_format} model file"
        raise InvalidInput(f"no pitstop.yaml, MLmodel or {wanted} among: {listed}")
    raise InvalidInput(
        f"the files ({listed}) fit several formats ({', '.join(found)}): say which with "
        "--model-format"
    )


def _candidate(fmt: str, files: list[str], explicit: bool) -> dict[str, Any] | None:
    if fmt == "onnx":
        onnx = [name for name in files if name.endswith(".onnx")]
        return {"runtime": "onnx", "artifact": onnx[0]} if len(onnx) == 1 else None
    if fmt == "sklearn":
        for name, serialization in _SKLEARN.items():
            if name in files:
                return {"runtime": "sklearn", "artifact": name,
                        "parameters": {"format": serialization}}  # fmt: skip
        return None
    if fmt == "xgboost":
        found = [name for name in _XGBOOST if name in files]
        if not found and explicit and "model.bst" in files:
            raise InvalidInput(
                "model.bst: a legacy binary XGBoost model (or a LightGBM one): re-save an XGBoost "
                "booster as model.json, or say --model-format lightgbm"
            )
        return {"runtime": "xgboost", "artifact": found[0]} if found else None
    boosters = [name for name in _LIGHTGBM if name in files]
    return {"runtime": "lightgbm", "artifact": boosters[0]} if boosters else None
