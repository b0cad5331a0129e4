"""The HTML report is self-contained and renders in headless Chromium (scripts/ensure-chromium)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from outboxkit.lab.report import render_html, write_reports
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
    # The report says when each capture method fits, next to what it measured.
    assert "When each method fits" in text and "id='fits'" in text
    assert json.loads(json_path.read_text())["strategies"][0]["fits"].startswith("never where an event")


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
