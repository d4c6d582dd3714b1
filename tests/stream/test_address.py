"""Stream addresses: parsed and refused before anything connects (a table)."""

from __future__ import annotations

import pytest

from pitstop.errors import InvalidInput
from pitstop.stream.address import Address, endpoints, matches, parse

NATS = "nats://127.0.0.1:4222"
REDIS = "redis://127.0.0.1:6379"


@pytest.mark.parametrize(
    ("url", "source", "want"),
    [
        (f"{NATS}/tx", False, Address("nats", NATS, "tx")),
        (f"{NATS}/tx.eu.*", True, Address("nats", NATS, "tx.eu.*")),
        (f"{NATS}/tx.>", True, Address("nats", NATS, "tx.>")),
        ("nats://u:p@host:4222/a.b", False, Address("nats", "nats://u:p@host:4222", "a.b")),
        ("tls://host:4222/a", False, Address("nats", "tls://host:4222", "a")),
        (f"{REDIS}/tx", False, Address("redis", f"{REDIS}/0", "tx")),
        (f"{REDIS}/tx:in?db=3", False, Address("redis", f"{REDIS}/3", "tx:in")),
        ("rediss://:pw@h:6380/s", False, Address("redis", "rediss://:pw@h:6380/0", "s")),
    ],
)
def test_addresses_parse(url: str, source: bool, want: Address) -> None:
    assert parse(url, "from", source=source) == want


@pytest.mark.parametrize(
    ("url", "source", "says"),
    [
        ("kafka://h:9092/t", True, "scheme"),
        ("nats:///tx", True, "no host"),
        (f"{NATS}/", True, "no subject"),
        (f"{REDIS}", True, "no stream"),
        (f"{NATS}/tx.*", False, "no wildcards"),
        (f"{NATS}/tx.>.a", True, "not a NATS subject"),
        (f"{NATS}/tx..a", True, "not a NATS subject"),
        (f"{NATS}/tx?x=1", True, "takes no query"),
        (f"{REDIS}/s?db=x", True, "db must be a number"),
        (f"{REDIS}/s?group=g", True, "unknown option"),
        ("nats://h:99999/tx", True, "Port out of range"),
        (f"{NATS}/" + "a" * 300, True, "longer than"),
    ],
)
def test_bad_addresses_name_the_field(url: str, source: bool, says: str) -> None:
    with pytest.raises(InvalidInput, match=r"^from: ") as caught:
        parse(url, "from", source=source)
    assert says in str(caught.value)


def test_dead_letters_default_beside_the_answers() -> None:
    ends = endpoints(f"{NATS}/tx", f"{NATS}/scores", None)
    assert ends.dead_letter == Address("nats", NATS, "scores.dead")
    assert endpoints(f"{REDIS}/in", f"{REDIS}/out", f"{REDIS}/bad").dead_letter.name == "bad"


@pytest.mark.parametrize(
    ("source", "to", "dead", "says"),
    [
        (f"{NATS}/tx", f"{REDIS}/out", None, "to: .* is not on the source's server"),
        (f"{NATS}/tx", "nats://other:4222/out", None, "not on the source's server"),
        (f"{REDIS}/in", f"{REDIS}/out?db=1", None, "not on the source's server"),
        (f"{NATS}/tx", f"{NATS}/tx", None, "a loop"),
        (f"{NATS}/tx.>", f"{NATS}/tx.out", None, "a loop"),
        (f"{NATS}/tx", f"{NATS}/out", f"{NATS}/out", "the same destination"),
        (f"{NATS}/tx.*", f"{NATS}/out", f"{NATS}/tx.dead", r"dead_letter: .*\(a loop\)"),
    ],
)
def test_endpoints_that_cannot_work_are_refused(
    source: str, to: str, dead: str | None, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        endpoints(source, to, dead)


@pytest.mark.parametrize(
    ("pattern", "subject", "want"),
    [
        ("tx", "tx", True),
        ("tx", "tx.a", False),
        ("tx.*", "tx.a", True),
        ("tx.*", "tx.a.b", False),
        ("tx.>", "tx.a.b", True),
        ("tx.>", "tx", False),
        ("*.out", "tx.out", True),
    ],
)
def test_subject_matching(pattern: str, subject: str, want: bool) -> None:
    assert matches(Address("nats", NATS, pattern), subject) is want
