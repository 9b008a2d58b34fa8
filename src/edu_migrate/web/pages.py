"""Server-rendered dashboards over the reference API's database sessions: a student's courses and
marks, a teacher's offerings with their rosters, an administrator's counts and search.

The pages sign in through the API's own `login` and keep its token in a cookie (HttpOnly,
SameSite=Strict) that ends with the browser, unless the user ticks "Keep me signed in" (then it
lasts the token's hour). Signing out revokes the token itself, not only the cookie. Each page
runs in one database session as the signed-in user, so row-level security decides what it
shows, exactly as for the API. No JavaScript: plain HTML forms and one stylesheet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from edu_migrate.web.app import LoginRequest, login, sign_out
from edu_migrate.web.database import NotSignedIn, Session
from edu_migrate.web.tokens import TokenClaims

COOKIE = "edu_session"
DASHBOARDS = {"student": "/student", "teacher": "/teacher", "admin": "/admin"}
SEARCH_LIMIT = 50
MAX_FORM_BYTES = 8192
# Nothing but this server's own stylesheet and forms; the pages hold personal data, so they are
# neither cached nor framed.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    # Same-origin, not no-referrer: with no referrer, the browser posts the sign-in form with
    # `Origin: null`, and the form's origin check could not tell it from another site's.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

TEMPLATES = Environment(loader=PackageLoader("edu_migrate.web", "templates"),
                        autoescape=select_autoescape(["html", "j2"]),
                        trim_blocks=True, lstrip_blocks=True)


def _az(name: Mapping[str, str] | None) -> str:
    """The Azerbaijani form of a multilingual name (the schema guarantees one)."""
    return (name or {}).get("az", "")


def _en(name: Mapping[str, str] | None) -> str:
    return (name or {}).get("en", "")


def _score(value: float | None) -> str:
    """A mark as people write it: 8.5, 10, or qb (qayıb, absent) for no score."""
    return "qb" if value is None else f"{value:g}"


TEMPLATES.filters.update(az=_az, en=_en, score=_score)


@cache
def _sql(name: str) -> bytes:
    return resources.files("edu_migrate.web").joinpath("sql", f"{name}.sql").read_bytes()


def _rows(conn: Session, name: str,
          params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    return conn.execute(_sql(name), params).fetchall()


def _one(conn: Session, name: str) -> dict[str, Any] | None:
    rows = _rows(conn, name)
    return rows[0] if rows else None


def _render(template: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=HEADERS)


def _safe_next(target: str | None) -> str | None:
    """Where to go after signing in: one of the dashboards (with its query), nowhere else."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path not in DASHBOARDS.values():
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _to_login(request: Request, *, forget: bool = False) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = _redirect("/login?" + urlencode({"next": here}) if _safe_next(here) else "/login")
    if forget:
        response.delete_cookie(COOKIE, path="/")
    return response


def _cookie_claims(request: Request) -> TokenClaims | None:
    """Who the session cookie's token names and when it was issued (a token issued before a
    password change or deactivation is refused by the database session)."""
    token = request.cookies.get(COOKIE)
    claims: TokenClaims | None = request.app.state.tokens.claims_of(token) if token else None
    return claims


Build = Callable[[Session], dict[str, Any]]


def _dashboard(request: Request, role: str | None, template: str, build: Build) -> Response:
    """The page `template` for a signed-in user of `role`, with what `build` reads in the user's
    own database session. Role None sends each user to their own dashboard."""
    claims = _cookie_claims(request)
    if claims is None:
        return _to_login(request)
    try:
        with request.app.state.database.session(claims.user_id, claims.issued_at,
                                                claims.token_id) as conn:
            me = _one(conn, "whoami")
            if me is None:
                return _to_login(request, forget=True)
            own = DASHBOARDS.get(me["role"])
            if role is None and own is not None:
                return _redirect(own)
            if me["role"] != role:
                return _render("forbidden.html.j2", {"me": me, "wanted": role, "home": own}, 403)
            context = build(conn)
    except NotSignedIn:
        return _to_login(request, forget=True)
    return _render(template, {"me": me, **context})


def _marks_of(conn: Session, enrollment_ids: list[UUID]) -> dict[UUID, list[dict[str, Any]]]:
    """Per enrollment, its assessments in course order, each with its marks."""
    marks: dict[UUID, list[dict[str, Any]]] = {}
    for row in _rows(conn, "marks", {"enrollments": enrollment_ids}):
        marks.setdefault(row["enrollment_id"], []).append(row)
    return marks


router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request) -> Response:
    """Each user's own dashboard."""
    return _dashboard(request, None, "forbidden.html.j2", lambda conn: {})


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if _cookie_claims(request) is not None:
        return _redirect(_safe_next(next) or "/")
    return _render("login.html.j2", {"next": _safe_next(next) or "", "username": ""})


@router.post("/login")
async def sign_in(request: Request) -> Response:
    """The form's username and password go through the API's own login; its token becomes the
    session cookie."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        # Another site's form must not sign its visitors in to an account of its choosing.
        raise HTTPException(403, "sign in from this site's own form")
    body = await _bounded_body(request)
    form = {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace"),
                                                       keep_blank_values=True).items()}
    username, target = form.get("username", ""), _safe_next(form.get("next"))
    context = {"next": target or "", "username": username}
    try:
        credentials = LoginRequest(username=username, password=form.get("password", ""))
    except ValidationError:
        return _render("login.html.j2", {**context, "error": "Enter a username and a password."},
                       422)
    try:
        issued = await run_in_threadpool(login, credentials, request)
    except HTTPException as exc:
        return _render("login.html.j2", {**context, "error": _login_refusal(exc)},
                       exc.status_code)
    response = _redirect(target or "/")
    tokens = request.app.state.tokens
    # A session cookie unless asked: on a shared computer, closing the browser signs out.
    remember = form.get("remember") == "on"
    response.set_cookie(COOKIE, issued.access_token,
                        max_age=int(tokens.lifetime.total_seconds()) if remember else None,
                        path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


async def _bounded_body(request: Request) -> bytes:
    """The request's body, refused (413) as soon as it passes MAX_FORM_BYTES: never read whole
    first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise HTTPException(413, "the form is too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "the form is too large")
    return bytes(body)


def _login_refusal(exc: HTTPException) -> str:
    if exc.status_code == 401:
        return "Wrong username or password."
    if exc.status_code == 403:
        return "This account is disabled."
    return f"Signing in failed: {exc.detail}."


@router.post("/logout")
def sign_out_page(request: Request) -> Response:
    sign_out(request, request.cookies.get(COOKIE))
    response = _redirect("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/assets/pages.css")
def stylesheet() -> Response:
    css = resources.files("edu_migrate.web").joinpath("templates", "pages.css").read_text("utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600",
                                                         "X-Content-Type-Options": "nosniff"})


@router.get("/student")
def student_dashboard(request: Request) -> Response:
    def build(conn: Session) -> dict[str, Any]:
        courses = _rows(conn, "student_courses")
        marks = _marks_of(conn, [c["id"] for c in courses])
        for course in courses:
            course["assessments"] = marks.get(course["id"], [])
        graded = [c for c in courses if c["final_score"] is not None]
        return {"profile": _one(conn, "student_profile"), "courses": courses,
                "graded": len(graded),
                "credits": sum(c["credit_hours"] for c in graded if c["status"] == "completed"),
                "mark_count": sum(len(a["scores"]) for c in courses for a in c["assessments"])}

    return _dashboard(request, "student", "student.html.j2", build)


@router.get("/teacher")
def teacher_dashboard(request: Request) -> Response:
    def build(conn: Session) -> dict[str, Any]:
        offerings = _rows(conn, "teacher_offerings")
        roster = _rows(conn, "teacher_rosters", {"offerings": [o["id"] for o in offerings]})
        marks = _marks_of(conn, [r["id"] for r in roster])
        by_offering: dict[UUID, list[dict[str, Any]]] = {}
        for student in roster:
            student["marks"] = {a["assessment_type"]: a["scores"]
                                for a in marks.get(student["id"], [])}
            by_offering.setdefault(student["course_offering_id"], []).append(student)
        for offering in offerings:
            offering["roster"] = by_offering.get(offering["id"], [])
            offering["assessments"] = _columns(marks, offering["roster"])
        # Open: the newest term, and the newest with marks (the newest may have none yet).
        open_terms = [offerings[0]["term"]] if offerings else []
        open_terms += [o["term"] for o in offerings if o["assessments"]][:1]
        return {"profile": _one(conn, "teacher_profile"), "offerings": offerings,
                "open_terms": open_terms, "students": len({r["student_number"] for r in roster})}

    return _dashboard(request, "teacher", "teacher.html.j2", build)


def _columns(marks: Mapping[UUID, list[dict[str, Any]]],
             roster: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The assessments of one offering, in course order, as its roster's columns."""
    seen: dict[str, dict[str, Any]] = {}
    for student in roster:
        for assessment in marks.get(student["id"], []):
            seen.setdefault(assessment["assessment_type"], assessment)
    order = ("attendance", "seminar", "colloquium", "independent_work", "midterm", "final_exam")
    return sorted(seen.values(), key=lambda a: order.index(a["assessment_type"]))


@router.get("/admin")
def admin_panel(request: Request, q: str = Query("", max_length=100)) -> Response:
    query = q.strip()

    def build(conn: Session) -> dict[str, Any]:
        found: dict[str, Any] = {"users": [], "courses": []}
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params = {"pattern": f"%{escaped}%", "limit": SEARCH_LIMIT}
            found = {"users": _rows(conn, "admin_user_search", params),
                     "courses": _rows(conn, "admin_course_search", params)}
        return {"counts": _one(conn, "admin_counts"), "q": query, "limit": SEARCH_LIMIT,
                **found}

    return _dashboard(request, "admin", "admin.html.j2", build)
