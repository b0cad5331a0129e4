"""docs/event-sourcing.md: the worked order example runs as written (every python block, in order,
in one namespace, in a fresh directory), and its assertions hold."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "event-sourcing.md"


def test_the_order_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("event_sourcing_doc")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # the page's own code, as a reader runs it
    assert "stream 'order-42': expected version 4, found version 5" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "shop.db")
    namespace["conn"].close()
