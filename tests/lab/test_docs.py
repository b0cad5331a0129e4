"""docs/strategies.md cannot drift from the code: its run lists exactly the code's strategies
(run or skipped with a reason), each strategy has its section, and the run says how it was made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outboxkit.lab.markdown import BEGIN, END, listed, replace_block
from outboxkit.lab.strategies import STRATEGIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"


def test_the_documented_run_lists_exactly_the_codes_strategies() -> None:
    ran, skipped = listed(DOC.read_text())
    assert sorted(ran + skipped) == sorted(STRATEGIES), "run scripts/lab-docs (testslot on a shared machine)"
    assert ran == sorted(ran, key=list(STRATEGIES).index)  # in the code's order, as the lab runs them


def test_every_strategy_has_its_section() -> None:
    sections = re.findall(r"^### ([a-z+-]+) — ", DOC.read_text(), re.M)
    assert sorted(sections) == sorted(STRATEGIES)


def test_the_documented_run_states_command_date_machine_and_load() -> None:
    block = DOC.read_text().split(BEGIN)[1].split(END)[0]
    assert re.search(r"^outboxkit lab run ", block, re.M)
    assert re.search(r"Run \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+ \(\d+ cores", block)
    assert re.search(r"load average [\d.]+ at the start, [\d.]+ at the end", block)
    assert "What it recommends" in block and "you control the code and run" in block


def test_replace_block_keeps_the_rest_and_refuses_a_page_without_markers() -> None:
    page = f"intro\n{BEGIN}\nold\n{END}\nafter\n"
    assert replace_block(page, "new") == f"intro\n{BEGIN}\nnew\n{END}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        replace_block("no markers", "new")
