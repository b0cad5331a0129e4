"""The dashboard's routes: pages, a JSON view, and the retry / discard / replay actions.

Every read and every action goes through ``outboxkit.ops`` (the functions behind the CLI), run in
a worker thread with its own short autocommit connection, so a page never blocks the relay's event
loop when the dashboard is mounted on the relay's HTTP port. The rules of who may do what live in
:mod:`outboxkit.web.dashboard.security`; this module applies them to each request first.

Routes (under ``/dashboard``)::

    GET  /             the page                      GET  /live     its live part (auto-refresh)
    GET  /api/status   status + activity as JSON     GET  /static/  stylesheet, script
    GET  /login        token form (when a token is set)   POST /login, /logout
    POST /dead/retry   POST /dead/discard   POST /replay       (CSRF token + same origin)
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2

from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, OutboxkitError
from outboxkit.ops import queries as q
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for
from outboxkit.web.dashboard import security as sec
from outboxkit.web.dashboard import views
from outboxkit.web.http import Request, Response, text

log = logging.getLogger("outboxkit.web.dashboard")

PREFIX = "/dashboard"
_STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_HTML = "text/html; charset=utf-8"
# Pages load only their own stylesheet and script; nothing may frame them (clickjacking).
_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    # same-origin, not no-referrer: under no-referrer browsers send "Origin: null" on form posts,
    # which the same-origin check must refuse. Other sites still get no Referer from us.
    ("Referrer-Policy", "same-origin"),
]
# What an action did, shown after the redirect: a fixed vocabulary, so a crafted link cannot put
# words of its own on the page.
_DONE = {"retried": "Retried {n} dead letter(s): pending again.", "discarded": "Discarded {n} dead letter(s).",
         "replayed": "Replayed {n} event(s): pending again."}  # fmt: skip


class Dashboard:
    """The dashboard of one outbox table. Mount it on a server that calls :meth:`owns` and
    :meth:`handle` (``MetricsServer(dashboard=...)`` or :class:`~outboxkit.web.dashboard.serve.DashboardServer`)."""

    def __init__(
        self,
        db_url: str,
        ref: TableRef,
        *,
        host: str,
        token: str | None = None,
        broker_url: str | None = None,
        refresh_s: float = 5.0,
        flag_name: str = "--token",
    ) -> None:
        sec.check_bind(host, token, flag_name)
        database_for(db_url)  # an unsupported URL fails at start-up, not on the first page
        self.db_url = db_url
        self.ref = ref
        self.broker_url = broker_url
        self.refresh_s = refresh_s
        self.guard = sec.Guard(token, sec.is_loopback(host))
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("outboxkit.web.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["age"] = views.age
        self._env.filters["buckets"] = views.buckets_text
        self._env.filters["when"] = views.when

    def owns(self, path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    # -- entry -------------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        try:
            response = await self._checked(request)
        except Exception:
            # A page must never take down the relay it is mounted on; the traceback goes to the log.
            log.exception("dashboard: %s %s failed", request.method, request.path)
            response = text(500, "internal error: see the server's log")
        response.headers.extend(_SECURITY_HEADERS)
        return response

    async def _checked(self, request: Request) -> Response:
        if not self.guard.host_allowed(request.headers.get("host")):
            return text(421, "this dashboard answers only to localhost names (DNS rebinding guard)")
        route = request.path[len(PREFIX) :] or "/"
        if route.startswith("/static/") and request.method in ("GET", "HEAD"):
            return self._static(route.removeprefix("/static/"))
        if route == "/login":
            return await self._login(request)
        session = request.cookie(sec.SESSION_COOKIE)
        authorization = request.headers.get("authorization")
        if not self.guard.authenticated(authorization, session):
            if request.method in ("GET", "HEAD") and not route.startswith("/api/"):
                return _redirect(f"{PREFIX}/login")
            return text(401, "log in first: this dashboard needs its token")
        if request.method in ("GET", "HEAD"):
            return await self._get(route, request)
        if request.method != "POST":
            return text(405, "method not allowed")
        refusal = self._refuse_forgery(request)
        if refusal is not None:
            return refusal
        return await self._post(route, request, session)

    def _refuse_forgery(self, request: Request) -> Response | None:
        headers = request.headers
        if not sec.same_origin(headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host")):
            return text(403, "refused: the request came from another site")
        if self.guard.bearer_ok(headers.get("authorization")):
            return None  # a script with the token: browsers never add that header on their own
        submitted = (request.form().get("csrf") or [""])[0]
        if not sec.csrf_ok(request.cookie(sec.CSRF_COOKIE), submitted):
            return text(403, "refused: missing or wrong CSRF token; reload the page and try again")
        return None

    # -- reading -----------------------------------------------------------------------------------
    async def _get(self, route: str, request: Request) -> Response:
        window = request.arg("window") or views.DEFAULT_WINDOW
        if window not in views.WINDOWS:
            return text(400, f"window must be one of {', '.join(views.WINDOWS)}")
        if route not in ("/", "/live", "/api/status"):
            return text(404, "not found")
        try:
            snap = await asyncio.to_thread(views.snapshot, self.db_url, self.ref, window)
        except OutboxkitError as exc:
            log.warning("dashboard: %s", exc)
            return self._page("error.html", request, status=503, error=str(exc))
        if route == "/api/status":
            doc = {
                **snap.status.to_json(),
                "activity": {"window": window, "step_s": views.WINDOWS[window][1]}
                | {"buckets": [asdict(p) for p in snap.activity]},
                "dead_letters": {"total": snap.dead_total, "first": [asdict(d) for d in snap.dead]},
            }
            return Response(200, json.dumps(doc, default=str).encode(), "application/json")
        context: dict[str, Any] = {"snap": snap, "totals": views.totals(snap.status), "charts": views.charts(snap)}
        if route == "/live":
            return self._page("live.html", request, **context)
        done = request.arg("done")
        count = request.arg("n") or "0"
        notice = _DONE[done].format(n=int(count)) if done in _DONE and count.isdigit() else None
        return self._page("index.html", request, notice=notice, **context)

    def _page(self, name: str, request: Request, *, status: int = 200, **context: Any) -> Response:
        csrf = request.cookie(sec.CSRF_COOKIE)
        headers: list[tuple[str, str]] = []
        if not csrf:
            csrf = sec.new_csrf()
            headers.append(("Set-Cookie", _cookie(sec.CSRF_COOKIE, csrf)))
        body = self._env.get_template(name).render(
            prefix=PREFIX,
            csrf=csrf,
            database=redact_url(self.db_url),
            table=self.ref.qualified,
            broker=redact_url(self.broker_url) if self.broker_url else None,
            login=self.guard.needs_login,
            refresh_ms=int(self.refresh_s * 1000),
            windows=list(views.WINDOWS),
            window=request.arg("window") or views.DEFAULT_WINDOW,
            **context,
        )
        return Response(status, body.encode(), _HTML, headers)

    def _static(self, name: str) -> Response:
        if name not in _STATIC:
            return text(404, "not found")
        data = resources.files("outboxkit.web.dashboard").joinpath("static", name).read_bytes()
        return Response(200, data, _STATIC[name])

    # -- acting ------------------------------------------------------------------------------------
    async def _post(self, route: str, request: Request, session: str | None) -> Response:
        form = request.form()

        def field(name: str) -> str | None:
            value = (form.get(name) or [""])[0].strip()
            return value or None

        if route == "/logout":
            self.guard.logout(session)
            return _redirect(f"{PREFIX}/login", ("Set-Cookie", _cookie(sec.SESSION_COOKIE, "", max_age=0)))
        actions = {"/dead/retry": "retried", "/dead/discard": "discarded", "/replay": "replayed"}
        if route not in actions:
            return text(404, "not found")
        try:
            since_text = field("since")
            since = q.parse_time(since_text) if since_text else None
            selector = q.Selector(
                ids=tuple(i for i in form.get("id", []) if i.strip()),
                topic=field("topic"),
                key=field("key"),
                since=since,
                everything=field("scope") == "all",
            )
            count = await asyncio.to_thread(self._act, route, selector)
        except ConfigurationError as exc:
            return text(400, str(exc))
        except OutboxkitError as exc:
            return text(503, str(exc))
        log.info("dashboard: %s %d via %s", actions[route], count, route)
        return _redirect(f"{PREFIX}/?" + urlencode({"done": actions[route], "n": count}))

    def _act(self, route: str, selector: q.Selector) -> int:
        with q.open_db(self.db_url, self.ref) as db:
            if route == "/dead/retry":
                return q.retry_dead(db, selector)
            if route == "/dead/discard":
                return q.discard_dead(db, selector)
            return q.replay(db, selector)

    async def _login(self, request: Request) -> Response:
        if not self.guard.needs_login:
            return _redirect(f"{PREFIX}/")
        if request.method in ("GET", "HEAD"):
            return self._page("login.html", request, failed=False)
        if request.method != "POST":
            return text(405, "method not allowed")
        refusal = self._refuse_forgery(request)
        if refusal is not None:
            return refusal
        session = self.guard.login((request.form().get("token") or [""])[0])
        if session is None:
            return self._page("login.html", request, status=401, failed=True)
        return _redirect(f"{PREFIX}/", ("Set-Cookie", _cookie(sec.SESSION_COOKIE, session)))


def _cookie(name: str, value: str, *, max_age: int | None = None) -> str:
    # HttpOnly: no script reads it; SameSite=Strict: another site's page never sends it.
    cookie = f"{name}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict"
    return cookie if max_age is None else f"{cookie}; Max-Age={max_age}"


def _redirect(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *headers])
