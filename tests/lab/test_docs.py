"""docs/strategies.md cannot drift from the code: each of its runs (PostgreSQL, MariaDB, SQLite)
lists exactly the code's strategies (run or skipped with a reason), each strategy has its section,
and each run says how it was made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outboxkit.lab.markdown import BLOCKS, listed, markers, render, replace_block
from outboxkit.lab.strategies import STRATEGIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"


# The block of each run, the database its command line names, and what its skips must say.
DATABASES = {"": ("", "postgresql"), "mariadb": ("--db mysql://", "mariadb"), "sqlite": ("--db sqlite", "sqlite")}


@pytest.mark.parametrize("block", BLOCKS)
def test_the_documented_run_lists_exactly_the_codes_strategies(block: str) -> None:
    ran, skipped = listed(DOC.read_text(), block)
    fix = f"run scripts/lab-docs {block} (testslot on a shared machine)"
    assert sorted(ran + skipped) == sorted(STRATEGIES), fix
    assert ran == sorted(ran, key=list(STRATEGIES).index)  # in the code's order, as the lab runs them


def test_every_strategy_has_its_section() -> None:
    sections = re.findall(r"^### ([a-z+-]+) — ", DOC.read_text(), re.M)
    assert sorted(sections) == sorted(STRATEGIES)


@pytest.mark.parametrize("block", BLOCKS)
def test_the_documented_run_states_command_date_machine_and_load(block: str) -> None:
    begin, end = markers(block)
    text = DOC.read_text().split(begin)[1].split(end)[0]
    option, database = DATABASES[block]
    command = re.search(r"^outboxkit lab run .*$", text, re.M)
    assert command and option in command.group(0)
    if not block:
        assert "--db" not in command.group(0)  # the main run is the default database's
    assert re.search(r"Run \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+ \(\d+ cores", text)
    assert re.search(r"load average [\d.]+ at the start, [\d.]+ at the end", text)
    assert "What it recommends" in text and "you control the code and run" in text
    # every skip gives its reason, and a database-bound skip names this run's database
    for reason in re.findall(r"^Skipped: [a-z+-]+ \((.+)\)\.$", text, re.M):
        assert "this run's database" not in reason or reason.endswith(f"this run's database is {database}")


def test_replace_block_keeps_the_rest_and_refuses_a_page_without_markers() -> None:
    (b1, e1), (b2, e2) = markers(), markers("sqlite")
    page = f"intro\n{b1}\nold\n{e1}\nmid\n{b2}\nold\n{e2}\nafter\n"
    assert replace_block(page, "new") == f"intro\n{b1}\nnew\n{e1}\nmid\n{b2}\nold\n{e2}\nafter\n"
    assert replace_block(page, "new", "sqlite") == f"intro\n{b1}\nold\n{e1}\nmid\n{b2}\nnew\n{e2}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        replace_block("no markers", "new")
    with pytest.raises(ValueError, match="lab-run-mariadb markers"):
        replace_block(page, "new", "mariadb")
    with pytest.raises(ValueError, match="no lab-run block"):
        markers("oracle")


def test_a_brief_block_keeps_the_run_and_its_skips_and_leaves_out_the_verdicts() -> None:
    run = dict.fromkeys(("committed", "lost", "phantom", "duplicates", "order_violations", "throughput"), 1)
    run |= dict.fromkeys(("steady_p50_ms", "steady_p99_ms", "recovery_max_ms", "write_p50_ms"), 1.0)
    run |= {"strategy": "dual-write", "per_fault": []}
    data = {
        "options": {"faults": ["kill-relay"], "db": "sqlite"},
        "machine": {"platform": "Linux", "cpus": 2, "python": "3.11", "load_1m_start": 1.0, "load_1m_end": 2.0},
        "strategies": [run],
        "started_utc": "2026-12-07 21:00 UTC",
        "elapsed_s": 3.0,
        "recommendation": ["you control the code and run SQLite: none"],
        "skipped": [{"strategy": "wal", "reason": "needs postgresql; this run's database is sqlite"}],
        "verdicts": ["dual-write: loses 1"],
    }
    full, brief = (
        render(data, "outboxkit lab run --db sqlite"),
        render(data, "outboxkit lab run --db sqlite", brief=True),
    )
    assert brief.endswith("Skipped: wal (needs postgresql; this run's database is sqlite).")
    assert "computed from the table below" in brief  # its one table; the full block has more
    assert full.startswith(brief.replace("the table below", "the tables below"))
    assert "dual-write: loses 1" in full and "dual-write: loses 1" not in brief
