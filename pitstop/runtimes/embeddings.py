"""Sentence embeddings: a transformer exported to ONNX, served with onnxruntime and ``tokenizers``.

No torch at serve time. The package (written by ``pitstop import sentence-transformers``, see
``docs/embeddings.md``) holds the ONNX transformer (``artifact``, default ``model.onnx``; inputs
``input_ids``, ``attention_mask`` and optionally ``token_type_ids``, all int64 ``[batch, seq]``;
one output of token embeddings ``[batch, seq, dim]``) and a ``tokenizer.json``. Manifest
``parameters``:

- ``tokenizer`` (default ``tokenizer.json``): the Hugging Face ``tokenizers`` file;
- ``pooling``: ``mean`` (default; over real tokens, padding excluded) or ``cls``;
- ``normalize`` (default false): L2-normalise each embedding;
- ``max_seq_length`` (default 512): longer texts are truncated to this many tokens, special
  tokens included;
- ``reference`` (optional): a JSON file ``{"centroid": [...]}``, the mean embedding of the
  package's evaluation set, published as :attr:`RuntimeMetadata.centroids` for monitoring.

Interface: input ``text`` BYTES ``[-1]`` (a manifest may declare ``[-1, 1]`` instead, Triton
style) → outputs ``embedding`` FP32 ``[-1, dim]``, ``tokens`` INT32 ``[-1]`` (tokens each text
was given to the model) and ``truncated`` BOOL ``[-1]``. ``tokens`` and ``truncated`` are
:attr:`RuntimeMetadata.summed_outputs`, so every response reports its totals in ``parameters``.

Each call sorts its texts by length and runs them in chunks of at most
:data:`TOKEN_BUDGET` padded token slots, each chunk padded only to its own longest text: short
texts never pay for a long one, and memory stays bounded however many texts arrive.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from pitstop.errors import InternalError, InvalidInput, LoadError, Unavailable
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata, require_input

PLATFORM: Final = "onnxruntime_onnx"
DEFAULT_ARTIFACT: Final = "model.onnx"
DEFAULT_TOKENIZER: Final = "tokenizer.json"
DEFAULT_MAX_SEQ_LENGTH: Final = 512
POOLING_MODES: Final = ("mean", "cls")

TEXT_INPUT: Final = "text"
EMBEDDING_OUTPUT: Final = "embedding"
TOKENS_OUTPUT: Final = "tokens"
TRUNCATED_OUTPUT: Final = "truncated"

TOKEN_BUDGET: Final = 8192
"""Most padded token slots (rows * longest row) one onnxruntime call gets."""

_MODEL_INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
_PARAMETERS: Final = frozenset({"tokenizer", "pooling", "normalize", "max_seq_length", "reference"})


@dataclass(frozen=True)
class EmbeddingConfig:
    """The manifest's ``parameters``, validated."""

    tokenizer: str = DEFAULT_TOKENIZER
    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    reference: str | None = None

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> EmbeddingConfig:
        """:class:`LoadError` naming the parameter that is unknown or has a bad value."""
        unknown = sorted(set(parameters) - _PARAMETERS)
        if unknown:
            raise LoadError(f"parameters.{unknown[0]}: unknown; known: {sorted(_PARAMETERS)}")
        config = cls(**parameters)
        for name in ("tokenizer", "reference"):
            value = getattr(config, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise LoadError(f"parameters.{name}: expected a file name in the package")
        if config.pooling not in POOLING_MODES:
            raise LoadError(f"parameters.pooling: expected one of {POOLING_MODES}")
        if not isinstance(config.normalize, bool):
            raise LoadError("parameters.normalize: expected true or false")
        length = config.max_seq_length
        if isinstance(length, bool) or not isinstance(length, int) or length < 2:
            raise LoadError("parameters.max_seq_length: expected an integer >= 2")
        return config


@dataclass(frozen=True)
class _Loaded:
    session: Any
    tokenizer: Any
    feeds: tuple[str, ...]
    """The model inputs to feed, in ``_MODEL_INPUTS`` order."""
    hidden: str
    """The token-embeddings output."""
    pad_id: int
    config: EmbeddingConfig
    metadata: RuntimeMetadata


class EmbeddingsRuntime:
    """Texts → pooled embeddings. ``predict`` is thread-safe: onnxruntime's ``run`` is, and the
    tokenizer is configured once in ``load()`` and only read afterwards."""

    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        import onnxruntime as ort
        import tokenizers

        config = EmbeddingConfig.from_parameters(self._context.parameters)
        folder = self._context.path
        model_path = folder / (self._context.artifact or DEFAULT_ARTIFACT)
        tokenizer_path = folder / config.tokenizer
        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise LoadError(f"{path.name} is missing from the package")
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:
            raise LoadError(f"tokenizers cannot read {tokenizer_path.name}: {exc}") from exc
        # Padding is done per chunk here, not by the tokenizer (whose file may fix a length).
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=config.max_seq_length)
        pad_id = int((tokenizer.padding or {}).get("pad_id", 0))

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._context.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise LoadError(f"onnxruntime cannot load {model_path.name}: {exc}") from exc
        names = [arg.name for arg in session.get_inputs()]
        for name in names:
            if name not in _MODEL_INPUTS:
                raise LoadError(f"the ONNX model takes input {name!r}; expected {_MODEL_INPUTS}")
        if "input_ids" not in names or "attention_mask" not in names:
            raise LoadError("the ONNX model must take input_ids and attention_mask")
        hidden = session.get_outputs()[0]
        dim = hidden.shape[-1] if hidden.shape else None
        if not isinstance(dim, int) or len(hidden.shape) != 3:
            raise LoadError(
                f"the ONNX model's first output {hidden.name!r} must be token embeddings "
                f"[batch, sequence, dim] with a fixed dim; it is {hidden.shape}"
            )
        self._loaded = _Loaded(
            session=session,
            tokenizer=tokenizer,
            feeds=tuple(name for name in _MODEL_INPUTS if name in names),
            hidden=hidden.name,
            pad_id=pad_id,
            config=config,
            metadata=RuntimeMetadata(
                platform=PLATFORM,
                inputs=(self._text_spec(),),
                outputs=self._output_specs(dim),
                summed_outputs=(TOKENS_OUTPUT, TRUNCATED_OUTPUT),
                centroids=self._centroids(config, dim),
            ),
        )

    def metadata(self) -> RuntimeMetadata:
        return self._require_loaded().metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._require_loaded()
        encodings, lengths = self._encode(loaded, inputs)
        truncated = np.array([bool(encoding.overflowing) for encoding in encodings])
        dim = loaded.metadata.outputs[0].shape[1]
        embeddings = np.empty((len(encodings), dim), dtype=np.float32)
        for rows in _chunks(lengths):
            embeddings[rows] = self._embed(loaded, [encodings[i] for i in rows], lengths[rows])
        return {EMBEDDING_OUTPUT: embeddings, TOKENS_OUTPUT: lengths, TRUNCATED_OUTPUT: truncated}

    def session_feeds(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        loaded = self._require_loaded()
        encodings, lengths = self._encode(loaded, inputs)
        return [
            _feed(loaded, [encodings[i] for i in rows], lengths[rows])[0]
            for rows in _chunks(lengths)
        ]

    def _encode(
        self, loaded: _Loaded, inputs: Mapping[str, np.ndarray]
    ) -> tuple[list[Any], np.ndarray]:
        spec = loaded.metadata.inputs[0]
        texts = _texts(require_input(inputs, spec.name), spec.name)
        try:
            encodings = loaded.tokenizer.encode_batch(texts, add_special_tokens=True)
        except Exception as exc:
            raise InternalError(f"tokenization failed: {exc}") from exc
        lengths = np.array([len(encoding.ids) for encoding in encodings], dtype=np.int32)
        return encodings, lengths

    def unload(self) -> None:
        self._loaded = None

    def _embed(self, loaded: _Loaded, encodings: Sequence[Any], lengths: np.ndarray) -> np.ndarray:
        feed, mask = _feed(loaded, encodings, lengths)
        try:
            (hidden,) = loaded.session.run([loaded.hidden], feed)
        except Exception as exc:
            raise InternalError(f"onnxruntime failed: {exc}") from exc
        config = loaded.config
        if config.pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask.astype(np.float32)
            pooled = np.einsum("bsd,bs->bd", hidden, weights) / weights.sum(1, keepdims=True)
        if config.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled = pooled / np.maximum(norms, 1e-12)
        return np.asarray(pooled, dtype=np.float32)

    def _text_spec(self) -> TensorSpec:
        declared = self._context.inputs
        if not declared:
            return TensorSpec(TEXT_INPUT, "BYTES", (-1,))
        if len(declared) != 1:
            raise LoadError("an embeddings model takes one input: a BYTES tensor of texts")
        spec = declared[0]
        if spec.datatype != "BYTES" or spec.shape not in ((-1,), (-1, 1)):
            raise LoadError(
                f"input {spec.name!r} must be BYTES [-1] or [-1, 1], not "
                f"{spec.datatype} {list(spec.shape)}"
            )
        return spec

    def _output_specs(self, dim: int) -> tuple[TensorSpec, ...]:
        specs = (
            TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, dim)),
            TensorSpec(TOKENS_OUTPUT, "INT32", (-1,)),
            TensorSpec(TRUNCATED_OUTPUT, "BOOL", (-1,)),
        )
        for declared in self._context.outputs:
            if declared not in specs:
                raise LoadError(
                    f"output {declared.name!r} {declared.datatype} {list(declared.shape)} is not "
                    f"one this model produces: {[s.to_json() for s in specs]}"
                )
        return specs

    def _centroids(self, config: EmbeddingConfig, dim: int) -> dict[str, tuple[float, ...]]:
        if config.reference is None:
            return {}
        path = self._context.path / config.reference
        try:
            centroid = json.loads(path.read_text(encoding="utf-8"))["centroid"]
            vector = tuple(float(value) for value in centroid)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LoadError(f"reference file {config.reference!r} is unreadable: {exc}") from exc
        if len(vector) != dim:
            raise LoadError(f"reference centroid has {len(vector)} values; the model has {dim}")
        return {EMBEDDING_OUTPUT: vector}

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the embeddings model is not loaded")
        return loaded


def _texts(array: np.ndarray, name: str) -> list[str]:
    """The texts of a ``[n]`` or ``[n, 1]`` BYTES array; :class:`InvalidInput` naming ``name``
    when it is empty or holds something other than UTF-8 text."""
    if array.ndim == 2 and array.shape[1] != 1:
        raise InvalidInput(f"input {name!r}: expected shape [n] or [n, 1], got {list(array.shape)}")
    if array.size == 0:
        raise InvalidInput(f"input {name!r} is empty: send at least one text")
    texts: list[str] = []
    for index, item in enumerate(array.reshape(-1)):
        if isinstance(item, bytes | np.bytes_):
            try:
                texts.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"input {name!r}[{index}] is not valid UTF-8 text") from None
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise InvalidInput(f"input {name!r}[{index}]: expected text, got {type(item).__name__}")
    return texts


def _feed(
    loaded: _Loaded, encodings: Sequence[Any], lengths: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The session feed for one chunk of encodings, padded to its longest, and its mask."""
    longest = int(lengths.max())
    ids = np.full((len(encodings), longest), loaded.pad_id, dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : lengths[row]] = encoding.ids
    mask = (np.arange(longest) < lengths[:, None]).astype(np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: arrays[name] for name in loaded.feeds}, mask


def _chunks(lengths: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped shortest first, each group within :data:`TOKEN_BUDGET` padded slots
    (a single row longer than the budget still gets a group of its own)."""
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        # Sorted ascending, so the row just added is the group's longest.
        if end < len(order) and (end + 1 - start) * int(lengths[order[end]]) <= TOKEN_BUDGET:
            continue
        groups.append(order[start:end])
        start = end
    return groups
