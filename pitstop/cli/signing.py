"""``pitstop key``, ``pitstop sign``, ``pitstop signatures``: signed model versions.

Keys are Ed25519 PEM files (:mod:`pitstop.security.signature`); the registry keeps signatures
and the signer's public key, servers trust only their own key files (docs/signing.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click
from rich.table import Table

from pitstop.cli.context import Context, err, json_option, out, pass_context, print_json, when
from pitstop.errors import Conflict, InternalError, InvalidInput
from pitstop.registry import Registry, SignatureRecord, VersionRecord
from pitstop.registry.names import check_name
from pitstop.security.signature import (
    PrivateKey,
    Signature,
    generate_key,
    parse_public_key,
    private_pem,
    read_private_key,
    read_public_key,
    sign,
    verifies,
)

KEY_OPTION_HELP = "Ed25519 private key file (pitstop key create); repeatable."


def read_signing_keys(paths: Sequence[Path]) -> list[PrivateKey]:
    """The private keys of ``--sign``/``--key`` options, read before anything is changed."""
    return [read_private_key(path) for path in paths]


def sign_version(
    registry: Registry,
    record: VersionRecord,
    keys: Sequence[PrivateKey],
    *,
    actor: str,
    reason: str | None = None,
) -> list[tuple[str, bool]]:
    """Sign ``record``'s digest with each key, check the signature, store it (audited
    ``version.sign``). (key id, newly stored) per key."""
    done = []
    for key in keys:
        signature = sign(key, record.digest)
        if not verifies(key.public, record.digest, signature):  # cheap; catches a broken build
            raise InternalError(f"the signature by {key.key_id} does not verify; not stored")
        stored = registry.signatures.add(
            record.model, record.number, key_id=signature.key_id, algorithm=signature.algorithm,
            public_key=key.public.pem, signature=signature.value, actor=actor, reason=reason,
        )  # fmt: skip
        done.append((key.key_id, stored))
    return done


def print_signed(done: Sequence[tuple[str, bool]]) -> None:
    for key_id, stored in done:
        note = "" if stored else " (already signed by this key)"
        out.print(f"  signed by {key_id}{note}", highlight=False)


@click.group()
def key() -> None:
    """Ed25519 signing keys for model versions (docs/signing.md)."""


@key.command("create")
@click.argument("name")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Folder to write NAME.key and NAME.pub into.",
)
def key_create(name: str, folder: Path) -> None:
    """Create a key pair: NAME.key (private, mode 0600; keep it secret) and NAME.pub (give
    it to servers: PITSTOP_TRUSTED_KEYS). Prints the key id. Never overwrites a file."""
    check_name("key name", name)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise Conflict(f"{path} already exists; pick another name or move it away")
    folder.mkdir(parents=True, exist_ok=True)
    pair = generate_key()
    _write_new(private, private_pem(pair), 0o600)
    _write_new(public, pair.public.pem.encode("ascii"), 0o644)
    click.echo(pair.key_id)
    err.print(f"wrote {private} (private, mode 0600) and {public}", highlight=False)


@key.command("id")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def key_id(path: Path) -> None:
    """Print the id of a key file (public or private)."""
    try:
        found = read_public_key(path).key_id
    except InvalidInput:
        found = read_private_key(path).key_id
    click.echo(found)


@click.command("sign")
@click.argument("model")
@click.argument("version")
@click.option(
    "--key",
    "key_files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=KEY_OPTION_HELP,
)
@click.option("--reason", help="Why, for the audit history.")
@pass_context
def sign_command(
    ctx: Context, model: str, version: str, key_files: tuple[Path, ...], reason: str | None
) -> None:
    """Sign VERSION (a number or an alias) of MODEL: its digest, with each --key. Servers with
    PITSTOP_REQUIRE_SIGNATURE retry it at once if it had failed for want of a signature."""
    keys = read_signing_keys(key_files)
    with ctx.registry() as registry:
        record = registry.version(model, version)
        done = sign_version(registry, record, keys, actor=ctx.actor, reason=reason)
    out.print(f"{record.label} {record.digest}", soft_wrap=True, highlight=False)
    print_signed(done)


@click.command()
@click.argument("model")
@click.argument("version", required=False)
@json_option
@pass_context
def signatures(ctx: Context, model: str, version: str | None, as_json: bool) -> None:
    """Signatures of MODEL's versions (or of VERSION): key, signer, when, and whether each
    verifies against the public key stored with it. Whether a server trusts the key is its
    own PITSTOP_TRUSTED_KEYS."""
    with ctx.registry() as registry:
        number = None if version is None else registry.version(model, version).number
        rows = registry.signatures.of(model, number)
    checked = [(row, _verifies(row)) for row in rows]
    if as_json:
        print_json(
            [
                {
                    "model": row.model, "version": row.version, "digest": row.digest,
                    "key_id": row.key_id, "algorithm": row.algorithm, "signature": row.signature,
                    "signed_by": row.signed_by, "signed_at": row.signed_at, "verifies": ok,
                }
                for row, ok in checked
            ]
        )  # fmt: skip
        return
    table = Table("VERSION", "KEY", "ALGORITHM", "VERIFIES", "SIGNED BY", "WHEN")
    for row, ok in checked:
        table.add_row(
            f"v{row.version}", row.key_id, row.algorithm, "yes" if ok else "NO",
            row.signed_by, when(row.signed_at),
        )  # fmt: skip
    out.print(table)


def _verifies(row: SignatureRecord) -> bool:
    """Whether the stored signature is the stored public key's signature of the digest (the
    key's id matching it). Says nothing about trust."""
    try:
        public = parse_public_key(row.public_key.encode("utf-8"), "stored public key")
    except InvalidInput:
        return False
    return verifies(public, row.digest, Signature(row.key_id, row.algorithm, row.signature))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet, created with ``mode`` (no window in which a
    private key is readable by others)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise Conflict(f"{path} already exists; pick another name or move it away") from None
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def register(group: click.Group) -> None:
    """Add ``key``, ``sign`` and ``signatures`` to ``group``."""
    for command in (key, sign_command, signatures):
        group.add_command(command)
