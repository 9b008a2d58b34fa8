"""Phone numbers in E.164, by the `phonenumbers` library, for every distinct legacy spelling."""

from __future__ import annotations

import phonenumbers
import psycopg
from psycopg import sql

REGION = "AZ"


def to_e164(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Which parser filled the look-up: another version of the library may read a spelling
# differently, so a look-up filled by another one is filled again from nothing.
PARSER = f"phonenumbers {phonenumbers.__version__}"


def phones_parsed_anew(conn: psycopg.Connection) -> bool:
    """Whether stage_phone_numbers will parse every phone again: the look-up is missing, or
    another parser (another version of the library) filled it."""
    row = conn.execute("SELECT obj_description(to_regclass('stage.phone_numbers'), "
                       "'pg_class') IS DISTINCT FROM %s", [PARSER]).fetchone()
    return bool(row and row[0])


def stage_phone_numbers(conn: psycopg.Connection) -> int:
    """stage.phone_numbers(raw, e164): each distinct phone of stage.persons, in E.164.

    Parsing is Python, a phone at a time, so only the spellings the look-up
    lacks are parsed: a sync that derives phase 1 again after a login parses none, where it
    parsed all 7,000 (scale 1) before. Spellings no person has any more are dropped, so the
    table holds what a full run's would. In the phase's transaction: a rollback undoes it, and
    a crash empties it (UNLOGGED), which only means parsing everything again. The number of
    phones parsed."""
    conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS stage.phone_numbers "
                 "(raw text PRIMARY KEY, e164 text)")
    row = conn.execute("SELECT obj_description('stage.phone_numbers'::regclass, 'pg_class')"
                       ).fetchone()
    if row is None or row[0] != PARSER:
        conn.execute("TRUNCATE stage.phone_numbers")
        conn.execute(sql.SQL("COMMENT ON TABLE stage.phone_numbers IS {}").format(
            sql.Literal(PARSER)))
    conn.execute("DELETE FROM stage.phone_numbers n WHERE NOT EXISTS "
                 "(SELECT 1 FROM stage.persons p WHERE p.phone = n.raw)")
    raws = [row[0] for row in conn.execute(
        "SELECT DISTINCT p.phone FROM stage.persons p WHERE p.phone IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM stage.phone_numbers n WHERE n.raw = p.phone)")]
    with conn.cursor().copy("COPY stage.phone_numbers (raw, e164) FROM STDIN") as copy:
        for raw in raws:
            copy.write_row((raw, to_e164(raw)))
    return len(raws)
