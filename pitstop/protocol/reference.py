"""Numbers and version references as clients write them: parsed here, once, in ASCII only.

``str.isdigit()`` accepts superscripts (``"²"``, on which ``int()`` then fails) and digits of
other scripts (Arabic-Indic one, U+0661, which ``int()`` reads as 1); neither is a number on
this protocol's wire. Every transport, the CLI and the registry parse numbers with
:func:`natural` and version references with :func:`parse_ref`.
"""

from __future__ import annotations

from typing import Final

MAX_DIGITS: Final = 19
"""Longest decimal accepted (int64): longer strings are not numbers this server could hold."""

VersionRef = int | str | None
"""A version a request addresses: a number, an alias name, or None for the model's default
(its traffic policy, which is ``production`` unless a policy says otherwise)."""


def natural(text: str) -> int | None:
    """``text`` as a non-negative integer when it is 1-19 ASCII digits, else None."""
    if 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_ref(text: str | None) -> VersionRef:
    """A version reference from a URL path, gRPC field or command line: ASCII digits are a
    version number, an empty string or None the default, anything else an alias name (which
    may not exist; resolving it says so)."""
    if not text:
        return None
    number = natural(text)
    return text if number is None else number
