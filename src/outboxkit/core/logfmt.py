"""Log formats: one JSON object per line for log pipelines, or plain lines for people.

Both formats mask secrets on the way out, whatever the caller logged: every URL-looking string
goes through :func:`~outboxkit.core.urls.redact_url`, and fields named like a secret (``password``,
``token``, ...) are replaced. Logging is the last line of defence, so it does not trust call sites.

Example::

    configure_logging(logging.INFO, "json")
    logging.getLogger("outboxkit.relay").info("relay started", extra={"db": "postgresql://u:pw@h/db"})
    # {"time": "2025-01-31T12:00:00.123Z", "level": "INFO", "logger": "outboxkit.relay",
    #  "message": "relay started", "db": "postgresql://u:***@h/db"}
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from outboxkit.core.urls import redact_url, scrub

LogFormat = Literal["plain", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("plain", "json")

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The logger of the lines a running relay or consumer shows at the default level: one when it
#: starts (what, where, buckets) and a periodic summary. The CLI sets it to INFO unless --quiet.
LIFE_LOGGER = "outboxkit.life"

# scheme://anything-up-to-whitespace-or-quote: wide on purpose, a false positive costs nothing
# because redact_url returns text without a password unchanged.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_SECRET_NAME = re.compile(r"(?i)pass(?:wd|word)?$|secret|token|api_?key|authorization|credential")
MASK = "***"
_KEYWORD_PASSWORD = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'&]+)")

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def redact_text(text: str) -> str:
    """Mask the secret part of every URL found in ``text``, a libpq ``password=``, and every
    secret of the configured URLs (``core.urls.remember_secrets``)."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    if "password" in text.lower():
        text = _KEYWORD_PASSWORD.sub(rf"\1{MASK}", text)
    return scrub(text)


def _clean(name: str, value: Any) -> Any:
    """A JSON-safe, secret-free copy of one field value."""
    if _SECRET_NAME.search(name):
        return MASK
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(name, v) for v in value]
    return redact_text(str(value))


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, cleaned."""
    return {k: _clean(k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, then
    the ``extra=`` fields, and ``exc`` with the traceback when there is one. Fields never override
    the four fixed keys, so a log pipeline can rely on them."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key, value in extra_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            doc["stack"] = redact_text(self.formatStack(record.stack_info))
        # ensure_ascii=False keeps non-ASCII topics readable; json.dumps escapes newlines, so one
        # record stays one line even with a traceback in it.
        return json.dumps(doc, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` with secrets masked."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = redact_text(super().format(record))
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in fields.items())
        return line


def formatter_for(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "plain":
        return PlainFormatter()
    raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")


def configure_logging(
    level: int, fmt: LogFormat = "plain", stream: TextIO | None = None, *, logger: logging.Logger | None = None
) -> logging.Handler:
    """Replace the handlers of ``logger`` (the root logger) with one that writes ``fmt`` lines to
    ``stream`` (stderr), as ``logging.basicConfig(force=True)`` would."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(fmt))
    root = logger if logger is not None else logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
