"""``outboxkit lab run`` off a terminal: the recommendation first, the table once, skips said."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from outboxkit.cli import app
from outboxkit.lab.runner import LabOptions, run_lab


def test_off_a_terminal_the_report_is_printed_once_recommendation_first(tmp_path: Path) -> None:
    args = ["lab", "run", "--db", "sqlite", "--strategies", "dual-write,binlog", "--faults", "kill-after-commit"]
    result = CliRunner().invoke(app, [*args, "-n", "20", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("outboxkit lab (seed 1, 20 events)") == 1  # the table's title: printed once
    assert out.count("│ dual-write") == 1
    assert out.index("Recommendation") < out.index("outboxkit lab (seed 1")
    assert "you cannot run a relay: nothing this run measured held (dual-write lost" in out
    assert "binlog: skipped, needs mariadb; this run's database is sqlite" in out
    assert "\x1b[" not in out  # no spinner frames or colour codes in a log
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["skipped"] == [{"strategy": "binlog", "reason": "needs mariadb; this run's database is sqlite"}]
    assert report["recommendation"][2].startswith("you cannot run a relay: nothing this run measured held")


async def test_a_strategy_the_database_cannot_run_is_listed_with_the_reason() -> None:
    phases: list[tuple[str, str]] = []
    options = LabOptions(strategies=("wal", "binlog"), faults=("kill-after-commit",), events=20, db="sqlite")
    lab = await run_lab(options, on_phase=lambda s, p: phases.append((s, p)))
    assert lab.runs == []
    assert lab.skipped == [
        ("wal", "needs postgresql; this run's database is sqlite"),
        ("binlog", "needs mariadb; this run's database is sqlite"),
    ]
    assert ("wal", "skipped: needs postgresql; this run's database is sqlite") in phases


async def test_independent_strategies_run_side_by_side(tmp_path: Path) -> None:
    """With ``parallel=2`` the second strategy starts before the first is verified; with 1 it
    waits. Order of phases, not time: nothing here depends on the machine's speed."""
    phases: list[tuple[str, str]] = []
    options = LabOptions(
        strategies=("dual-write", "outbox-inline"), faults=("kill-after-commit",), events=20, db="sqlite", parallel=2
    )
    lab = await run_lab(options, on_phase=lambda s, p: phases.append((s, p)))
    assert [r.strategy for r in lab.runs] == ["dual-write", "outbox-inline"]  # the order asked for
    started = phases.index(("outbox-inline", "setting up"))
    assert started < phases.index(("dual-write", "verifying"))
