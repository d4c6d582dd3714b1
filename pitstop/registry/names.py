"""Names in the catalog: what a model or alias may be called, and who may be recorded as actor."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from pitstop.errors import InvalidInput
from pitstop.protocol.reference import natural

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""Model and alias names. Alias names are further not all digits and not ``latest``."""

LATEST: Final = "latest"
"""The reserved reference to a model's newest version."""


def check_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"{what} {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def check_alias(alias: object) -> None:
    check_name("alias", alias)
    if isinstance(alias, str) and (natural(alias) is not None or alias == LATEST):
        raise InvalidInput(
            f"alias {alias!r}: reserved (all-digit names are version numbers; "
            f"{LATEST!r} is always the newest version)"
        )


def check_meta(meta: Mapping[str, str]) -> dict[str, str]:
    for key, value in meta.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"meta: keys must be non-empty strings, got {key!r}")
        if not isinstance(value, str):
            raise InvalidInput(f"meta[{key!r}]: values must be strings, got {value!r}")
    return dict(meta)


def check_actor(actor: object) -> None:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 256:
        raise InvalidInput(f"actor: a non-empty name of at most 256 characters, got {actor!r}")


def parse_version_ref(text: str) -> tuple[str, str]:
    """``model@alias``, ``model@3``, ``model:3`` or ``model`` (→ ``production``) as
    (model, version ref), for commands that name one version."""
    model, sep, ref = text.partition(":") if ":" in text else text.partition("@")
    if not model or (sep and not ref):
        raise InvalidInput(f"{text!r}: expected MODEL, MODEL@ALIAS, MODEL@VERSION or MODEL:VERSION")
    return model, ref or "production"
