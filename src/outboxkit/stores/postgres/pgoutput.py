"""Decoding PostgreSQL's built-in ``pgoutput`` logical replication messages (protocol version 1).

Only what the relay needs: Begin (commit time), Relation (column names), Insert (the new row as
text), Commit (the LSN just past the commit record, where the slot may be advanced to once every
event of the transaction is confirmed) and logical decoding Messages (table-less events). Updates,
deletes, truncates, types and origins are skipped. Pure: bytes in, records out; no I/O.

Layout: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    values: tuple[str | None, ...]  # text form, None for NULL (and for an unchanged TOAST value)


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


def _tuple(data: bytes, at: int) -> tuple[tuple[str | None, ...], int]:
    (count,) = struct.unpack_from("!h", data, at)
    at += 2
    values: list[str | None] = []
    for _ in range(count):
        kind = data[at : at + 1]
        at += 1
        if kind == b"t" or kind == b"b":
            (length,) = struct.unpack_from("!i", data, at)
            at += 4
            values.append(data[at : at + length].decode())
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
        columns = []
        for _ in range(ncols):
            at += 1  # flags
            column, at = _string(data, at)
            at += 8  # type oid, type modifier
            columns.append(column)
        return Relation(relid, namespace, name, tuple(columns))
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
