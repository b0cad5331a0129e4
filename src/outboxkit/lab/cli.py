"""``outboxkit lab run``: every strategy under the same seeded faults, measured side by side.

Wired into the main CLI with ``app.add_typer(lab_app, name="lab")``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from outboxkit.lab.faults import FAULTS
from outboxkit.lab.runner import DEFAULT_DB, LabOptions, StrategyRun, run_lab
from outboxkit.lab.strategies import STRATEGIES

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
) -> None:
    """Run each strategy under the same faults and print, save and chart what each lost or duplicated."""
    from outboxkit.lab.report import table, write_reports

    if events < 20:
        raise typer.BadParameter("--events must be at least 20 (faults need room)")
    options = LabOptions(
        strategies=_names(strategies, dict(STRATEGIES), "strategy"),
        faults=_names(faults, dict(FAULTS), "fault"),
        events=events,
        seed=seed,
        db="sqlite" if db.startswith("sqlite") else db,
    )
    console = Console()
    done: list[StrategyRun] = []
    started = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("starting", total=len(options.strategies))

        def on_phase(strategy: str, phase: str) -> None:
            progress.update(task, description=f"[{len(done) + 1}/{len(options.strategies)}] {strategy}: {phase}")

        def on_done(result: StrategyRun) -> None:
            done.append(result)
            progress.advance(task)
            progress.console.print(table(done, title=f"outboxkit lab (seed {seed}, {events} events)"))

        lab = asyncio.run(run_lab(options, on_phase, on_done))
    json_path, html_path = write_reports(lab, out)
    console.print("[bold]When each method fits[/]")
    for run in lab.runs:
        console.print(f"  [bold]{run.strategy}[/]: {run.fits}", highlight=False)
    console.print(f"{len(lab.runs)} strategies in {time.monotonic() - started:.1f}s; wrote {json_path} and {html_path}")
