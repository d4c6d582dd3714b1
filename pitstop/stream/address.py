"""Where a stream's messages come from and go: ``nats://HOST:PORT/SUBJECT`` or
``redis://HOST:PORT/STREAM``, parsed and checked before anything connects.

:func:`parse` is pure (table-tested): it splits a URL into the broker's own connection URL and
the subject or stream key, and refuses what the broker would refuse later, naming the field
(``from``, ``to``, ``dead_letter``). :func:`endpoints` checks the three of a stream together:
one broker, the same server, a destination that is not the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pitstop.errors import InvalidInput

Scheme = Literal["nats", "redis"]
SCHEMES: dict[str, Scheme] = {"nats": "nats", "tls": "nats", "redis": "redis", "rediss": "redis"}
DEAD_SUFFIX = ".dead"

_NATS_TOKEN = re.compile(r"^[^\s.*>]+$")
_MAX_NAME = 255


@dataclass(frozen=True)
class Address:
    """One subject (NATS) or stream key (Redis) on one broker."""

    broker: Scheme
    server: str
    """The client library's connection URL: scheme, credentials, host, port (and Redis's db)."""
    name: str
    """The NATS subject (wildcards only in a source) or the Redis stream key."""

    def __str__(self) -> str:
        """The address without credentials (for logs, metrics and errors)."""
        host = urlsplit(self.server)
        where = host.hostname or ""
        if host.port:
            where += f":{host.port}"
        return f"{host.scheme}://{where}/{self.name}"


@dataclass(frozen=True)
class Endpoints:
    source: Address
    to: Address
    dead_letter: Address


def parse(url: str, field: str, *, source: bool = False) -> Address:
    """``url`` as an Address. Raises InvalidInput naming ``field`` when it is not one."""
    parts = urlsplit(url)
    broker = SCHEMES.get(parts.scheme)
    if broker is None:
        raise InvalidInput(f"{field}: {parts.scheme or 'no'} scheme; want nats:// or redis://")
    if not parts.hostname:
        raise InvalidInput(f"{field}: no host in {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}") from None
    name = unquote(parts.path.lstrip("/"))
    if not name:
        what = "subject" if broker == "nats" else "stream"
        raise InvalidInput(f"{field}: no {what} in {url!r} (…/{what.upper()})")
    if len(name) > _MAX_NAME:
        raise InvalidInput(f"{field}: the name is longer than {_MAX_NAME} characters")
    query = parse_qs(parts.query, keep_blank_values=True)
    netloc = parts.netloc
    if broker == "nats":
        if query:
            raise InvalidInput(f"{field}: nats:// takes no query ({parts.query!r})")
        _check_subject(name, field, wildcards=source)
        return Address("nats", f"{parts.scheme}://{netloc}", name)
    db = "0"
    for key, values in query.items():
        if key != "db":
            raise InvalidInput(f"{field}: unknown option {key!r} (redis:// takes ?db=N)")
        db = values[-1]
    if not db.isascii() or not db.isdigit() or int(db) > 1023:
        raise InvalidInput(f"{field}: db must be a number, not {db!r}")
    if any(c.isspace() for c in name):
        raise InvalidInput(f"{field}: the stream key {name!r} has a space")
    del port
    return Address("redis", f"{parts.scheme}://{netloc}/{int(db)}", name)


def _check_subject(subject: str, field: str, *, wildcards: bool) -> None:
    tokens = subject.split(".")
    for position, token in enumerate(tokens):
        if wildcards and (token == "*" or (token == ">" and position == len(tokens) - 1)):
            continue
        if not _NATS_TOKEN.match(token):
            raise InvalidInput(
                f"{field}: {subject!r} is not a NATS subject"
                + ("" if wildcards else " a message can be published to (no wildcards)")
            )


def matches(source: Address, subject: str) -> bool:
    """Whether a NATS ``source`` subject (with ``*`` and ``>``) takes messages of ``subject``."""
    if source.broker != "nats":
        return False
    want, have = source.name.split("."), subject.split(".")
    for position, token in enumerate(want):
        if token == ">":
            return len(have) > position
        if position >= len(have) or (token != "*" and token != have[position]):
            return False
    return len(want) == len(have)


def endpoints(source: str, to: str, dead_letter: str | None) -> Endpoints:
    """The three addresses of one stream. The answers and dead letters go to the source's
    broker and server; by default the dead letters to ``to`` + ``.dead``."""
    origin = parse(source, "from", source=True)
    answers = parse(to, "to")
    dead = parse(dead_letter, "dead_letter") if dead_letter else None
    if dead is None:
        dead = Address(answers.broker, answers.server, answers.name + DEAD_SUFFIX)
    for field, address in (("to", answers), ("dead_letter", dead)):
        if address.broker != origin.broker or address.server != origin.server:
            raise InvalidInput(
                f"{field}: {address} is not on the source's server ({origin}); answers go to "
                "the broker the messages come from (the acknowledgement depends on it)"
            )
        if address.name == origin.name or matches(origin, address.name):
            raise InvalidInput(f"{field}: {address.name!r} is the source itself (a loop)")
    if dead.name == answers.name:
        raise InvalidInput("dead_letter: the same destination as to")
    return Endpoints(origin, answers, dead)
