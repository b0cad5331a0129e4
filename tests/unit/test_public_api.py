"""The public surface is what we mean it to be, and the error tree is the one errors.py draws."""

from __future__ import annotations

import importlib
import re

import pytest

import outboxkit
from outboxkit import errors

INTENDED = {
    "ConfigurationError",
    "DeliveryError",
    "EmitError",
    "EncodingError",
    "InvalidTopicError",
    "NoTransactionError",
    "Outbox",
    "OutboxkitError",
    "PermanentError",
    "SchemaError",
    "TransientError",
    "UnavailableError",
    "UnroutableError",
    "__version__",
    "emit",
    "emit_async",
    "migrate",
    "migration_sql",
}


def test_all_is_the_intended_surface() -> None:
    assert set(outboxkit.__all__) == INTENDED
    assert len(outboxkit.__all__) == len(INTENDED), "no duplicates in __all__"


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("outboxkit")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from outboxkit import {name}", namespace)
    assert namespace[name] is getattr(outboxkit, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from outboxkit import *", namespace)
    assert set(namespace) - {"__builtins__"} == INTENDED


def test_version_is_a_string() -> None:
    assert isinstance(outboxkit.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", outboxkit.__version__)


def test_public_errors_are_the_ones_in_errors_module() -> None:
    for name in INTENDED:
        if name.endswith("Error"):
            assert getattr(outboxkit, name) is getattr(errors, name)


def _tree_from_docstring() -> dict[str, str | None]:
    """child -> parent, read from the box-drawing tree in errors.py's docstring."""
    assert errors.__doc__
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(\s*(?:[│ ]   )*(?:[├└]── )?)([A-Z]\w*Error)\b", line)
        if not match:
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_error_hierarchy_matches_the_documented_tree() -> None:
    tree = _tree_from_docstring()
    assert len(tree) == 14
    defined = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert set(tree) == defined, "every error class is in the drawn tree, and only those"
    for name, parent in tree.items():
        cls = getattr(errors, name)
        expected = Exception if parent is None else getattr(errors, parent)
        assert cls.__bases__ == (expected,), f"{name} should derive from {expected.__name__}"


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("UnroutableError", "TransientError"),
        ("UnavailableError", "TransientError"),
        ("TransientError", "DeliveryError"),
        ("PermanentError", "DeliveryError"),
        ("NoTransactionError", "EmitError"),
        ("EncodingError", "EmitError"),
        ("InvalidTopicError", "EmitError"),
        ("EmitError", "OutboxkitError"),
        ("ConfigurationError", "OutboxkitError"),
        ("SchemaError", "OutboxkitError"),
        ("DeliveryError", "OutboxkitError"),
        ("UnroutableError", "OutboxkitError"),
    ],
)
def test_error_is_a(child: str, parent: str) -> None:
    assert issubclass(getattr(outboxkit, child), getattr(outboxkit, parent))


@pytest.mark.parametrize(
    ("child", "other"),
    [
        ("UnroutableError", "PermanentError"),
        ("PermanentError", "TransientError"),
        ("EmitError", "DeliveryError"),
        ("NoTransactionError", "EncodingError"),
        ("ConfigurationError", "EmitError"),
    ],
)
def test_error_is_not_a(child: str, other: str) -> None:
    assert not issubclass(getattr(outboxkit, child), getattr(outboxkit, other))
