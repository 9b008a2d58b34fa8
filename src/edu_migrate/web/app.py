"""The reference API: FastAPI over edu_v2, reading as edu_app.

Row-level security does the access control. The queries below select and shape rows; none of
them filters by the caller: a student's `GET /students/` returns one student because the
database shows them only themselves, and a teacher's returns the name, number and e-mail of
their students because that is all the database's taught_students directory holds.

Logins are limited (edu_migrate.web.throttle) and each costs the same whoever the account is
(edu_migrate.security.passwords).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import date
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edu_migrate import __version__
from edu_migrate.security.passwords import HashingBusy
from edu_migrate.web.database import (
    AccountDisabled,
    Database,
    LoginRefused,
    NotSignedIn,
    Session,
)
from edu_migrate.web.logins import ApiLogins, prepare_api_logins
from edu_migrate.web.metrics import install_metrics
from edu_migrate.web.throttle import LoginLimits, LoginThrottle
from edu_migrate.web.tokens import TokenClaims, TokenIssuer

PREFIX = "/api/v1"
MAX_PAGE = 200

# The API's SQL, in one place.
USER_ME = """
SELECT u.id, u.username, u.email, u.role, p.first_name, p.last_name
FROM users u LEFT JOIN persons p ON p.user_id = u.id
WHERE u.id = current_user_id()
"""
# The student records the caller may read whole (their own; all for an administrator), then the
# directory entries of the students they teach and may not read whole.
STUDENT_COLUMNS = """
SELECT * FROM (
    SELECT s.id, s.student_number, s.status, s.admission_year, s.gpa::float8 AS gpa,
           s.group_name, p.first_name, p.last_name, o.name AS program, u.email
    FROM students s
    LEFT JOIN persons p ON p.id = s.person_id
    LEFT JOIN organization_units o ON o.id = s.program_id
    LEFT JOIN users u ON u.id = s.user_id
    UNION ALL
    SELECT t.id, t.student_number, NULL, NULL, NULL, NULL, t.first_name, t.last_name, NULL,
           t.email
    FROM taught_students t WHERE NOT EXISTS (SELECT FROM students s WHERE s.id = t.id)
) x
"""
STUDENTS_PAGE = STUDENT_COLUMNS + "ORDER BY x.student_number, x.id LIMIT %s OFFSET %s"
STUDENT_BY_ID = STUDENT_COLUMNS + "WHERE x.id = %s"
STUDENTS_TOTAL = """
SELECT (SELECT count(*) FROM students)
     + (SELECT count(*) FROM taught_students t
        WHERE NOT EXISTS (SELECT FROM students s WHERE s.id = t.id)) AS n
"""
COURSES_PAGE = """
SELECT c.id, c.code, c.name, c.credit_hours::float8 AS credit_hours
FROM courses c ORDER BY c.code LIMIT %s OFFSET %s
"""
COURSES_TOTAL = "SELECT count(*) AS n FROM courses"
# Enrollments first (a page, or one), then the marks of those only.
ENROLLMENTS = """
SELECT x.id, x.course_code, x.course_name, x.academic_year, x.term_type, x.section_code,
       x.status, x.final_score, x.letter_grade, coalesce(m.marks, '[]'::jsonb) AS marks
FROM (
    SELECT e.id, c.code AS course_code, c.name AS course_name, t.academic_year, t.term_type,
           t.start_date, o.section_code, e.enrollment_status AS status,
           e.final_score::float8 AS final_score, e.grade AS letter_grade
    FROM course_enrollments e
    JOIN course_offerings o ON o.id = e.course_offering_id
    JOIN courses c ON c.id = o.course_id
    JOIN academic_terms t ON t.id = o.academic_term_id
    {selection}
) x
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object(
               'id', g.id, 'assessment_type', a.assessment_type, 'score', g.score::float8,
               'max_score', a.max_score::float8, 'is_absent', g.is_absent,
               'graded_on', g.graded_on)
           ORDER BY a.assessment_type, g.graded_on, g.id) AS marks
    FROM grades g JOIN assessments a ON a.id = g.assessment_id
    WHERE g.enrollment_id = x.id
) m ON true
ORDER BY x.start_date DESC, x.course_code, x.id
"""
ENROLLMENTS_PAGE = ENROLLMENTS.format(
    selection="ORDER BY t.start_date DESC, c.code, e.id LIMIT %s OFFSET %s")
ENROLLMENT_BY_ID = ENROLLMENTS.format(selection="WHERE e.id = %s")
ENROLLMENTS_TOTAL = "SELECT count(*) AS n FROM course_enrollments"
MARK_BY_ID = """
SELECT g.id, a.assessment_type, g.score::float8 AS score, a.max_score::float8 AS max_score,
       g.is_absent, g.graded_on
FROM grades g JOIN assessments a ON a.id = g.assessment_id WHERE g.id = %s
"""
UPDATE_MARK = """
UPDATE grades SET score = %(score)s::numeric, is_absent = %(score)s::numeric IS NULL,
                  graded_on = current_date, graded_by = coalesce(current_staff_id(), graded_by)
WHERE id = %(id)s RETURNING id
"""


class Problem(BaseModel):
    detail: str


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)

    @field_validator("username", "password")
    @classmethod
    def _storable_text(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text") from None
        return value


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"


class UserOut(BaseModel):
    id: UUID
    username: str
    email: str | None
    role: str
    first_name: str | None
    last_name: str | None


class StudentOut(BaseModel):
    """A teacher gets id, number, name and e-mail of their students; the rest is null."""

    id: UUID
    student_number: str
    status: str | None
    admission_year: int | None
    gpa: float | None
    group_name: str | None
    first_name: str | None
    last_name: str | None
    program: dict[str, str] | None
    email: str | None


class CourseOut(BaseModel):
    id: UUID
    code: str
    name: dict[str, str]
    credit_hours: float


class MarkOut(BaseModel):
    id: UUID
    assessment_type: str
    score: float | None
    max_score: float
    is_absent: bool
    graded_on: date | None


class EnrollmentOut(BaseModel):
    id: UUID
    course_code: str
    course_name: dict[str, str]
    academic_year: str
    term_type: str
    section_code: str | None
    status: str
    final_score: float | None
    letter_grade: str | None
    marks: list[MarkOut]


class MarkUpdate(BaseModel):
    score: float | None = Field(
        ge=0, le=100, description="The new mark; null records an absence (qayıb).")


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    total: int
    limit: int
    offset: int
    items: list[Item]


_bearer = HTTPBearer(auto_error=False, description="The access_token of POST /auth/login")
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

Responses = dict[int | str, dict[str, Any]]
UNAUTHENTICATED: Responses = {
    401: {"model": Problem, "description": "Not signed in, or the token is invalid or expired"}}
NOT_FOUND: Responses = {404: {"model": Problem, "description": "No such row visible to the caller"}}


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _services(request: Request) -> tuple[Database, TokenIssuer]:
    state = request.app.state
    return state.database, state.tokens


def _claims_of(request: Request, credentials: HTTPAuthorizationCredentials | None,
               *, required: bool) -> TokenClaims | None:
    if credentials is None:
        if required:
            raise _unauthenticated("not signed in")
        return None
    claims = _services(request)[1].claims_of(credentials.credentials)
    if claims is None:
        raise _unauthenticated("invalid or expired token")
    return claims


def signed_in(request: Request, credentials: Credentials) -> Iterator[Session]:
    """A database session as the signed-in user."""
    yield from _session(request, _claims_of(request, credentials, required=True))


def anyone(request: Request, credentials: Credentials) -> Iterator[Session]:
    """A database session as the signed-in user, or anonymous."""
    yield from _session(request, _claims_of(request, credentials, required=False))


def _session(request: Request, claims: TokenClaims | None) -> Iterator[Session]:
    try:
        with _services(request)[0].session(claims.user_id if claims else None,
                                           claims.issued_at if claims else None,
                                           claims.token_id if claims else None) as conn:
            yield conn
    except NotSignedIn:
        raise _unauthenticated("the account is gone or disabled, or the token was revoked"
                               ) from None


SignedIn = Annotated[Session, Depends(signed_in)]
Anyone = Annotated[Session, Depends(anyone)]


def _rows(conn: Session, query: str, params: list[Any]) -> list[dict[str, Any]]:
    return conn.execute(query.encode(), params).fetchall()


def _total(conn: Session, query: str) -> int:
    row = conn.execute(query.encode()).fetchone()
    return int(row["n"]) if row else 0


router = APIRouter(prefix=PREFIX)


@router.post("/auth/login", responses={
    401: {"model": Problem, "description": "Unknown username or wrong password"},
    403: {"model": Problem, "description": "The account is disabled"},
    429: {"model": Problem, "description": "Too many failed logins for this username or from "
                                           "this client; see Retry-After"},
    503: {"model": Problem, "description": "Too many logins at once; see Retry-After"}})
def login(body: LoginRequest, request: Request) -> TokenResponse:
    """Exchange a username and password (legacy MD5 and bcrypt passwords work) for a token."""
    database, tokens = _services(request)
    throttle: LoginThrottle = request.app.state.throttle
    # The client is the address that connected: `serve` believes X-Forwarded-For only from the
    # proxies --forwarded-allow-ips names.
    client = request.client.host if request.client else "unknown"
    key = database.login_key(body.username)
    wait = throttle.attempt(key, client)
    if wait is not None:
        raise HTTPException(429, "too many failed logins: try again later",
                            headers={"Retry-After": str(wait)})
    try:
        user_id = database.authenticate(body.username, body.password)
    except LoginRefused:
        raise _unauthenticated("wrong username or password") from None
    except AccountDisabled:
        throttle.succeeded(key, client)  # the password was right
        raise HTTPException(403, "the account is disabled") from None
    except HashingBusy:
        throttle.abandoned(key, client)  # no password was checked: neither a failure nor a success
        raise HTTPException(503, "too many logins at once: try again shortly",
                            headers={"Retry-After": "1"}) from None
    throttle.succeeded(key, client)
    return TokenResponse(access_token=tokens.issue(user_id))


def sign_out(request: Request, token: str | None) -> None:
    """Revoke `token` (when it is a valid one) for good: the API's logout and the pages'."""
    claims = _services(request)[1].claims_of(token) if token else None
    if claims is None:
        return
    with suppress(NotSignedIn):  # revoked, or its account gone, already
        _services(request)[0].revoke(claims.user_id, claims.issued_at, claims.token_id,
                                     claims.expires_at)


@router.post("/auth/logout", status_code=204, responses=UNAUTHENTICATED)
def logout(request: Request, credentials: Credentials) -> None:
    """Sign the token out: it is refused from now on, by every process of this database."""
    _claims_of(request, credentials, required=True)
    sign_out(request, credentials.credentials if credentials else None)


@router.get("/users/me", responses=UNAUTHENTICATED)
def users_me(conn: SignedIn) -> UserOut:
    """The signed-in user."""
    rows = _rows(conn, USER_ME, [])
    if not rows:
        raise _unauthenticated("the account is gone or disabled")
    return UserOut(**rows[0])


@router.get("/students/", responses=UNAUTHENTICATED)
def students(conn: SignedIn, limit: Limit = 50, offset: Offset = 0) -> Page[StudentOut]:
    """The students the caller may see: themselves (a student), the students of their offerings
    (a teacher), all (an administrator)."""
    items = [StudentOut(**row) for row in _rows(conn, STUDENTS_PAGE, [limit, offset])]
    return Page[StudentOut](total=_total(conn, STUDENTS_TOTAL), limit=limit, offset=offset,
                            items=items)


@router.get("/students/{student_id}", responses={**UNAUTHENTICATED, **NOT_FOUND})
def student(student_id: UUID, conn: SignedIn) -> StudentOut:
    rows = _rows(conn, STUDENT_BY_ID, [student_id])
    if not rows:
        raise HTTPException(404, "no such student")
    return StudentOut(**rows[0])


@router.get("/courses/")
def courses(conn: Anyone, limit: Limit = 50, offset: Offset = 0) -> Page[CourseOut]:
    """The public course catalogue."""
    items = [CourseOut(**row) for row in _rows(conn, COURSES_PAGE, [limit, offset])]
    return Page[CourseOut](total=_total(conn, COURSES_TOTAL), limit=limit, offset=offset,
                           items=items)


@router.get("/me/enrollments", responses=UNAUTHENTICATED)
def my_enrollments(conn: SignedIn, limit: Limit = 50,
                   offset: Offset = 0) -> Page[EnrollmentOut]:
    """Enrollments with their marks: a student's own, those of a teacher's offerings, all for an
    administrator."""
    items = [EnrollmentOut(**row) for row in _rows(conn, ENROLLMENTS_PAGE, [limit, offset])]
    return Page[EnrollmentOut](total=_total(conn, ENROLLMENTS_TOTAL), limit=limit,
                               offset=offset, items=items)


@router.get("/enrollments/{enrollment_id}", responses={**UNAUTHENTICATED, **NOT_FOUND})
def enrollment(enrollment_id: UUID, conn: SignedIn) -> EnrollmentOut:
    rows = _rows(conn, ENROLLMENT_BY_ID, [enrollment_id])
    if not rows:
        raise HTTPException(404, "no such enrollment")
    return EnrollmentOut(**rows[0])


@router.patch("/grades/{grade_id}", responses={
    **UNAUTHENTICATED, **NOT_FOUND,
    403: {"model": Problem, "description": "The caller may read this mark but not change it"}})
def update_grade(grade_id: UUID, body: MarkUpdate, conn: SignedIn) -> MarkOut:
    """Change a mark: teachers in their own offerings, administrators anywhere."""
    rows = _rows(conn, MARK_BY_ID, [grade_id])
    if not rows:
        raise HTTPException(404, "no such mark")
    if body.score is not None and body.score > rows[0]["max_score"]:
        raise HTTPException(422, f"the mark exceeds the maximum of {rows[0]['max_score']:g}")
    changed = conn.execute(UPDATE_MARK, {"score": body.score, "id": grade_id}).fetchone()
    if changed is None:
        raise HTTPException(403, "this mark may not be changed by you")
    return MarkOut(**_rows(conn, MARK_BY_ID, [grade_id])[0])


def create_app(target_url: str, *, tokens: TokenIssuer | None = None,
               logins: ApiLogins | None = None,
               login_limits: LoginLimits | None = None,
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The API over the edu_v2 database at `target_url`, whose user owns it: the API's own
    login roles (`logins`, prepared from `target_url` when not given) serve the requests.
    With `allowed_hosts`, a request whose Host header names another is refused (400): a web
    page whose DNS name is rebound to 127.0.0.1 cannot reach the loopback API."""
    database = Database(logins or prepare_api_logins(target_url))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database.open()
        try:
            yield
        finally:
            database.close()

    app = FastAPI(title="edu_v2 reference API", version=__version__, lifespan=lifespan)
    app.state.database = database
    app.state.tokens = tokens or TokenIssuer()
    app.state.throttle = LoginThrottle(login_limits)
    app.include_router(router)
    # The dashboards sign in through `login` above, so they are imported once this module is.
    from edu_migrate.web.pages import router as pages

    app.include_router(pages)
    install_metrics(app)  # GET /metrics for Prometheus
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The default echoes the offending input back: that may be a password.
        errors = [{key: value for key, value in error.items() if key in ("type", "loc", "msg")}
                  for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def refused_by_the_database(request: Request,
                                      exc: psycopg.errors.IntegrityError) -> JSONResponse:
        # The database's own rules (a mark within its maximum, say) have the last word.
        detail = exc.diag.message_primary or "the change breaks a rule of the database"
        return JSONResponse({"detail": detail}, status_code=409)

    @app.exception_handler(psycopg.errors.InsufficientPrivilege)
    async def forbidden_by_the_database(request: Request,
                                        exc: psycopg.errors.InsufficientPrivilege) -> JSONResponse:
        return JSONResponse({"detail": "not allowed for this account"}, status_code=403)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)

    return app
