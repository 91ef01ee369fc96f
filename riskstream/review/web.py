"""The review console: server-rendered pages (Starlette + Jinja2, autoescaped), sign-in with
sessions, a CSRF token checked on every POST, and `/metrics` for Prometheus.

Pages: `/` the queue (filters: type, severity, status, model version, rule), `/cases/{id}` a
case (reasons, driving events, the window as a timeline, model version and threshold, the
verdict form), `/precision` alerts per day, reviewed share and confirmed precision per model
version and per rule, and a shadow model beside the live one (its would-be alerts from
`alerts.shadow`). No JavaScript: the Content-Security-Policy forbids scripts outright.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events import VERDICTS, format_ts_ms
from events.contract import ALERT_TYPES, SEVERITIES
from riskstream.review import store
from riskstream.review.auth import UserStore
from riskstream.review.exceptions import ReviewError
from riskstream.review.lists import change_list
from riskstream.review.throttle import LoginLimits, Network, SignInThrottle, client_address
from riskstream.review.views import case_view
from stream.lists import NEVER_MS, Entry

__all__ = ["ConsoleState", "ReviewMetrics", "create_app"]

log = logging.getLogger(__name__)

#: The list action's choices on the verdict form: the list, and how long the entry holds.
LIST_ACTIONS: Final = ("deny", "allow")
LIST_DAYS: Final = {"30": 30, "90": 90, "365": 365, "never": None}
VERDICT_LABELS: Final = {
    "confirmed_fraud": "Confirm fraud",
    "confirmed_abnormal_click": "Confirm abnormal clicking",
    "false_positive": "False positive",
    "escalated": "Escalate",
}
_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class ReviewMetrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "review_alerts_ingested", "Alerts stored (new alert_id)", registry=r
        )
        self.shadow_ingested = Counter(
            "review_shadow_alerts_ingested",
            "Shadow alerts stored (alerts.shadow, new alert_id)",
            registry=r,
        )
        self.duplicates = Counter(
            "review_alerts_duplicate", "Redelivered alerts (alert_id already stored)", registry=r
        )
        self.dead_letters = Counter(
            "review_alerts_dead_lettered",
            "Alert messages refused to the DLQ",
            ["field"],
            registry=r,
        )
        self.decisions = Counter("review_decisions", "Decisions recorded", ["verdict"], registry=r)
        self.published = Counter(
            "review_decisions_published", "Decisions put on the decisions topic", registry=r
        )
        labels = ["group", "key"]
        self.alerts = Gauge("review_alerts", "Alerts stored", labels, registry=r)
        self.per_day = Gauge("review_alerts_per_day", "Alerts per day", labels, registry=r)
        self.reviewed = Gauge(
            "review_reviewed_share", "Share of alerts with a final verdict", labels, registry=r
        )
        self.precision = Gauge(
            "review_confirmed_precision",
            "Confirmed / (confirmed + false positive) among reviewed alerts",
            labels,
            registry=r,
        )

    def set_table(self, group: str, rows: list[store.PrecisionRow]) -> None:
        for row in rows:
            self.alerts.labels(group, row.key).set(row.alerts)
            self.per_day.labels(group, row.key).set(row.per_day)
            self.reviewed.labels(group, row.key).set(row.reviewed_share)
            if row.precision is not None:
                self.precision.labels(group, row.key).set(row.precision)


@dataclass
class ConsoleState:
    """What the pages need: the database pool, the users, the metrics, and a hook that wakes
    the decision publisher."""

    pool: AsyncConnectionPool[Any]
    users: UserStore
    metrics: ReviewMetrics = field(default_factory=ReviewMetrics)
    on_decision: Callable[[], None] = lambda: None
    throttle: SignInThrottle = field(default_factory=lambda: SignInThrottle(LoginLimits()))
    #: Proxies whose X-Forwarded-For names the client (none: the peer is the client).
    trusted_proxies: tuple[Network, ...] = ()
    #: The lists file the verdict form may add the case's user to (none: not offered).
    lists_file: Path | None = None


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("riskstream.review", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["verdict_labels"] = VERDICT_LABELS
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.0f} %"
    return env


class _SecurityHeaders:
    """CSP, no framing, no sniffing, no referrer, on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", _CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def _checked_form(request: Request) -> FormData:
    """The POSTed form, once its CSRF token matches the session's; 403 otherwise."""
    form = await request.form(max_files=0, max_fields=20)
    sent = form.get("csrf")
    token = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(token, str):
        raise HTTPException(403, "missing CSRF token: reload the page")
    if not hmac.compare_digest(sent.encode(), token.encode()):
        raise HTTPException(403, "bad CSRF token: reload the page")
    return form


def _user(request: Request) -> str | None:
    user = request.session.get("user")
    return user if isinstance(user, str) else None


Handler = Callable[[Request], Awaitable[Response]]


def _signed_in(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        if _user(request) is None:
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
        return await handler(request)

    return wrapped


def create_app(state: ConsoleState, *, secret: str, https_only: bool = False,
               max_age_s: int = 8 * 3600) -> Starlette:  # fmt: skip
    """The console as an ASGI app."""
    env = _env()

    def page(request: Request, name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.update(user=_user(request), csrf=_csrf(request), path=request.url.path)
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=code)

    async def login_form(request: Request) -> Response:
        nxt = request.query_params.get("next", "/")
        return page(request, "login.html", next=nxt if nxt.startswith("/") else "/", error=None)

    async def login(request: Request) -> Response:
        form = await _checked_form(request)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        nxt = str(form.get("next", "/"))
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        peer = request.client.host if request.client is not None else "unknown"
        address = client_address(
            peer, request.headers.get("x-forwarded-for"), state.trusted_proxies
        )
        # The typed name is not logged: it may be a password typed into the wrong field.
        left = state.throttle.locked(name, address)
        if left is not None:  # refused before scrypt: a locked-out guess costs nothing
            log.warning("sign-in refused from %s: locked out for %.0f s more (a user name of "
                        "%d characters)", address, left, len(name))  # fmt: skip
            wait = f"Too many failed sign-ins: try again in {max(1, math.ceil(left / 60))} min."
            response = page(request, "login.html", 429, next=nxt, error=wait)
            response.headers["retry-after"] = str(math.ceil(left))
            return response
        if not name or not state.users.check(name, password):
            locked = state.throttle.failed(name, address)
            log.info("sign-in refused from %s: wrong user name or password (a user name of %d "
                     "characters)", address, len(name))  # fmt: skip
            if locked is not None:
                lockout = state.throttle.limits.lockout_s
                log.warning("sign-in locked out for %.0f s: too many failures for this %s "
                            "(from %s)", lockout, locked, address)  # fmt: skip
            return page(request, "login.html", 401, next=nxt, error="Wrong user name or password.")
        state.throttle.succeeded(name)
        request.session.clear()  # a new session at sign-in: no fixation
        request.session.update(user=name, csrf=secrets.token_urlsafe(32))
        log.info("%s signed in from %s", name, address)
        return RedirectResponse(nxt, 303)

    async def logout(request: Request) -> Response:
        await _checked_form(request)
        request.session.clear()
        return RedirectResponse("/login", 303)

    async def queue(request: Request) -> Response:
        q = request.query_params
        filters = store.CaseFilters(
            type=q.get("type") or None,
            severity=q.get("severity") or None,
            status=q.get("status") or store.ACTIVE,
            model_version=q.get("model_version") or None,
            rule=q.get("rule") or None,
        )
        try:
            async with state.pool.connection() as conn:
                rows = await store.queue(conn, filters)
                options = await store.filter_options(conn)
        except ReviewError as exc:
            raise HTTPException(400, str(exc)) from None
        return page(
            request,
            "queue.html",
            cases=rows,
            filters=filters,
            options=options,
            types=ALERT_TYPES,
            severities=SEVERITIES,
            statuses=store.STATUSES,
        )

    def _case_id(request: Request) -> int:
        raw = request.path_params["case_id"]
        if not raw.isdigit() or len(raw) > 18:
            raise HTTPException(404, "no such case")
        return int(raw)

    async def case(request: Request) -> Response:
        case_id = _case_id(request)
        try:
            async with state.pool.connection() as conn:
                detail = await store.case_detail(conn, case_id)
        except store.CaseNotFound:
            raise HTTPException(404, "no such case") from None
        view = case_view(detail)
        return page(request, "case.html", view=view, verdicts=VERDICTS, error=None,
                    lists=state.lists_file is not None)  # fmt: skip

    async def decide(request: Request) -> Response:
        form = await _checked_form(request)
        case_id = _case_id(request)
        verdict = str(form.get("verdict", ""))
        note = str(form.get("note", "")).strip()
        if verdict not in VERDICTS:
            raise HTTPException(400, "unknown verdict")
        if len(note) > 4000:
            raise HTTPException(400, "the note is longer than 4,000 characters")
        analyst = _user(request)
        assert analyst is not None
        list_action = str(form.get("list_action", ""))
        days = str(form.get("list_days", "90"))
        if list_action and (list_action not in LIST_ACTIONS or days not in LIST_DAYS):
            raise HTTPException(400, "unknown list action")
        if list_action and state.lists_file is None:
            raise HTTPException(400, "no lists file is configured")
        expires_ms = NEVER_MS
        if list_action and LIST_DAYS[days] is not None:
            until = datetime.now(UTC) + timedelta(days=LIST_DAYS[days] or 0)
            expires_ms = int(until.timestamp() * 1000)
        said = " ".join(note.split())[:800] or "no note"  # the entry's reason: one line
        if list_action:  # the decision says what was done beside the verdict
            when = (
                "never expires" if expires_ms == NEVER_MS else f"until {format_ts_ms(expires_ms)}"
            )
            note = f"{note} [user added to the {list_action} list, {when}]".strip()
        try:
            async with state.pool.connection() as conn, conn.transaction():
                # one transaction: the verdict and the list change (and its audit row) are
                # stored together, once the lists file is written, or neither is
                decision = await store.decide(conn, case_id, verdict, analyst, note)
                if list_action:
                    assert state.lists_file is not None
                    entry = Entry(
                        "deny" if list_action == "deny" else "allow", "user", decision.user_id,
                        expires_ms, f"case {case_id}, {verdict} by {analyst}: {said}",
                    )  # fmt: skip
                    await change_list(conn, state.lists_file, "add", entry, actor=analyst,
                                      source="console", case_id=case_id,
                                      decision_id=decision.decision_id)  # fmt: skip
        except store.CaseNotFound:
            raise HTTPException(404, "no such case") from None
        except store.CaseClosed:
            async with state.pool.connection() as conn:
                detail = await store.case_detail(conn, case_id)
            return page(request, "case.html", 409, view=case_view(detail), verdicts=VERDICTS,
                        error="This case already has a final verdict.",
                        lists=state.lists_file is not None)  # fmt: skip
        except ReviewError as exc:  # the list change refused: the verdict was not stored either
            raise HTTPException(400, f"nothing was stored: {exc}") from None
        state.metrics.decisions.labels(verdict).inc()
        state.on_decision()
        log.info("%s: case %s %s (%d alerts)", analyst, case_id, verdict, len(decision.alert_ids))
        return RedirectResponse(f"/cases/{case_id}", 303)

    async def precision(request: Request) -> Response:
        async with state.pool.connection() as conn:
            by_model = await store.precision_table(conn, "model_version")
            by_rule = await store.precision_table(conn, "rule")
            shadows = await store.shadow_comparison(conn)
        return page(request, "precision.html", by_model=by_model, by_rule=by_rule,
                    shadows=shadows)  # fmt: skip

    async def metrics(request: Request) -> Response:
        async with state.pool.connection() as conn:
            state.metrics.set_table(
                "model_version", await store.precision_table(conn, "model_version")
            )
            state.metrics.set_table("rule", await store.precision_table(conn, "rule"))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        async with state.pool.connection() as conn:
            await conn.execute("SELECT 1")
        return PlainTextResponse("ok")

    async def error_page(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return page(request, "error.html", exc.status_code, status=exc.status_code,
                    detail=exc.detail)  # fmt: skip

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", _signed_in(queue), methods=["GET"]),
        Route("/cases/{case_id}", _signed_in(case), methods=["GET"]),
        Route("/cases/{case_id}/decide", _signed_in(decide), methods=["POST"]),
        Route("/precision", _signed_in(precision), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    middleware = [
        Middleware(_SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="riskstream_review",
            max_age=max_age_s,
            same_site="strict",
            https_only=https_only,
        ),
    ]
    return Starlette(
        routes=routes, middleware=middleware, exception_handlers={HTTPException: error_page}
    )
