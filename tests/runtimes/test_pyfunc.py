"""The pyfunc runtime's rules that need no MLflow: trust, a signature, requirements reported."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from pitstop.errors import LoadError, PermissionDenied
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import RuntimeContext
from pitstop.runtimes.pyfunc import PyfuncRuntime, unmet_requirements

SPEC = TensorSpec("input", "FP64", (-1, 2))


def test_it_runs_code_so_it_needs_trust_code(tmp_path: Path) -> None:
    context = RuntimeContext(tmp_path, None, (SPEC,), (SPEC,), trust_pickle=True)
    with pytest.raises(PermissionDenied, match="push it with --trust-code"):
        PyfuncRuntime(context).load()


def test_it_needs_a_signature(tmp_path: Path) -> None:
    context = RuntimeContext(tmp_path, None, (SPEC,), (), trust_code=True)
    with pytest.raises(LoadError, match="need a signature"):
        PyfuncRuntime(context).load()


def test_unmet_requirements_are_reported_never_installed() -> None:
    numpy = metadata.version("numpy")
    assert unmet_requirements(
        [f"numpy=={numpy}", "numpy==0.0.1", "no-such-package-x==1.0", "pandas", "-r x.txt",
         "scikit-learn[alldeps] == 0.1"]
    ) == [
        "requirement numpy==0.0.1: " + numpy + " is installed",
        "requirement no-such-package-x==1.0 is not installed",
        "requirement scikit-learn==0.1: " + metadata.version("scikit-learn") + " is installed",
    ]  # fmt: skip
