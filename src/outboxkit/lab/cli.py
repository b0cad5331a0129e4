"""``outboxkit lab run``: every strategy under the same seeded faults, measured side by side.

Wired into the main CLI with ``app.add_typer(lab_app, name="lab")``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from outboxkit.lab.faults import FAULTS
from outboxkit.lab.strategies import STRATEGIES
from outboxkit.lab.strategy import DEFAULT_DB
from outboxkit.terminal import literal, output_console

if TYPE_CHECKING:  # the runner needs the nats extra; imported where a run starts
    from outboxkit.lab.runner import LabOptions, LabRun, StrategyRun

lab_app = typer.Typer(help="The lab: strategies under injected crashes, measured side by side.", no_args_is_help=True)


def _names(value: str | None, known: dict[str, object], what: str) -> tuple[str, ...]:
    if not value:
        return tuple(known)
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise typer.BadParameter(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


@lab_app.command()
def run(
    strategies: Annotated[
        str | None, typer.Option("--strategies", help=f"Comma-separated; default all: {','.join(STRATEGIES)}.")
    ] = None,
    faults: Annotated[
        str | None, typer.Option("--faults", help=f"Comma-separated; default all: {','.join(FAULTS)}.")
    ] = None,
    events: Annotated[int, typer.Option("--events", "-n", help="Committed events per strategy.")] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Fault schedule and workload seed.")] = 1,
    db: Annotated[
        str,
        typer.Option("--db", help="postgresql://..., mysql://... (MariaDB) or sqlite (a temporary file per strategy)."),
    ] = DEFAULT_DB,
    out: Annotated[str, typer.Option("--out", help="Directory for report.json and report.html.")] = "lab-report",
    rate: Annotated[
        float, typer.Option("--rate", min=0, help="Writer transactions per second (0: as fast as it can).")
    ] = 50.0,
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, help="Strategies run at once (2 suits a 2-core machine).")
    ] = 2,
) -> None:
    """Run each strategy under the same faults and print, save and chart what each lost or duplicated."""
    # Imported here: the runner needs the nats extra, and `outboxkit --help` must work without it.
    from outboxkit.lab.report import write_reports
    from outboxkit.lab.runner import LabOptions, LabStalled, run_lab

    if events < 20:
        raise typer.BadParameter("--events must be at least 20 (faults need room)")
    options = LabOptions(
        strategies=_names(strategies, dict(STRATEGIES), "strategy"),
        faults=_names(faults, dict(FAULTS), "fault"),
        events=events,
        seed=seed,
        db="sqlite" if db.startswith("sqlite") else db,
        rate=rate,
        parallel=parallel,
    )
    console = output_console()
    try:
        # Not a terminal (CI log, a file): no spinner frames and no partial tables, one report at the end.
        lab = _run_with_progress(options, console) if console.is_terminal else asyncio.run(run_lab(options))
    except LabStalled as exc:
        # The diagnostic is the message; a traceback would only bury it.
        console.print(literal(f"lab stopped: {exc}"))
        raise typer.Exit(1) from None
    print_report(lab, console, title=f"outboxkit lab (seed {seed}, {events} events)")
    json_path, html_path = write_reports(lab, out)
    console.print(
        f"{len(lab.runs)} strategies ({len(lab.skipped)} skipped), {options.parallel} at a time, in "
        f"{lab.elapsed:.1f}s; wrote {json_path} and {html_path}"
    )


def print_report(lab: LabRun, console: Console, title: str) -> None:
    """Recommendation first (what to choose), then the table whose numbers back it, the skipped
    strategies with their reason, and one verdict per strategy."""
    from outboxkit.lab.report import recommendation, skipped_lines, table, verdicts

    console.print(Text("Recommendation", style="bold"))
    for line in recommendation(lab):
        console.print(literal(f"- {line}"))
    console.print()
    console.print(table(lab.runs, title=title))
    for line in skipped_lines(lab.skipped):
        console.print(literal(line))
    console.print()
    for line in verdicts([r.as_dict() for r in lab.runs]):
        console.print(literal(line))


def _run_with_progress(options: LabOptions, console: Console) -> LabRun:
    """One spinner line per strategy while it runs; a one-line result when it ends."""
    from outboxkit.lab.runner import run_lab

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, TaskID] = {}

        def on_phase(strategy: str, phase: str) -> None:
            if strategy not in tasks:
                tasks[strategy] = progress.add_task(strategy, total=1)
            done = 1 if phase.startswith("skipped") else 0  # a skipped strategy stops spinning at once
            progress.update(tasks[strategy], description=f"{strategy}: {phase}", completed=done)

        def on_done(result: StrategyRun) -> None:
            t = result.verdict.tally
            progress.update(
                tasks[result.strategy],
                completed=1,
                description=f"{result.strategy}: done, lost {t.lost}, invented {t.phantom} ({result.elapsed:.0f}s)",
            )

        return asyncio.run(run_lab(options, on_phase, on_done))
