"""``package.module:attr`` options, imported one way everywhere.

Every option that names user code (``consume --handler``, ``inbox dead-letters retry --handler``,
``projections rebuild --projection``, and Django's ``manage.py outbox_consume``, which hands over to
``consume``) goes through :func:`load_object`, so they all find a module in the same places and fail
in the same one line.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from outboxkit.errors import ConfigurationError


def import_from_cwd() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does.

    The ``outboxkit`` console script starts with its own bin directory on ``sys.path`` instead, so
    without this a handler module next to the user's code would need ``PYTHONPATH``."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def load_object(spec: str, *, option: str, what: str) -> Any:
    """``package.module:attr`` -> the attribute (dots in ``attr`` walk into it: ``mod:Class.method``).

    ``option`` (``--handler``) and ``what`` (``handler``) word the one-line
    :class:`~outboxkit.errors.ConfigurationError` raised for each way it can fail: a malformed
    spec, a module that does not import, an attribute that is not there."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ConfigurationError(f"{option} must look like package.module:attribute, got {spec!r}")
    import_from_cwd()
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        # The driver's message says which module is missing: the named one, or one it imports.
        raise ConfigurationError(f"cannot import {what} module {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigurationError(f"{spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return found
