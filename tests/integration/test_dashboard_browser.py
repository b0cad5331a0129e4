"""The dashboard in headless Chromium, end to end: a relay runs on PostgreSQL (so the page lists
it with its bucket leases) with the dashboard on its HTTP port; an event whose topic no JetStream
stream captures becomes a dead letter; the operator logs in, sees it, fixes the cause (creates the
stream), clicks Retry, and a NATS subscriber receives the event. Chromium comes from
scripts/ensure-chromium, driven by Playwright (the dev extra).

Screenshots are written to the test's tmp directory; with ``OUTBOXKIT_DOCS_SCREENSHOTS=1`` they
are also copied to docs/img/dashboard-*.png, which docs/dashboard.md shows (so a normal test run
leaves the working tree clean)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outboxkit import Outbox
from outboxkit.brokers.nats import connect
from outboxkit.ops import queries as q
from outboxkit.stores.base import TableRef
from outboxkit.testing import RelayProcess, free_port
from tests.conftest import CI, drop_stream, make_stream, unique

pytestmark = [pytest.mark.nats, pytest.mark.xdist_group("browser")]

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
TOKEN = "browser-test-token-0123456"


def chromium() -> str:
    if not CHROMIUM.exists():
        message = "chromium is not installed: run scripts/ensure-chromium"
        if CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)
    return str(CHROMIUM)


def status(url: str, ref: TableRef) -> dict[str, Any]:
    with q.open_db(url, ref) as db:
        return q.status(db).to_json()


async def wait_for(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_operator_retries_a_dead_letter_in_the_browser_and_it_is_delivered(
    pg_url: str, pg_ref: TableRef, nats_url: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    binary = chromium()
    good = await make_stream(nats_url)
    lost_prefix = unique("okt_nostream")
    fixed = None
    port = free_port()
    relay = RelayProcess(
        pg_url, nats_url, "--schema", pg_ref.schema or "",
        "--http-port", str(port), "--dashboard", "--dashboard-token", TOKEN,
        "--max-attempts", "2", "--poll-interval", "0.2", "--summary-interval", "0",
        log_path=str(tmp_path / "relay.log"),
    )  # fmt: skip
    conn = psycopg.connect(pg_url)
    try:
        relay.start()
        outbox = Outbox(schema=pg_ref.schema)
        for batch in range(3):  # a little traffic for the charts
            with conn.transaction():
                for i in range(10):
                    outbox.emit(conn, good.topic("orders"), {"order": batch * 10 + i}, key=f"c{i}")
        with conn.transaction():
            lost_id = outbox.emit(conn, f"{lost_prefix}.shipped", {"order": 99}, key="c99")

        def settled() -> bool:
            now = status(pg_url, pg_ref)
            return now["dead"] == 1 and not now["pending"] and bool(now["relays"]["live"])

        await wait_for("the dead letter", settled)
        assert status(pg_url, pg_ref)["delivered"] == 30

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []  # script errors and CSP violations would show here
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(f"http://127.0.0.1:{port}/dashboard/")
            assert page.url.endswith("/dashboard/login")  # the token is asked first
            await page.fill("input[name=token]", TOKEN)
            await page.screenshot(path=str(tmp_path / "dashboard-login.png"))
            await page.click("section.login button[type=submit]")
            await page.wait_for_url(f"http://127.0.0.1:{port}/dashboard/")
            row = page.locator(f'#dead tr[data-id="{lost_id}"]')
            await expect(row).to_contain_text(f"{lost_prefix}.shipped")
            await expect(row).to_contain_text("no JetStream stream captures")
            await expect(page.locator("#card-dead .value")).to_have_text("1")
            assert await page.locator("#chart-throughput rect.bar").count() >= 1
            await expect(page.locator("#relays tbody tr")).to_have_count(1)  # this relay, its buckets
            await expect(page.locator("#buckets-summary")).to_contain_text("buckets leased")
            await page.screenshot(path=str(tmp_path / "dashboard-dead-letter.png"), full_page=True)

            # Fix the cause: a stream that captures the topic. Then retry from the page.
            fixed = await make_stream(nats_url, prefix=lost_prefix)
            nc = await connect(nats_url)
            try:
                sub = await nc.jetstream().subscribe(f"{lost_prefix}.>", stream=fixed.name)
                await row.locator("button.retry").click()
                await expect(page.locator("#notice")).to_contain_text("Retried 1 dead letter")
                message = await sub.next_msg(timeout=30)
                assert message.headers is not None and message.headers.get("Nats-Msg-Id") == lost_id
                assert message.subject == f"{lost_prefix}.shipped" and b'"order":99' in message.data.replace(b" ", b"")
                await message.ack()
            finally:
                await nc.close()
            await wait_for("the mark", lambda: status(pg_url, pg_ref)["delivered"] == 31)
            await page.goto(f"http://127.0.0.1:{port}/dashboard/")
            await expect(page.locator("#card-dead .value")).to_have_text("0")
            await expect(page.locator("#dead-letters")).to_contain_text("No dead letters.")
            # The live part refreshes itself (the page's script, allowed by its CSP): new deliveries
            # appear without a reload.
            with conn.transaction():
                for i in range(5):
                    outbox.emit(conn, good.topic("orders"), {"order": 100 + i}, key=f"c{i}")
            good_row = page.locator("#topics tbody tr", has_text=good.topic("orders"))
            await expect(good_row.locator("td").nth(5)).to_have_text("35", timeout=20_000)  # delivered (kept)
            await page.goto(f"http://127.0.0.1:{port}/dashboard/?window=15m")  # 15 s buckets: more shape
            await expect(page.locator("#chart-throughput rect.bar").first).to_be_visible()
            await page.screenshot(path=str(tmp_path / "dashboard-overview.png"), full_page=True)
            assert problems == []
            await browser.close()
    finally:
        conn.close()
        relay.stop()
        await drop_stream(good)
        if fixed is not None:
            await drop_stream(fixed)
    shots = sorted(tmp_path.glob("dashboard-*.png"))  # noqa: ASYNC240 (a listing of three files)
    assert len(shots) == 3 and all(p.stat().st_size > 10_000 for p in shots)
    if os.environ.get("OUTBOXKIT_DOCS_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copyfile(shot, DOCS_IMG / shot.name)
