"""The dashboard's pure parts: who may look and act (security), what the charts draw, and the
view helpers. The same rules are exercised over HTTP in tests/integration/test_dashboard.py."""

from __future__ import annotations

import itertools
import re

import pytest

from outboxkit.errors import ConfigurationError
from outboxkit.web.dashboard import charts, security, views

TOKEN = "a-token-of-24-characters"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.5", "app.localhost"])
def test_loopback_hosts(host: str) -> None:
    assert security.is_loopback(host)
    security.check_bind(host, None)  # no token needed


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.4", "dashboard.example.com", "localhost.evil.com"])
def test_other_hosts_need_a_token(host: str) -> None:
    assert not security.is_loopback(host)
    with pytest.raises(ConfigurationError, match=r"reachable from other machines.*--token"):
        security.check_bind(host, None)
    security.check_bind(host, TOKEN)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        security.check_bind("127.0.0.1", "short")


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:9465", "127.0.0.1"), ("localhost", "localhost"), ("[::1]:80", "::1"), ("evil.com:1", "evil.com")],
)
def test_host_name(header: str, name: str) -> None:
    assert security.host_name(header) == name


def test_open_loopback_dashboard_answers_only_loopback_names() -> None:
    guard = security.Guard(None, bound_to_loopback=True)
    assert guard.host_allowed("127.0.0.1:9465") and guard.host_allowed("localhost:9465")
    assert not guard.host_allowed("rebound.attacker.example:9465")  # DNS rebinding
    assert not guard.host_allowed(None)
    assert security.Guard(TOKEN, bound_to_loopback=True).host_allowed("anything.example")


def test_login_sessions_and_bearer() -> None:
    guard = security.Guard(TOKEN, bound_to_loopback=False)
    assert not guard.authenticated(None, None)
    assert guard.login("wrong-token-of-some-length") is None
    session = guard.login(TOKEN, now=100.0)
    assert session is not None and TOKEN not in session
    assert guard.authenticated(None, session, now=101.0)
    assert not guard.authenticated(None, "forged-session", now=101.0)
    assert not guard.authenticated(None, session, now=100.0 + security.SESSION_TTL_S + 1)  # expired
    assert not guard.authenticated(None, session, now=101.0)  # and forgotten
    assert guard.authenticated(f"Bearer {TOKEN}", None)
    assert not guard.authenticated(f"Basic {TOKEN}", None)
    assert not guard.authenticated("Bearer nope", None)
    again = guard.login(TOKEN)
    guard.logout(again)
    assert not guard.authenticated(None, again)


def test_without_a_token_everyone_on_the_socket_is_in() -> None:
    guard = security.Guard(None, bound_to_loopback=True)
    assert guard.authenticated(None, None) and not guard.needs_login
    assert guard.login(TOKEN) is None and not guard.bearer_ok(f"Bearer {TOKEN}")


def test_csrf_double_submit() -> None:
    token = security.new_csrf()
    assert security.csrf_ok(token, token)
    assert not security.csrf_ok(token, token + "x")
    assert not security.csrf_ok(None, token) and not security.csrf_ok(token, None)
    assert not security.csrf_ok("", "")
    assert security.new_csrf() != token


@pytest.mark.parametrize(
    ("origin", "site", "ok"),
    [
        (None, None, True),  # curl: judged by its CSRF token
        ("http://127.0.0.1:9465", "same-origin", True),
        ("http://127.0.0.1:9465", None, True),
        ("http://evil.example", None, False),
        ("http://127.0.0.1:9999", None, False),
        ("null", None, False),
        (None, "cross-site", False),
        (None, "same-site", False),
        (None, "none", True),
    ],
)
def test_same_origin(origin: str | None, site: str | None, ok: bool) -> None:
    assert security.same_origin(origin, site, "127.0.0.1:9465") is ok


@pytest.mark.parametrize(("value", "top"), [(0, 1), (0.3, 0.5), (1, 1), (7, 10), (12, 20), (240, 250), (3001, 5000)])
def test_nice_max(value: float, top: float) -> None:
    assert charts.nice_max(value) == pytest.approx(top)


def test_bar_chart_draws_one_bar_per_nonzero_bucket() -> None:
    svg = charts.bar_chart("c", "Title <x>", [0, 60, 120, 180], [0.0, 2.0, 0.0, 4.0], "/s")
    assert svg.startswith('<svg id="c"') and svg.endswith("</svg>")
    assert svg.count("<rect") == 2
    assert "Title &lt;x&gt;" in svg and "<x>" not in svg
    heights = [float(h) for h in re.findall(r'height="([\d.]+)"', svg)]
    assert heights[1] == pytest.approx(2 * heights[0])  # 4 is twice 2 on a 0-5 axis


def test_line_chart_breaks_at_gaps() -> None:
    series = [charts.Series("mean", "series-mean", [1.0, 2.0, None, 3.0]), charts.Series("max", "m", [None] * 4)]
    svg = charts.line_chart("lag", "Lag", [0, 60, 120, 180], series, "s")
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1  # 1-2 joined, 3 alone
    assert ">mean<" in svg and ">max<" in svg


def test_bucket_starts_end_now_and_align_on_the_step() -> None:
    starts = views.bucket_starts(1_000_030.0, 3600, 60)
    assert len(starts) == 60 and starts[-1] == 1_000_020 and starts[0] == 1_000_020 - 59 * 60
    assert all(b - a == 60 for a, b in itertools.pairwise(starts))


def test_buckets_text_and_age() -> None:
    assert views.buckets_text([7, 0, 1, 2, 5, 8]) == "0-2, 5, 7-8"
    assert views.buckets_text([]) == ""
    assert views.age(None) == "-" and views.age(3.0) == "3.0s" and views.age(600) == "10.0m"


def test_the_public_names_resolve() -> None:
    import outboxkit.web.dashboard as dashboard

    for name in dashboard.__all__:
        assert getattr(dashboard, name) is not None
    with pytest.raises(AttributeError):
        _ = dashboard.nothing_here


def test_without_the_extra_the_cli_loads_and_the_command_says_what_to_install(tmp_path: object) -> None:
    """Jinja2 is imported on first use: `outboxkit --help` works on a base install, and the
    dashboard names the extra that fixes it, in one line."""
    import subprocess
    import sys

    hide = "import sys; sys.modules['jinja2'] = None; from outboxkit.cli import main; sys.argv = {argv!r}; main()"
    helped = subprocess.run(
        [sys.executable, "-c", hide.format(argv=["outboxkit", "--help"])], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "dashboard" in helped.stdout, helped.stderr
    argv = ["outboxkit", "dashboard", "--db", f"sqlite:///{tmp_path}/x.db", "--port", "0"]
    done = subprocess.run([sys.executable, "-c", hide.format(argv=argv)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "outboxkit[dashboard]" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_lag_axis_labels_every_decade_between_100_ms_and_100_s() -> None:
    """A mean of 100 ms beside a worst case of 100 s: on a linear axis the mean lay on the zero line
    and nothing was labelled between 0 and 25 s. The log axis has a line per decade."""
    series = [
        charts.Series("mean", "series-mean", [0.1, 0.12, None, 0.2]),
        charts.Series("max", "series-max", [1.5, 100.0, None, 30.0]),
    ]
    svg = charts.line_chart("lag", "Lag", [0, 60, 120, 180], series, "s", log=True)
    labels = re.findall(r'<text class="axis"[^>]*text-anchor="end">([^<]+)</text>', svg)
    assert labels == ["100 ms", "1 s", "10 s", "100 s"]
    bottom = charts.HEIGHT - 28
    mean_line = re.search(r'<polyline class="series-mean" fill="none" points="([^"]+)"', svg)
    assert mean_line is not None
    heights = [bottom - float(p.split(",")[1]) for p in mean_line.group(1).split()]
    # 100 ms sits on its grid line and 120 ms visibly above it (a linear 0-100 s axis: 0.03 px apart).
    assert heights[0] == pytest.approx(0.0) and heights[1] - heights[0] > 3
    axis = charts.LogAxis.over([0.0004, 3.0])
    assert (axis.low, axis.high) == (pytest.approx(0.0001), pytest.approx(10.0))
    assert axis.fraction(0.0) == 0.0 and axis.fraction(10.0) == 1.0
    assert charts.LogAxis.over([]).decades == [pytest.approx(0.001), pytest.approx(0.01), pytest.approx(0.1), 1.0]
