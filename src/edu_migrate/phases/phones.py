"""Phone numbers in E.164, by the `phonenumbers` library, for every distinct legacy spelling."""

from __future__ import annotations

import phonenumbers
import psycopg

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


def stage_phone_numbers(conn: psycopg.Connection) -> int:
    """Fill stage.phone_numbers(raw, e164) from the distinct phones of stage.persons."""
    conn.execute("DROP TABLE IF EXISTS stage.phone_numbers")
    conn.execute("CREATE UNLOGGED TABLE stage.phone_numbers (raw text PRIMARY KEY, e164 text)")
    raws = [row[0] for row in conn.execute(
        "SELECT DISTINCT phone FROM stage.persons WHERE phone IS NOT NULL")]
    with conn.cursor().copy("COPY stage.phone_numbers (raw, e164) FROM STDIN") as copy:
        for raw in raws:
            copy.write_row((raw, to_e164(raw)))
    return len(raws)
