from __future__ import annotations

import pytest

from tests.conftest import PG_URL, require


@pytest.fixture
def lab_pg() -> str:
    require("PostgreSQL", "127.0.0.1", 5432)
    return PG_URL
