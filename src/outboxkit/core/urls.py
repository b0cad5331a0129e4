"""URL helpers: the secret part of a URL never reaches a log line or an error message.

Three layers, because no single one sees every form a secret takes:

* :func:`redact_url` masks what a URL's own syntax marks as secret: ``user:password@``, a NATS
  token (``nats://TOKEN@host``: the lone user part *is* the credential), and query parameters named
  like a secret (``?password=``, ``sasl_password=``, ``token=`` ...); a libpq keyword DSN
  (``host=h password=secret``) gets its ``password=`` masked too;
* :func:`remember_secrets` records the secret values of the URLs a process was configured with,
  and :func:`scrub` masks those values wherever they appear (a driver that echoes a password in its
  own words, a traceback), used by the log formatters and the CLI's error line;
* ``core.logfmt`` runs both on every line it writes.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"

# Query parameters that carry credentials: libpq's password, Kafka's sasl_password /
# sasl.password, tokens, API keys ...
_CREDENTIAL_PARAM = r"[\w.\-]*(?:pass|pwd|secret|token|credential|api[_\-.]?key|auth)[\w.\-]*"
_QUERY_SECRET = re.compile(rf"(?i)((?:^|&)(?:{_CREDENTIAL_PARAM})=)[^&]*")
# libpq keyword/value connection strings: password=secret or password='sec ret'.
_KEYWORD_SECRET = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)")
# Schemes whose user part alone is a credential (a NATS token, a Redis password without a user).
_TOKEN_SCHEMES = frozenset({"nats", "tls"})


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; NATS tokens,
    query-string secrets (``?password=...``) and libpq keyword DSNs are masked too."""
    if "://" not in url:
        return _KEYWORD_SECRET.sub(rf"\1{MASK}", url) if "=" in url else url
    try:
        parts = urlsplit(url)
        password = parts.password
        username = parts.username
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if password is not None:
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{username or ''}:{MASK}@{host}"
    elif username and parts.scheme.lower() in _TOKEN_SCHEMES:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = _QUERY_SECRET.sub(rf"\1{MASK}", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret; urlunsplit would normalise sqlite://// paths
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def secrets_of(url: str) -> list[str]:
    """The secret values in ``url`` (password, NATS token, secret query parameters, keyword DSN
    password), decoded and raw, for :func:`scrub`."""
    found: list[str] = []
    if "://" not in url:
        for match in _KEYWORD_SECRET.finditer(url):
            found.append(match.group(2).strip("'"))
        return [s for s in found if s]
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return []
    if password:
        found.append(password)
    elif username and parts.scheme.lower() in _TOKEN_SCHEMES:
        found.append(username)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if re.fullmatch(_CREDENTIAL_PARAM, name, re.IGNORECASE):
            found.append(value)
    out: list[str] = []
    for secret in found:
        out += [secret, unquote(secret)]
    # Very short values would mask ordinary words; they are still masked in URLs above.
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


_known: set[str] = set()
_known_lock = threading.Lock()


def remember_secrets(*urls: str | None) -> None:
    """Mask the secrets of these URLs in everything :func:`scrub` sees from now on (process-wide)."""
    values = [s for url in urls if url for s in secrets_of(url)]
    if values:
        with _known_lock:
            _known.update(values)


def scrub(text: str) -> str:
    """``text`` with every remembered secret masked."""
    if not _known:
        return text
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()
