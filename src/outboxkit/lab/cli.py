"""``outboxkit lab run``: every strategy under the same seeded faults, measured side by side.

Wired into the main CLI with ``app.add_typer(lab_app, name="lab")``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from outboxkit.lab.faults import FAULTS
from outboxkit.lab.strategies import STRATEGIES
from outboxkit.lab.strategy import DEFAULT_DB
from outboxkit.terminal import literal, output_console

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
) -> None:
    """Run each strategy under the same faults and print, save and chart what each lost or duplicated."""
    # Imported here: the runner needs the nats extra, and `outboxkit --help` must work without it.
    from outboxkit.lab.report import table, verdicts, write_reports
    from outboxkit.lab.runner import LabOptions, LabStalled, StrategyRun, run_lab

    if events < 20:
        raise typer.BadParameter("--events must be at least 20 (faults need room)")
    options = LabOptions(
        strategies=_names(strategies, dict(STRATEGIES), "strategy"),
        faults=_names(faults, dict(FAULTS), "fault"),
        events=events,
        seed=seed,
        db="sqlite" if db.startswith("sqlite") else db,
        rate=rate,
    )
    console = output_console()
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

        try:
            lab = asyncio.run(run_lab(options, on_phase, on_done))
        except LabStalled as exc:
            # The diagnostic is the message; a traceback would only bury it.
            console.print(literal(f"lab stopped: {exc}"))
            raise typer.Exit(1) from None
    console.print()
    for line in verdicts([r.as_dict() for r in lab.runs]):
        console.print(literal(line))
    json_path, html_path = write_reports(lab, out)
    console.print(f"{len(lab.runs)} strategies in {time.monotonic() - started:.1f}s; wrote {json_path} and {html_path}")
