"""The HTML report is self-contained and renders in headless Chromium (scripts/ensure-chromium)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from outboxkit.lab.report import render_html, verdict, write_reports
from outboxkit.lab.runner import LabOptions, LabRun
from tests.conftest import CI

CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> str:
    if not CHROMIUM.exists():
        message = "chromium is not installed: run scripts/ensure-chromium"
        if CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)
    return str(CHROMIUM)


async def small_run() -> LabRun:
    from outboxkit.lab.runner import run_lab

    options = LabOptions(strategies=("dual-write",), faults=("kill-after-commit",), events=30, db="sqlite")
    return await run_lab(options)


async def test_report_json_and_html_hold_the_results(tmp_path: Path) -> None:
    lab = await small_run()
    json_path, html_path = write_reports(lab, tmp_path)
    text = html_path.read_text()
    assert json_path.exists()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "id='results'" in text and "dual-write" in text


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    lab = asyncio.run(small_run())
    _, html_path = write_reports(lab, tmp_path)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    png = tmp_path / "report.png"
    url = html_path.resolve().as_uri()
    subprocess.run(
        [binary, *flags, f"--screenshot={png}", "--window-size=1280,2000", url],
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert png.exists() and png.stat().st_size > 20_000  # a blank 1280x2000 page compresses far smaller
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run(
        [binary, *flags, "--dump-dom", url], check=True, timeout=60, capture_output=True, text=True
    ).stdout
    assert 'id="results"' in dom and "<tbody>" in dom
    for chart in ("chart-anomalies", "chart-latency", "chart-throughput"):
        assert f'id="{chart}"' in dom
    assert dom.count("<rect") > 3


def test_render_html_escapes_names() -> None:
    data = {
        "options": {"events": 1, "seed": 1, "strategies": ["<x>"], "faults": [], "db": "d"},
        "elapsed_s": 0.0,
        "strategies": [],
        "latencies_ms": {},
    }
    assert "<x>" not in render_html(data)


def fake_run(name: str, **values: object) -> dict[str, object]:
    run: dict[str, object] = {
        "strategy": name,
        "choose": "when testing",
        "committed": 100,
        "lost": 0,
        "phantom": 0,
        "duplicates": 0,
        "order_violations": 0,
        "steady_p50_ms": 2.0,
        "steady_p99_ms": 9.0,
        "recovery_max_ms": 5200.0,
        "write_p50_ms": 3.0,
        "throughput": 300.0,
        "per_fault": [
            {"kind": "kill-relay", "tx": 5, "point": "after-commit", "lost": 0, "phantom": 0, "duplicates": 0,
             "order_violations": 0, "recovery_ms": 5200.0},
            {"kind": "kill-after-commit", "tx": 9, "point": "after-commit", "lost": 0, "phantom": 0,
             "duplicates": 0, "order_violations": 0, "recovery_ms": 3.0},
        ],
        "not_applicable": [],
    }  # fmt: skip
    run.update(values)
    return run


def test_verdict_says_what_it_loses_duplicates_costs_and_when_to_choose_it() -> None:
    cheap = fake_run("cheap")
    lossy = fake_run("lossy", lost=3, duplicates=2, write_p50_ms=9.0)
    lossy["per_fault"][1]["lost"] = 3  # type: ignore[index]
    runs = [cheap, lossy]
    assert verdict(cheap, runs) == (
        "cheap: loses nothing; no duplicates seen; writer p50 3.0 ms; events waited up to 5.2 s after a fault "
        "(kill-relay); choose it when testing."
    )
    line = verdict(lossy, runs)
    assert line.startswith(
        "lossy: loses 3 (at kill-after-commit); 2 duplicates seen; writer p50 9.0 ms (3.0x the cheapest)"
    )


def test_report_separates_steady_latency_from_recovery_and_drops_zero_anomaly_rows() -> None:
    runs = [fake_run("clean"), fake_run("lossy", lost=4)]
    data = {
        "options": {"events": 100, "seed": 1, "strategies": ["clean", "lossy"], "faults": [], "db": "d"},
        "elapsed_s": 1.0,
        "strategies": runs,
        "latencies_ms": {"clean": [1.0, 2.0, 3.0], "lossy": [1.0, 2.0]},
    }
    page = render_html(data)
    assert "steady p50" in page and "worst wait after a fault" in page and "<th>recovery ms</th>" in page
    assert "id='verdicts'" in page and "lossy: loses 4" in page
    chart = page[page.index("id='chart-anomalies'") : page.index("</svg>", page.index("id='chart-anomalies'"))]
    assert chart.count("<rect") == 1 + 4  # one bar (lossy: lost 4) plus the legend's four swatches
    assert ">none</text>" in chart  # the clean strategy has no bar rows of zeros
