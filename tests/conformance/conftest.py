"""Conformance fixtures: run outboxkit.testing.conformance.CHECKS against each adapter."""

from __future__ import annotations

import pytest

from outboxkit.testing.conformance import CHECKS, NotSupported

check_param = pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])


async def run_check(check: object, harness: object) -> None:
    try:
        await check(harness)  # type: ignore[operator]
    except NotSupported as exc:
        pytest.skip(f"not applicable: {exc}")
