"""The ``OUTBOXKIT`` Django setting, and outboxkit URLs derived from ``DATABASES``.

::

    OUTBOXKIT = {
        "BROKER": "nats://127.0.0.1:4222",   # required by outbox_relay / outbox_consume
        "DATABASE": "default",               # the DATABASES alias holding the outbox
        "TABLE": "outbox",                   # outbox table (and <table>_meta, _lease, _relay)
        "SCHEMA": None,                      # PostgreSQL schema / MariaDB database; None: the connection's
        "INBOX_TABLE": "inbox",              # the consumer's inbox tables
        "SOURCE": "/my-service",             # CloudEvents source of emitted events
        "NOTIFY": True,                      # PostgreSQL: NOTIFY trigger that wakes the relay
        "RELAY": {"batch_size": 2000},       # any `outboxkit relay` option, by its name
        "DB_URL": None,                      # an explicit outboxkit URL instead of deriving it
    }

Read at call time, never cached at import: ``override_settings`` and per-test settings work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef

_KNOWN = {"BROKER", "DATABASE", "TABLE", "SCHEMA", "INBOX_TABLE", "SOURCE", "NOTIFY", "RELAY", "DB_URL"}

# libpq connection parameters Django passes through OPTIONS that matter to another process too
# (search_path via "options", TLS); Django-only keys (pool, isolation_level, ...) are left out.
_LIBPQ_OPTIONS = {
    "options",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "target_session_attrs",
    "connect_timeout",
    "application_name",
}


def setting() -> Mapping[str, Any]:
    """The ``OUTBOXKIT`` setting, checked: an unknown key is a typo that fails loudly."""
    value = getattr(settings, "OUTBOXKIT", None) or {}
    if not isinstance(value, Mapping):
        raise ConfigurationError("settings.OUTBOXKIT must be a dict")
    unknown = set(value) - _KNOWN
    if unknown:
        raise ConfigurationError(
            f"settings.OUTBOXKIT: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(_KNOWN))}"
        )
    return value


def alias() -> str:
    return str(setting().get("DATABASE", "default"))


def outbox_ref() -> TableRef:
    conf = setting()
    return TableRef(conf.get("TABLE", "outbox"), conf.get("SCHEMA"))


def inbox_ref() -> TableRef:
    conf = setting()
    return TableRef(conf.get("INBOX_TABLE", "inbox"), conf.get("SCHEMA"))


def broker_url() -> str | None:
    value = setting().get("BROKER")
    return str(value) if value else None


def db_url(using: str | None = None) -> str:
    """The outboxkit URL of the ``DATABASES`` entry ``using`` (default: ``OUTBOXKIT["DATABASE"]``).

    PostgreSQL, SQLite and MySQL/MariaDB engines (and their subclasses, by vendor name) are known;
    for anything else set ``OUTBOXKIT["DB_URL"]``."""
    explicit = setting().get("DB_URL")
    if explicit and using is None:
        return str(explicit)
    from django.db import connections

    name = using or alias()
    if name not in settings.DATABASES:
        raise ConfigurationError(f"settings.OUTBOXKIT DATABASE {name!r} is not in settings.DATABASES")
    return url_from_settings(connections[name].vendor, settings.DATABASES[name])


def url_from_settings(vendor: str, db: Mapping[str, Any]) -> str:
    """``DATABASES[alias]`` as a URL, for a connection ``vendor`` (``postgresql``, ``sqlite``, ``mysql``)."""
    name = str(db.get("NAME") or "")
    if vendor == "sqlite":
        if not name or name == ":memory:" or name.startswith("file:"):
            raise ConfigurationError(
                f"the outbox on SQLite needs a database file (the relay runs in another process), not NAME={name!r}"
            )
        return "sqlite:///" + os.path.abspath(name)
    if vendor not in ("postgresql", "mysql"):
        raise ConfigurationError(f"outboxkit does not know Django's {vendor!r} databases: set OUTBOXKIT['DB_URL']")
    user = quote(str(db.get("USER") or ""), safe="")
    password = quote(str(db.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(db.get("HOST") or "")
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if vendor == "mysql" and not host:
        host = "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    url = f"{'postgresql' if vendor == 'postgresql' else 'mysql'}://{auth}{host}{port}/{quote(name, safe='')}"
    if vendor == "postgresql":
        options = {k: str(v) for k, v in (db.get("OPTIONS") or {}).items() if k in _LIBPQ_OPTIONS}
        if options:
            url += "?" + urlencode(options, quote_via=quote)  # libpq reads %20, not +, as a space
    return url
