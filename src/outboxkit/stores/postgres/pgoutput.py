"""Decoding PostgreSQL's built-in ``pgoutput`` logical replication messages (protocol version 1).

Only what the relay needs: Begin (commit time), Relation (column names and types), Insert (the new
row: text, or each type's binary send format when the reader asked for ``binary``), Commit (the
LSN just past the commit record, where the slot may be advanced to once every event of the
transaction is confirmed) and logical decoding Messages (table-less events). Updates,
deletes, truncates, types and origins are skipped. Pure: bytes in, records out; no I/O.

Layout: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    committed_at: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # advance the slot here once the transaction's events are done


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    columns: tuple[str, ...]
    types: tuple[int, ...] = field(default=(), compare=False)  # each column's type OID


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    # Text form (str), binary send format (bytes: only with the reader's ``binary`` option; see
    # ``binary_value``), None for NULL (and for an unchanged TOAST value, never in an INSERT).
    values: tuple[str | bytes | None, ...]


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Record = Begin | Commit | Relation | Insert | Message | None


def _string(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\x00", at)
    # Names and prefixes are the server's text; a prefix that is not UTF-8 only fails to match ours.
    return data[at:end].decode(errors="replace"), end + 1


def _time(micros: int) -> datetime:
    return _PG_EPOCH + timedelta(microseconds=micros)


def _tuple(data: bytes, at: int) -> tuple[tuple[str | bytes | None, ...], int]:
    (count,) = struct.unpack_from("!h", data, at)
    at += 2
    values: list[str | bytes | None] = []
    for _ in range(count):
        kind = data[at : at + 1]
        at += 1
        if kind == b"t":
            (length,) = struct.unpack_from("!i", data, at)
            at += 4
            values.append(data[at : at + length].decode())
            at += length
        elif kind == b"b":
            # A type's binary send format; what it means depends on the column's type (binary_value).
            (length,) = struct.unpack_from("!i", data, at)
            at += 4
            values.append(bytes(data[at : at + length]))
            at += length
        else:  # b"n" NULL, b"u" unchanged TOAST (never in an INSERT)
            values.append(None)
    return tuple(values), at


def decode(data: bytes) -> Record:
    """One pgoutput message; ``None`` for kinds the relay does not use."""
    kind = data[:1]
    if kind == b"B":
        lsn, ts, xid = struct.unpack_from("!qqI", data, 1)
        return Begin(lsn, _time(ts), xid)
    if kind == b"C":
        _flags, commit_lsn, end_lsn, _ts = struct.unpack_from("!bqqq", data, 1)
        return Commit(commit_lsn, end_lsn)
    if kind == b"R":
        (relid,) = struct.unpack_from("!I", data, 1)
        namespace, at = _string(data, 5)
        name, at = _string(data, at)
        at += 1  # replica identity
        (ncols,) = struct.unpack_from("!h", data, at)
        at += 2
        columns, types = [], []
        for _ in range(ncols):
            at += 1  # flags
            column, at = _string(data, at)
            (oid,) = struct.unpack_from("!I", data, at)
            at += 8  # type oid, type modifier
            columns.append(column)
            types.append(oid)
        return Relation(relid, namespace, name, tuple(columns), tuple(types))
    if kind == b"I":
        (relid,) = struct.unpack_from("!I", data, 1)
        values, _ = _tuple(data, 6)  # skip relid and the 'N' marker
        return Insert(relid, values)
    if kind == b"M":
        flags, lsn = struct.unpack_from("!bq", data, 1)
        prefix, at = _string(data, 10)
        (length,) = struct.unpack_from("!i", data, at)
        at += 4
        return Message(bool(flags & 1), lsn, prefix, bytes(data[at : at + length]))
    return None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


# -- binary column values (pgoutput ``binary 'true'``, PostgreSQL 14+) ------------------------------
# Each type's ``typsend`` format, read into what the table relay's driver would hand over: int for
# integers, bytes for bytea (no hex to undo), the uuid's text, the JSON text of json/jsonb (the row
# check parses it), an aware datetime for timestamps. A value that cannot be read raises: the
# decoder makes that row a dead letter of its own (H13), as it does for a bad text value.
_INT2, _INT4, _INT8, _BOOL, _BYTEA, _UUID = 21, 23, 20, 16, 17, 2950
_TEXTS = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name: the text's own bytes
_JSON, _JSONB = 114, 3802
_TIMESTAMPTZ, _TIMESTAMP = 1184, 1114
_INFINITY, _MINUS_INFINITY = 2**63 - 1, -(2**63)


def _timestamp(raw: bytes) -> datetime | str:
    (micros,) = struct.unpack("!q", raw)
    if micros == _INFINITY:
        return "infinity"  # as the text form says it; not a time the row check takes
    if micros == _MINUS_INFINITY:
        return "-infinity"
    return _PG_EPOCH + timedelta(microseconds=micros)


def _jsonb(raw: bytes) -> str:
    if raw[:1] != b"\x01":
        raise ValueError(f"jsonb binary format version {raw[:1]!r} is not 1")
    return raw[1:].decode()


_BINARY: dict[int, Callable[[bytes], object]] = {
    _INT2: lambda raw: struct.unpack("!h", raw)[0],
    _INT4: lambda raw: struct.unpack("!i", raw)[0],
    _INT8: lambda raw: struct.unpack("!q", raw)[0],
    _BOOL: lambda raw: raw == b"\x01",
    _BYTEA: bytes,
    _UUID: lambda raw: str(uuid.UUID(bytes=raw)),
    _JSON: bytes.decode,
    _JSONB: _jsonb,
    _TIMESTAMPTZ: _timestamp,
    _TIMESTAMP: _timestamp,
    **{oid: bytes.decode for oid in _TEXTS},
}


def binary_value(oid: int, raw: bytes) -> object:
    """A column value sent in binary, read by its type OID; other types stay their raw bytes."""
    reader = _BINARY.get(oid)
    return raw if reader is None else reader(raw)
