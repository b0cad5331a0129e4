"""URL helpers: the secret part of a URL never reaches a log line."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# libpq also takes the password as a query parameter: postgresql://u@h/db?password=secret
_QUERY_SECRET = re.compile(r"(?i)((?:^|&)(?:password|passwd|pass|token|secret)=)[^&]*")


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; query-string
    secrets (``?password=...``) are masked too."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable url>"
    if password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    query = _QUERY_SECRET.sub(r"\1***", parts.query)
    if password is None and query == parts.query:
        return url  # nothing secret; urlunsplit would normalise sqlite://// paths
    return urlunsplit(parts._replace(query=query))


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()
