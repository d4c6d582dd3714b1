"""Batch inputs and outputs as files: the only batch module that imports pyarrow.

:class:`Input` reads CSV, JSON Lines or Parquet — one file, a folder of files or a glob,
sorted by name — as record batches, streaming (a Parquet file by row group, CSV by block,
JSON Lines by line), and cuts them into parts of ``part_rows`` rows in input order: part *k*
holds input rows ``[k * part_rows, (k+1) * part_rows)`` of the concatenation, whatever the
files' own batch boundaries, so a resumed run cuts the same parts. :func:`write_part` writes
one part's outputs beside the kept input columns, atomically (a temporary name, then rename).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

from pitstop.errors import InvalidInput
from pitstop.protocol.columns import Column

FORMATS: Final = ("parquet", "csv", "jsonl")
SUFFIXES: Final = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
                   ".ndjson": "jsonl", ".json": "jsonl"}  # fmt: skip
JSON_LINES_PER_BATCH: Final = 4096


def input_files(spec: str, s3: Callable[[], dict[str, Any]] | None = None) -> Input:
    """The input ``spec`` names: a file, a folder (its data files, not hidden ones) or a glob,
    local or ``s3://bucket/key|prefix/|glob`` (``s3`` gives pyarrow's S3 file system options:
    the SDK's credential chain and endpoint, see ``registry.s3_store.connection_options``);
    sorted by path. Raises InvalidInput when it names nothing."""
    if spec.startswith("s3://"):
        if s3 is None:
            raise InvalidInput(f"input {spec}: S3 is not configured here")
        filesystem = pa_fs.S3FileSystem(**s3())
        return Input(_s3_files(filesystem, spec), filesystem=filesystem)
    path = Path(spec)
    if path.is_file():
        return Input([str(path)])
    if path.is_dir():
        found = [p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES
                 and not p.name.startswith((".", "_"))]  # fmt: skip
    else:
        found = [Path(p) for p in glob.glob(spec) if Path(p).is_file()]
    if not found:
        raise InvalidInput(f"input {spec}: no CSV, JSON Lines or Parquet files")
    return Input([str(p) for p in sorted(found)])


def _s3_files(filesystem: Any, spec: str) -> list[str]:
    location = spec[len("s3://") :]
    try:
        if any(c in location for c in "*?["):
            folder = location.rsplit("/", 1)[0]
            listed = filesystem.get_file_info(pa_fs.FileSelector(folder))
            found = [i.path for i in listed if i.is_file and fnmatch.fnmatch(i.path, location)]
        else:
            info = filesystem.get_file_info(location.rstrip("/"))
            if info.is_file:
                return [info.path]
            listed = filesystem.get_file_info(pa_fs.FileSelector(location.rstrip("/"),
                                                                 allow_not_found=True))  # fmt: skip
            found = [i.path for i in listed if i.is_file and Path(i.path).suffix in SUFFIXES
                     and not i.base_name.startswith((".", "_"))]  # fmt: skip
    except OSError as exc:
        raise InvalidInput(f"input {spec}: {exc}") from exc
    if not found:
        raise InvalidInput(f"input {spec}: no CSV, JSON Lines or Parquet files")
    return sorted(found)


def format_of(path: Path, given: str | None = None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise InvalidInput(f"format {given!r}: one of {', '.join(FORMATS)}")
        return given
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InvalidInput(
            f"{path.name}: say its format with --input-format ({', '.join(FORMATS)})"
        )
    return found


@dataclass
class Part:
    """Rows ``[first, first + rows)`` of the input, as one table (its columns may hold several
    chunks: a binary or string column past 2 GiB cannot be one)."""

    index: int
    first: int
    batch: pa.Table

    @property
    def rows(self) -> int:
        return int(self.batch.num_rows)

    def columns(self, names: Sequence[str]) -> dict[str, Column]:
        """The named columns as (values, valid): numbers as numeric arrays, lists as object
        arrays of lists, strings as object arrays."""
        out: dict[str, Column] = {}
        for name in names:
            array = self.batch.column(name)
            valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or \
                    pa.types.is_large_list(array.type):  # fmt: skip
                values = np.empty(len(array), dtype=object)
                values[:] = array.to_pylist()
            elif pa.types.is_boolean(array.type):
                values = array.fill_null(False).to_numpy(zero_copy_only=False)
            elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
                values = array.fill_null(0).to_numpy(zero_copy_only=False)
            else:
                values = np.asarray(array.to_pylist(), dtype=object)
            out[name] = (values, valid)
        return out


class Input:
    """The files of a batch input (local paths, or keys of ``filesystem``), read as parts of
    ``part_rows`` rows in order."""

    def __init__(
        self, files: Sequence[str], fmt: str | None = None, filesystem: Any = None
    ) -> None:
        self.files = list(files)
        self.filesystem = filesystem
        self.formats = [format_of(Path(path), fmt) for path in self.files]

    def with_format(self, fmt: str | None) -> Input:
        return Input(self.files, fmt, self.filesystem)

    @property
    def uris(self) -> list[str]:
        """The files as URLs (``s3://bucket/key``) or absolute paths."""
        if self.filesystem is not None:
            return [f"s3://{path}" for path in self.files]
        return [str(Path(path).resolve()) for path in self.files]

    def fingerprint(self) -> str:
        """What the input is, for refusing a resume over other data: each file's path, size
        and modification time (not its bytes: a terabyte is not read twice)."""
        hasher = hashlib.sha256()
        if self.filesystem is not None:
            for info in self.filesystem.get_file_info(self.files):
                hasher.update(f"s3://{info.path}\0{info.size}\0{info.mtime_ns}\n".encode())
        else:
            for path in self.files:
                stat = Path(path).stat()
                hasher.update(
                    f"{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
                )
        return "sha256:" + hasher.hexdigest()

    def total_rows(self) -> int | None:
        """Rows in the input when the files say so without being read (Parquet), else None."""
        if any(fmt != "parquet" for fmt in self.formats):
            return None
        return sum(int(self._parquet(path).metadata.num_rows) for path in self.files)

    def _parquet(self, path: str) -> pq.ParquetFile:
        # pre_buffer keeps every column chunk it read ahead for the file's lifetime: memory
        # grew with the file (60 → 150 MB over 850k rows here); off, it is flat.
        source = self.filesystem.open_input_file(path) if self.filesystem is not None else path
        return pq.ParquetFile(source, pre_buffer=False)

    def _stream(self, path: str) -> Any:
        if self.filesystem is not None:
            return self.filesystem.open_input_stream(path)
        return Path(path).open("rb")

    def column_names(self) -> list[str]:
        """The columns of the first file (every file must have them)."""
        first = next(iter(self._batches(self.files[0], self.formats[0])), None)
        if first is None:
            raise InvalidInput(f"{self.files[0]}: no rows")
        return list(first.schema.names)

    def parts(
        self, part_rows: int, skip: int = 0, text: frozenset[str] = frozenset()
    ) -> Iterator[Part]:
        """Parts ``skip``, ``skip + 1``, ... of ``part_rows`` rows (the last may be shorter);
        the rows of skipped parts are read past, not scored. The ``text`` columns of CSV and
        JSON Lines files are read as text (numbers and JSON arrays as written), so a bad value
        fails its row when converted, not the file when read."""
        pending: list[pa.Table] = []
        held = 0
        index, first = 0, 0
        for path, fmt in zip(self.files, self.formats, strict=True):
            for batch in self._batches(path, fmt, text):
                pending.append(pa.Table.from_batches([batch]))
                held += batch.num_rows
                while held >= part_rows:
                    table = _concat(pending, Path(path))
                    head, rest = table.slice(0, part_rows), table.slice(part_rows)
                    if index >= skip:
                        yield Part(index, first, head.combine_chunks())
                    index, first = index + 1, first + part_rows
                    pending, held = [rest], rest.num_rows
        if held and index >= skip:
            yield Part(index, first, _concat(pending, Path(self.files[-1])).combine_chunks())

    def _batches(
        self, path: str, fmt: str, text: frozenset[str] = frozenset()
    ) -> Iterator[pa.RecordBatch]:
        try:
            if fmt == "parquet":
                yield from self._parquet(path).iter_batches(batch_size=65_536)
            elif fmt == "csv":
                with (
                    self._stream(path) as stream,
                    pa_csv.open_csv(stream, convert_options=csv_options(text)) as reader,
                ):
                    yield from reader
            else:
                with self._stream(path) as stream:
                    yield from _json_lines(stream, text)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            raise InvalidInput(f"{path}: cannot be read as {fmt}: {exc}") from exc


def csv_options(text: frozenset[str]) -> pa_csv.ConvertOptions:
    """CSV conversion options reading the ``text`` columns as text (see :meth:`Input.parts`)."""
    return pa_csv.ConvertOptions(column_types={name: pa.string() for name in text})


def _concat(tables: list[pa.Table], path: Path) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInput(f"{path}: a column changes type between rows: {exc}") from exc


def _lines(stream: Any, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a binary stream read in chunks (Arrow's streams have no ``readline``)."""
    rest = b""
    while chunk := stream.read(chunk_bytes):
        lines = (rest + bytes(chunk)).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _json_lines(stream: Any, text: frozenset[str] = frozenset()) -> Iterator[pa.RecordBatch]:
    """JSON Lines, one object per line, in batches; a line that is not an object is a row with
    every column empty (it fails as a row, not the job). ``text`` columns are kept as JSON
    text (``1.5``, ``[1, 2]``, or the string itself)."""
    rows: list[dict[str, Any]] = []
    for line in _lines(stream):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            row = {}
        for name in text:
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                row[name] = orjson.dumps(value).decode()
        rows.append(row)
        if len(rows) >= JSON_LINES_PER_BATCH:
            yield _from_rows(rows, text)
            rows = []
    if rows:
        yield _from_rows(rows, text)


def _from_rows(rows: list[dict[str, Any]], text: frozenset[str]) -> pa.RecordBatch:
    names = list(dict.fromkeys(name for row in rows for name in row))
    names += [name for name in sorted(text) if name not in names]
    columns = {name: _json_column([row.get(name) for row in rows], name in text) for name in names}
    return pa.RecordBatch.from_pydict(columns)


def _json_column(values: list[Any], as_text: bool) -> pa.Array:
    """One column of JSON values; text when asked or when its values mix types."""
    if not as_text:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    return pa.array(
        [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
        type=pa.string(),
    )


class Folder:
    """Where a run writes: a local folder, or an S3 prefix (``s3://bucket/prefix``). Each file
    is written whole — locally to a temporary name, fsynced, renamed; in S3 as one PUT, which
    S3 makes visible whole or not at all — so a crash never leaves half a file under its name.
    """

    def __init__(
        self,
        spec: str,
        s3: Callable[[], dict[str, Any]] | None = None,
        objects: Callable[[str], Any] | None = None,
    ) -> None:
        """``s3`` gives pyarrow's S3 options (for Ray's writers), ``objects`` the object store
        adapter for a URL (``registry.s3_store.Prefix``: list, get, put, delete)."""
        self.uri = spec
        self.filesystem: Any = None
        self._objects: Any = None
        if spec.startswith("s3://"):
            if s3 is None or objects is None:
                raise InvalidInput(f"output {spec}: S3 is not configured here")
            self.filesystem = pa_fs.S3FileSystem(**s3())
            self._objects = objects(spec)
            self.path = spec[len("s3://") :].rstrip("/")
        else:
            self.path = str(Path(spec))

    def names(self) -> list[str]:
        """The files in the folder, sorted (none when it does not exist)."""
        if self.filesystem is None:
            folder = Path(self.path)
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        return list(self._objects.names())

    def read(self, name: str) -> bytes | None:
        if self.filesystem is None:
            path = Path(self.path) / name
            return path.read_bytes() if path.exists() else None
        data: bytes | None = self._objects.read(name)
        return data

    def write(self, name: str, data: bytes) -> None:
        if self._objects is not None:
            self._objects.write(name, data)
            return
        folder = Path(self.path)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{name}.tmp"
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(folder / name)

    def remove(self, name: str) -> None:
        if self._objects is None:
            (Path(self.path) / name).unlink(missing_ok=True)
        else:
            self._objects.remove(name)

    def local(self) -> Path | None:
        return Path(self.path) if self.filesystem is None else None


def write_part(
    folder: Folder,
    part: Part,
    keep: Sequence[str],
    ok: np.ndarray,
    outputs: Mapping[str, np.ndarray],
    fmt: str,
    stamp: Mapping[str, str],
) -> str:
    """``part-NNNNN.<fmt>``: :func:`output_table` (and, for Parquet, the stamp as file
    metadata too), written whole (see :class:`Folder`). Returns its name."""
    table = output_table(part.batch, keep, ok, outputs, stamp)
    name = f"part-{part.index:05d}.{fmt}"
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        metadata = {f"pitstop.{k}": v for k, v in stamp.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
    elif fmt == "csv":
        flat = table.select(
            [n for n in table.column_names if not _nested(table.schema.field(n).type)]
        )
        nested = [n for n in table.column_names if _nested(table.schema.field(n).type)]
        for column in nested:  # CSV has no lists: a JSON array per cell
            text = [orjson.dumps(v).decode() for v in table.column(column).to_pylist()]
            flat = flat.append_column(column, pa.array(text, type=pa.string()))
        pa_csv.write_csv(flat.select(table.column_names), sink)
        data = sink.getvalue().to_pybytes()
    else:
        data = b"".join(
            orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY, default=_jsonable) + b"\n"
            for row in table.to_pylist()
        )
    folder.write(name, data)
    return name


def output_table(
    batch: pa.Table,
    keep: Sequence[str],
    ok: np.ndarray,
    outputs: Mapping[str, np.ndarray],
    stamp: Mapping[str, str],
) -> pa.Table:
    """For each row scored (``ok``): the kept input columns, every output (a scalar column, or
    a list column for wider rows) and the ``stamp`` columns (model version and digest)."""
    columns: dict[str, pa.Array] = {}
    if keep:
        kept = batch.select(list(keep)).filter(pa.array(ok))
        columns.update({name: kept.column(name) for name in keep})
    for name, array in outputs.items():
        columns[name] = _output_column(array)
    rows = int(ok.sum())
    for name, value in stamp.items():
        columns[name] = pa.array([value] * rows, type=pa.string())
    return pa.table(columns) if columns else pa.table({"_": pa.nulls(rows)})


def _jsonable(value: Any) -> Any:
    """Kept values JSON has no type for: bytes as text (invalid UTF-8 replaced), the rest
    (decimals, times) as their string form."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _output_column(array: np.ndarray) -> pa.Array:
    if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
        flat = array.reshape(-1)
        if flat.dtype == object:
            return pa.array(
                [v.decode(errors="replace") if isinstance(v, bytes) else v for v in flat]
            )
        return pa.array(flat)
    rows = array.reshape(array.shape[0], int(np.prod(array.shape[1:], dtype=np.int64)))
    width = rows.shape[1]
    if rows.dtype == object:
        return pa.array([[v.decode(errors="replace") if isinstance(v, bytes) else v for v in r]
                         for r in rows.tolist()])  # fmt: skip
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), width)


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or
                pa.types.is_large_list(kind) or pa.types.is_struct(kind))  # fmt: skip


def read_output(folder: Path | Folder) -> pa.Table:
    """Every part of a finished output, in order (for tests, the benchmark and the Ray
    engine's counts); also Ray's output files (named by Ray, in its order)."""
    if isinstance(folder, Path):
        folder = Folder(str(folder))
    names = [n for n in folder.names() if Path(n).suffix.lower() in SUFFIXES
             and not n.startswith((".", "_", "errors-"))]  # fmt: skip
    tables = []
    for name in names:
        data = folder.read(name) or b""
        fmt = format_of(Path(name))
        if fmt == "parquet":
            tables.append(pq.read_table(pa.BufferReader(data)))
        elif fmt == "csv":
            tables.append(pa_csv.read_csv(pa.BufferReader(data)))
        else:
            batches = list(_json_lines(pa.BufferReader(data)))
            if batches:  # a part where no row was scored is an empty file
                tables.append(pa.Table.from_batches(batches))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
