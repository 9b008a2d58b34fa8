"""The API's `GET /metrics` for Prometheus (prometheus-client): requests by route and status,
and the sign-ins that failed or were throttled, as the login endpoint answered them (401 and
429). Each app has a registry of its own, so two apps in one process count apart.

The route label is the route's template (/api/v1/students/{student_id}), never the path
asked for: the label's values stay few whatever clients send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.routing import Match

LOGIN_PATH = "/api/v1/auth/login"
METRICS_PATH = "/metrics"
UNMATCHED = "(unmatched)"
# The names Prometheus sees (a counter gets _total).
METRIC_NAMES = ("edu_api_requests_total", "edu_api_login_failures_total",
                "edu_api_logins_throttled_total")


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("edu_api_requests", "Requests answered, by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.login_failures = Counter(
            "edu_api_login_failures", "Sign-ins refused for a wrong username or password (401)",
            registry=self.registry)
        self.logins_throttled = Counter(
            "edu_api_logins_throttled", "Sign-ins refused by the login throttle (429)",
            registry=self.registry)

    def observe(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()
        if route == LOGIN_PATH and method == "POST":
            if status == 401:
                self.login_failures.inc()
            elif status == 429:
                self.logins_throttled.inc()


def _route_of(app: FastAPI, request: Request) -> str:
    """The template of the route that served the request (the router leaves it in the
    scope), else of the first route that matches it."""
    served = request.scope.get("route")
    if served is not None and hasattr(served, "path"):
        return str(served.path)
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


def install_metrics(app: FastAPI) -> ApiMetrics:
    """Count every request of `app` and answer GET /metrics."""
    metrics = ApiMetrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def count_requests(request: Request,
                             call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            metrics.observe(request.method, _route_of(app, request), 500)
            raise
        if request.url.path != METRICS_PATH:
            metrics.observe(request.method, _route_of(app, request), response.status_code)
        return response

    @app.get(METRICS_PATH, include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
