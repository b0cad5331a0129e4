"""docs/strategies.md's run, written from a ``report.json`` instead of by hand.

``scripts/lab-docs`` runs the lab and puts :func:`render` between the markers :data:`BEGIN` and
:data:`END`; everything in that block (command line, date, machine, load, tables, recommendation,
verdicts) comes from the one run, so the page cannot drift from the code or mix runs. The runs on
the other databases get their own blocks (:func:`markers` of ``"mariadb"`` or ``"sqlite"``), each
from its own run: figures from different databases never share a table.
"""

from __future__ import annotations

import re
from typing import Any

from outboxkit.lab.advice import duration
from outboxkit.lab.report import COLUMNS, cell

BEGIN = "<!-- lab-run:begin (written by scripts/lab-docs; edits here are overwritten) -->"
END = "<!-- lab-run:end -->"
# The block of each database's run; "" is the main (PostgreSQL) run, whose markers predate the others.
BLOCKS = ("", "mariadb", "sqlite")


def markers(block: str = "") -> tuple[str, str]:
    """The begin and end markers of ``block`` (one of :data:`BLOCKS`)."""
    if block not in BLOCKS:
        raise ValueError(f"no lab-run block {block!r}; known: {', '.join(b or 'main' for b in BLOCKS)}")
    if not block:
        return BEGIN, END
    return BEGIN.replace("lab-run:", f"lab-run-{block}:"), END.replace("lab-run:", f"lab-run-{block}:")


def render(data: dict[str, Any], command: str, *, brief: bool = False) -> str:
    """The block for one run; ``brief`` leaves out the per-fault table and the verdicts (the other
    databases' runs, which the main run's explanations already cover)."""
    o, m = data["options"], data["machine"]
    runs: list[dict[str, Any]] = data["strategies"]
    faults: list[str] = o["faults"]
    out = [
        "```",
        command,
        "```",
        "",
        f"Run {data['started_utc']} on {m['platform']} ({m['cpus']} cores, Python {m['python']}), database"
        f" {o['db']}: {len(runs)} strategies, {data.get('parallel', 1)} at a time, in"
        f" {data['elapsed_s']:.1f} s. The machine is shared: 1-minute load average {m['load_1m_start']} at the"
        f" start, {m['load_1m_end']} at the end.",
        "",
        f"What it recommends (each line is computed from the {'table' if brief else 'tables'} below):",
        "",
        *(f"- {line}" for line in data["recommendation"]),
        "",
        "| " + " | ".join(label for label, _ in COLUMNS) + " |",
        "|---" + "|--:" * (len(COLUMNS) - 1) + "|",
        *("| " + " | ".join(cell(r, field) for _, field in COLUMNS) + " |" for r in runs),
        "",
    ]
    out += [f"Skipped: {s['strategy']} ({s['reason']})." for s in data.get("skipped", [])]
    if brief:
        return "\n".join(out).rstrip("\n")
    out += [
        "",
        "How long events waited because of each fault (the longest wait among the events it disturbed;"
        " n/a: the fault does not apply to the strategy):",
        "",
        "| strategy | " + " | ".join(faults) + " |",
        "|---" + "|--:" * len(faults) + "|",
    ]
    for r in runs:
        waits = {f["kind"]: f.get("recovery_ms") for f in r["per_fault"]}
        early = r.get("stored_before_commit") and not r["steady_p50_ms"]
        cells = [
            "n/a" if k not in waits else "before commit" if early and not waits[k] else duration(waits[k])
            for k in faults
        ]
        out.append(f"| {r['strategy']} | " + " | ".join(cells) + " |")
    out += ["", "The verdict per strategy, as the command prints it:", "", "```", *data["verdicts"], "```"]
    return "\n".join(out)


def replace_block(document: str, block: str, name: str = "") -> str:
    """``document`` with the text between the markers of block ``name`` replaced by ``block``."""
    begin, end = markers(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(document):
        raise ValueError(f"the document has no {begin.split(':')[0].removeprefix('<!-- ')} markers")
    return pattern.sub(lambda _m: f"{begin}\n{block}\n{end}", document, count=1)


def listed(document: str, name: str = "") -> tuple[list[str], list[str]]:
    """The strategies the generated block ``name`` lists: its result rows, and its skipped ones."""
    begin, end = markers(name)
    match = re.search(re.escape(begin) + r"(.*?)" + re.escape(end), document, re.S)
    if match is None:
        return [], []
    block = match.group(1)
    table = block[block.index("| strategy | committed") :]
    rows = re.findall(r"^\| ([a-z+-]+) \| \d", table.split("\n\n")[0], re.M)
    return rows, re.findall(r"^Skipped: ([a-z+-]+) \(", block, re.M)
