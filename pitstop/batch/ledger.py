"""The run manifest in a batch output folder: what was scored with what, and how far it got.

``_pitstop_batch.json`` names the model version (number and digest), the input (files and
fingerprint), the column mapping, the part size and the output format, and counts the parts
done. It is rewritten atomically after each part is on disk, so after a crash (or ``kill -9``)
every part it counts is complete, and a part it does not count is rewritten from scratch:
``--resume`` continues from there and the output equals an uninterrupted run's. A resume whose
version, input, mapping, part size or format differ is refused, naming what changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

import orjson

from pitstop.batch.table import Folder
from pitstop.errors import Conflict, InvalidInput

NAME: Final = "_pitstop_batch.json"
FIXED: Final = ("model", "version", "digest", "input_fingerprint", "mapping", "keep",
                "part_rows", "format")  # fmt: skip
"""What a resume must find unchanged."""


@dataclass(frozen=True)
class Ledger:
    model: str
    version: int
    digest: str
    inputs: tuple[str, ...]
    input_fingerprint: str
    mapping: dict[str, list[str]]
    keep: tuple[str, ...]
    part_rows: int
    format: str
    parts_done: int = 0
    rows: int = 0
    """Input rows in the parts done."""
    scored: int = 0
    errors: int = 0
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def after_part(self, rows: int, errors: int) -> Ledger:
        return replace(self, parts_done=self.parts_done + 1, rows=self.rows + rows,
                       scored=self.scored + rows - errors, errors=self.errors + errors)  # fmt: skip

    def save(self, folder: Folder) -> None:
        """Write the ledger whole (see :class:`~pitstop.batch.table.Folder`)."""
        folder.write(NAME, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))

    def check_resume(self, wanted: Ledger) -> None:
        """Raise Conflict naming the first of :data:`FIXED` that differs from ``wanted``."""
        for name in FIXED:
            had, now = getattr(self, name), getattr(wanted, name)
            if had != now:
                raise Conflict(
                    f"--resume: the output was written with {name} {_show(had)}, this run has "
                    f"{_show(now)}; start a new output folder instead"
                )


def load(folder: Folder) -> Ledger | None:
    """The ledger in ``folder``, or None when there is none."""
    data = folder.read(NAME)
    if data is None:
        return None
    try:
        body = orjson.loads(data)
        return Ledger(**{**body, "inputs": tuple(body["inputs"]), "keep": tuple(body["keep"])})
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise InvalidInput(f"{folder.uri}/{NAME}: not a pitstop batch manifest ({exc})") from exc


def _show(value: Any) -> str:
    return orjson.dumps(value).decode() if not isinstance(value, str) else value
