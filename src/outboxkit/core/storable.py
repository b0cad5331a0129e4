"""Text made storable whatever an input held (H13: dead-lettering must not fail on content).

A reason, a key or a topic that reaches a dead letter may carry anything a producer or a broker put
in it: lone UTF-16 surrogates (which no UTF-8 driver can encode), NUL (which PostgreSQL text
refuses), control characters, megabytes. Recording the dead letter must not fail because of that,
or the input that caused it would be read again forever. Pure; every store uses it.
"""

from __future__ import annotations

#: Longest error text a dead letter keeps (characters).
ERROR_LIMIT = 2000


def storable(text: object, limit: int = ERROR_LIMIT) -> str:
    """``text`` as any UTF-8 text column accepts it: lone surrogates become ``\\udXXX`` escapes,
    NUL becomes ``\\0``, and the result has at most ``limit`` characters (marked with an ellipsis
    when cut). Non-str input is shown with ``repr``."""
    if not isinstance(text, str):
        text = repr(text)
    if len(text) > limit * 4:  # do not escape megabytes only to cut them
        text = text[: limit * 4]
    cleaned = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\0")
    if len(cleaned) > limit:
        return cleaned[: max(0, limit - 1)] + "…"
    return cleaned
