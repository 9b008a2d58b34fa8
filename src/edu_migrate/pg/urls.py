"""libpq URLs: parsing, masking passwords, switching the database name."""

from __future__ import annotations

import re
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from edu_migrate.errors import MigrationError


def parse(url: str, *, purpose: str) -> dict[str, str]:
    try:
        return {key: str(value) for key, value in conninfo_to_dict(url).items()}
    except psycopg.ProgrammingError as exc:
        raise MigrationError(
            f"the {purpose} URL is malformed: {driver_message(exc)}",
            "write it as postgresql://user@host:port/dbname",
        ) from exc


def with_database(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


def database_name(url: str) -> str:
    return parse(url, purpose="server").get("dbname", "")


def masked(url: str | None) -> str:
    """A URL fit for logs and reports: never the password."""
    if not url:
        return "(embedded server)"
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(malformed URL)"
    user = params.get("user", "")
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    dbname = params.get("dbname", "")
    auth = f"{quote(str(user))}:***@" if params.get("password") else (f"{user}@" if user else "")
    return f"postgresql://{auth}{host}:{port}/{dbname}"


# The password of a URL runs from the colon after the user name to the next @ of the same
# line, spaces included: a password with a space is still a password.
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\n]*?@")
# Any other URL with a user and a password (`--api`, `--page`, a proxy): http://user:pw@host.
# Its password stops at a space or a slash, so a port followed by a path is never taken for one.
_WEB_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]*@")
# Every connection parameter that holds a secret: password, sslpassword (the key's passphrase).
_KEYWORD_PASSWORD = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]+)",
                               re.IGNORECASE)


def redacted(text: str) -> str:
    """Free text (a command line, a message) with every password in a URL or a conninfo
    string replaced by ***."""
    text = _WEB_URL_PASSWORD.sub(r"\1***@", _URL_PASSWORD.sub(r"\1***@", text))
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


# What a driver quotes of the text it could not parse: that text may be the password.
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


def driver_message(exc: BaseException | str) -> str:
    """The first line of a driver's error with every quoted fragment of the connection string
    left out: libpq quotes the part it could not parse, which may be a password (`%zz`) or a
    host."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return redacted(_QUOTED.sub('"…"', first))
