"""docs/strategies.md's run, written from a ``report.json`` instead of by hand.

``scripts/lab-docs`` runs the lab and puts :func:`render` between the markers :data:`BEGIN` and
:data:`END`; everything in that block (command line, date, machine, load, tables, recommendation,
verdicts) comes from the one run, so the page cannot drift from the code or mix runs.
"""

from __future__ import annotations

import re
from typing import Any

from outboxkit.lab.advice import duration
from outboxkit.lab.report import COLUMNS, cell

BEGIN = "<!-- lab-run:begin (written by scripts/lab-docs; edits here are overwritten) -->"
END = "<!-- lab-run:end -->"


def render(data: dict[str, Any], command: str) -> str:
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
        "What it recommends (each line is computed from the tables below):",
        "",
        *(f"- {line}" for line in data["recommendation"]),
        "",
        "| " + " | ".join(label for label, _ in COLUMNS) + " |",
        "|---" + "|--:" * (len(COLUMNS) - 1) + "|",
        *("| " + " | ".join(cell(r, field) for _, field in COLUMNS) + " |" for r in runs),
        "",
    ]
    out += [f"Skipped: {s['strategy']} ({s['reason']})." for s in data.get("skipped", [])]
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


def replace_block(document: str, block: str) -> str:
    """``document`` with the text between the markers replaced by ``block``."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(document):
        raise ValueError("the document has no lab-run markers")
    return pattern.sub(lambda _m: f"{BEGIN}\n{block}\n{END}", document, count=1)


def listed(document: str) -> tuple[list[str], list[str]]:
    """The strategies the generated block lists: its result rows, and its skipped ones."""
    match = re.search(re.escape(BEGIN) + r"(.*?)" + re.escape(END), document, re.S)
    if match is None:
        return [], []
    block = match.group(1)
    table = block[block.index("| strategy | committed") :]
    rows = re.findall(r"^\| ([a-z+-]+) \| \d", table.split("\n\n")[0], re.M)
    return rows, re.findall(r"^Skipped: ([a-z+-]+) \(", block, re.M)
