"""docs/fastapi.md shows code from examples/fastapi_orders: every block titled with a file must be
a verbatim part of that file (the example itself runs in tests/integration/test_fastapi_example.py)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "fastapi.md"


def test_every_titled_block_is_a_verbatim_part_of_its_example_file() -> None:
    blocks = re.findall(r'^```python title="([^"]+)"\n(.*?)^```$', PAGE.read_text(), re.S | re.M)
    assert len(blocks) >= 4
    for path, body in blocks:
        source = (ROOT / path).read_text()
        assert body in source, f"a block on {PAGE.name} is not in {path}:\n{body}"


def test_a_changed_block_would_be_caught() -> None:
    """The check is real: one changed character makes a block no longer part of its file."""
    path, body = re.findall(r'^```python title="([^"]+)"\n(.*?)^```$', PAGE.read_text(), re.S | re.M)[0]
    assert body.replace("db.begin()", "db.begin_nested()") not in (ROOT / path).read_text()
