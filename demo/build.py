"""Build the demo models and register them: ``make serve`` runs this before ``pitstop serve``.

Trains a logistic regression on scikit-learn's built-in iris data set (no download), writes it as
a skops package and as an ONNX package, and pushes both with ``production`` aliases through the
pitstop CLI. Packages are built once under ``<home>/demo``; pushing them again is a no-op because
versions are content-addressed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

INPUT = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
OUTPUTS = [
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
]
EXAMPLE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


def train() -> object:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(features.astype(np.float32), labels)


def write_manifest(
    folder: Path, runtime: str, artifact: str, parameters: dict[str, object]
) -> None:
    manifest = {
        "runtime": runtime,
        "artifact": artifact,
        "inputs": [INPUT],
        "outputs": OUTPUTS,
        "parameters": parameters,
        "warmup": [EXAMPLE],
    }
    (folder / "pitstop.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def build_sklearn(model: object, folder: Path) -> None:
    import skops.io

    folder.mkdir(parents=True)
    skops.io.dump(model, folder / "model.skops")
    write_manifest(folder, "sklearn", "model.skops", {"format": "skops"})


def build_onnx(model: object, folder: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    folder.mkdir(parents=True)
    onnx_model = to_onnx(
        model,
        initial_types=[("x", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    # skl2onnx names a classifier's outputs "label" and "probabilities", as the manifest does.
    (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
    write_manifest(folder, "onnx", "model.onnx", {})


def pitstop(home: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pitstop", "--home", str(home), *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=Path(".pitstop"))
    home = parser.parse_args().home
    demo = home / "demo"
    packages = {"iris": demo / "iris-onnx", "iris-sklearn": demo / "iris-sklearn"}
    if not all((folder / "pitstop.yaml").exists() for folder in packages.values()):
        model = train()
        for folder in packages.values():
            if folder.exists():
                for file in folder.iterdir():
                    file.unlink()
                folder.rmdir()
        build_onnx(model, packages["iris"])
        build_sklearn(model, packages["iris-sklearn"])
    for name, folder in packages.items():
        pitstop(
            home,
            "models",
            "push",
            str(folder),
            "--name",
            name,
            "--alias",
            "production",
            "--meta",
            "source=demo/build.py",
            "--meta",
            "dataset=sklearn iris",
        )
    body = '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
    print("\nOnce the server below says it is running, try:\n")
    port = os.environ.get("PITSTOP_HTTP_PORT", "8000")
    print(f"  curl -s localhost:{port}/v2/models/iris/infer -d '{body}'\n")


if __name__ == "__main__":
    main()
