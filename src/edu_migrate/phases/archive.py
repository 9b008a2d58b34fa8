"""The legacy tables the migration does not map, copied as they are into `legacy_archive`.

The old database has hundreds of tables besides the eight the phases read (schedules, news,
logs, old copies of tables). Nothing of it may vanish without a trace: once every phase is
done (by `migrate --all`, or by the `migrate --phase N` that runs the last one; validation fails
until then), every table of the source's schema `public` (and of each schema the legacy mapping
reads from) that is neither mapped nor excluded by a name pattern (`exclude` in edu-migrate.toml,
EDU_EXCLUDE) is recreated in the target's schema `legacy_archive` with the same column names and
types (a table of another schema as `legacy_archive."schema.table"`) and filled by a binary COPY
from the run's source snapshot. Each table is dropped and recreated in one transaction, so
running the step again gives the same result. Types the target cannot know (the source's own
enums and domains) are archived as text.

Secrets stay behind: a column that holds credentials or session secrets, known by its name
(password, token, session_key, ip_address, …, in camelCase too, in Azerbaijani and Russian:
parol, şifrə, пароль, and the mapping's own synonyms of `password`) whatever its values look
like (a plaintext password looks like any word), or by the shape of its values (hex digests,
bcrypt and argon2 hashes, long random tokens), is archived empty (NULL) unless
`archive_secrets` opts in. The columns masked are recorded in migration.run_log and shown by
`inventory` and the report.
The archive schema is granted to no application role.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from edu_migrate.mapping import CANONICAL_SCHEMA, DEFAULT_MAPPING, LegacyMapping
from edu_migrate.mapping.draft import COLUMN_SYNONYMS, _letters
from edu_migrate.pg.connect import connect
from edu_migrate.phases.staging import FIXED_DATESTYLE, SourceSnapshot
from edu_migrate.runlog import Reporter

ARCHIVE_SCHEMA = "legacy_archive"
MAPPED, ARCHIVED, EXCLUDED = "mapped", "archived", "excluded"
APPLICATION_ROLES = ("edu_app", "edu_admin", "edu_auth")

# A column named like a credential or a session secret (IP addresses ride along with sessions).
# A name is split into words (snake_case, camelCase) and each word written in plain Latin
# letters (şifrə → sifre, пароль → parol) before it is looked up.
SECRET_WORDS = frozenset({
    "password", "passwd", "pass", "pwd", "pw", "passcode", "passphrase", "hash", "hashed",
    "secret", "secrets", "token", "tokens", "salt", "otp", "totp", "apikey", "sid", "ip",
    "ipaddr", "ipaddress", "credential", "credentials",
    # Azerbaijani: parol, şifrə (password), gizli (secret), sirr (secret), açar (key) with açarı
    "parol", "parolu", "sifre", "sifresi", "gizli", "sirr",
    # Russian: пароль, секрет, токен, хеш/хэш, ключ (key) as part of a pair below
    "parolya", "sekret", "khesh", "kesh",
})
# Words that are secret next to one another: auth_key, resetCode, security_answer, …
SECRET_PAIRS = frozenset({
    ("api", "key"), ("auth", "key"), ("auth", "code"), ("access", "key"), ("private", "key"),
    ("secret", "key"), ("session", "key"), ("session", "id"), ("reset", "code"),
    ("reset", "key"), ("recovery", "code"), ("verification", "code"), ("confirm", "code"),
    ("confirmation", "code"), ("activation", "code"), ("activation", "key"),
    ("security", "answer"), ("secret", "answer"), ("remote", "addr"), ("remote", "address"),
    ("ip", "addr"), ("ip", "address"), ("login", "ip"), ("gizli", "cavab"),
    ("acar", "soz"), ("klyuch", "api"), ("api", "klyuch"), ("sekretnyy", "vopros"),
})
# Word beginnings that say password in any of the three languages (userpassword, parolu).
SECRET_STEMS = ("password", "passwd", "parol", "sifre")


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return [w for w in (_letters(part) for part in re.split(r"[\W_]+", spaced)) if w]


def is_secret_name(name: str) -> bool:
    """Does a column's name say it holds a credential, a session secret or an address?"""
    words = _name_words(name)
    joined = "".join(words)
    synonyms = {_letters(s) for s in ("password", *COLUMN_SYNONYMS["password"])}
    return (any(w in SECRET_WORDS or w in synonyms for w in words)
            or any(pair in SECRET_PAIRS for pair in pairwise(words))
            or joined in synonyms
            or any(w.startswith(stem) or stem in joined for w in words for stem in SECRET_STEMS))


# Values shaped like a digest, a password hash or a random token: hex of 32, 40 or 64 digits,
# bcrypt, argon2, crypt(3), or 32+ characters of base64/url-safe alphabet without a space.
SECRET_VALUE = (r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}"
                r"|\$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}|\$argon2(id|i|d)\$.+|\$[156]\$.+"
                r"|[A-Za-z0-9_+/=-]{32,})$")
# A column is secret by its values when this share of a sample of them has the shape.
SECRET_SHARE = 0.8
SAMPLE_ROWS = 1000
TEXT_TYPES = re.compile(r"^(text|character varying|character|bytea)\b")

SOURCE_TABLES = """
SELECT n.nspname, c.relname,
       c.relname LIKE ANY(%(exclude)s::text[])
       OR n.nspname || '.' || c.relname LIKE ANY(%(exclude)s::text[])
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY n.nspname <> 'public', n.nspname, c.relname
"""

# Column names and types in table order; a type outside pg_catalog (an enum, a domain, an
# extension's type) is archived as text, the one type every target has.
SOURCE_COLUMNS = """
SELECT a.attname,
       CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace
                 OR (t.typelem <> 0 AND e.typnamespace = 'pg_catalog'::regnamespace)
            THEN format_type(a.atttypid, a.atttypmod) ELSE 'text' END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON e.oid = t.typelem
WHERE a.attrelid = %(relation)s::regclass
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class TableEntry:
    """One table of the source, what the migration does with it, and its rows on both sides.
    `table` is its name in public, `schema.table` elsewhere, and its name in legacy_archive;
    `maps` names the legacy tables it holds when it is mapped."""

    table: str
    rows: int
    status: str
    archived_rows: int | None = None
    schema: str = CANONICAL_SCHEMA
    maps: str | None = None
    # Columns archived empty because they hold secrets (or would be, before archiving).
    masked: tuple[str, ...] = ()

    @property
    def relation(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table.removeprefix(f"{self.schema}."))

    @property
    def archive_name(self) -> str:
        return self.table

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArchiveResult:
    archived: dict[str, int]
    excluded: list[str]
    masked: dict[str, list[str]] = field(default_factory=dict)
    secrets_kept: bool = False


def _source_tables(source: psycopg.Connection, exclude: Sequence[str],
                   mapping: LegacyMapping) -> Iterator[tuple[str, str, str, str, list[str]]]:
    """Each table of the source's schema public and of the schemas the mapping reads: its
    schema, name, shown name, status and the legacy tables it holds, not counted."""
    for schema, name, excluded in source.execute(SOURCE_TABLES, {
            "exclude": list(exclude), "schemas": mapping.schemas()}).fetchall():
        legacy = mapping.legacy_tables_of(schema, name)
        status = MAPPED if legacy else EXCLUDED if excluded else ARCHIVED
        shown = name if schema == CANONICAL_SCHEMA else f"{schema}.{name}"
        yield schema, name, shown, status, legacy


def source_inventory(source: psycopg.Connection, exclude: Sequence[str],
                     mapping: LegacyMapping = DEFAULT_MAPPING,
                     counted: Mapping[tuple[str, str], int] | None = None, *,
                     statuses: Collection[str] = (MAPPED, ARCHIVED, EXCLUDED)) -> list[TableEntry]:
    """Every table of the source's schema public and of the schemas the mapping reads, with its
    exact row count and its status. Mapped tables are never excluded: the phases need them.
    `counted`: row counts of (schema, table) that the caller read in the same snapshot (the
    validation's fingerprints count every row of the large mapped tables), not counted again.
    `statuses`: only the tables of these statuses are listed, and counted (a sync's archive
    step copies the archived ones alone; counting the 32 million marks too cost it 1.6 s at
    scale 10, inside the cutover's window)."""
    entries = []
    for schema, name, shown, status, legacy in _source_tables(source, exclude, mapping):
        if status not in statuses:
            continue
        known = (counted or {}).get((schema, name))
        row = (known,) if known is not None else source.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))).fetchone()
        entries.append(TableEntry(shown, int(row[0]) if row else 0, status, None, schema,
                                  ", ".join(legacy) or None))
    return entries


def excluded_tables(source: psycopg.Connection, exclude: Sequence[str],
                    mapping: LegacyMapping = DEFAULT_MAPPING) -> list[str]:
    """The source tables that `exclude` keeps out of the archive, by their shown names."""
    return [shown for _, _, shown, status, _ in _source_tables(source, exclude, mapping)
            if status == EXCLUDED]


def secret_columns(source: psycopg.Connection, entry: TableEntry) -> list[str]:
    """The columns of a source table that hold credentials or session secrets, by name or by
    the shape of a sample of their values."""
    found = []
    for name, kind in source.execute(SOURCE_COLUMNS, {
            "relation": entry.relation.as_string(source)}).fetchall():
        if is_secret_name(str(name)):
            found.append(str(name))
        elif TEXT_TYPES.match(kind):
            row = source.execute(sql.SQL(
                "SELECT count(*) FILTER (WHERE v::text ~ %s), count(*) FROM "
                "(SELECT {} AS v FROM {} WHERE {} IS NOT NULL LIMIT %s) s").format(
                sql.Identifier(name), entry.relation, sql.Identifier(name)),
                [SECRET_VALUE, SAMPLE_ROWS]).fetchone()
            if row and row[1] and row[0] >= SECRET_SHARE * row[1]:
                found.append(str(name))
    return found


def archived_counts(target: psycopg.Connection) -> dict[str, int]:
    """Rows of each table in the target's legacy_archive (empty when it was never archived)."""
    names = [r[0] for r in target.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", [ARCHIVE_SCHEMA])]
    counts = {}
    for name in names:
        row = target.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(ARCHIVE_SCHEMA), sql.Identifier(name))).fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def last_archive(target: psycopg.Connection) -> dict[str, Any] | None:
    """What the last archive step recorded in migration.run_log, or None."""
    row = target.execute("SELECT detail FROM migration.run_log WHERE event = 'archive' "
                         "ORDER BY id DESC LIMIT 1").fetchone()
    return dict(row[0]) if row else None


def _archived_rows(snapshot: SourceSnapshot, entry: TableEntry,
                   masked: Sequence[str]) -> tuple[list[tuple[str, str]], sql.Composed]:
    """The archive's columns (name, type) and the SELECT list that gives its rows from the
    source: every column in its type, the masked ones empty."""
    columns = [(str(name), str(kind)) for name, kind in snapshot.conn.execute(SOURCE_COLUMNS, {
        "relation": entry.relation.as_string(snapshot.conn)}).fetchall()]
    select = sql.SQL(", ").join(
        sql.SQL("NULL::{}").format(sql.SQL(kind)) if name in masked
        else sql.SQL("{}::{}").format(sql.Identifier(name), sql.SQL(kind))
        for name, kind in columns)
    return columns, select


def _archive_table(snapshot: SourceSnapshot, target: psycopg.Connection, entry: TableEntry,
                   masked: Sequence[str]) -> int:
    columns, select = _archived_rows(snapshot, entry, masked)
    archived = sql.Identifier(ARCHIVE_SCHEMA, entry.archive_name)
    target.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(archived))
    target.execute(sql.SQL("CREATE TABLE {} ({})").format(archived, sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns)))
    with snapshot.conn.cursor() as out_cur, target.cursor() as in_cur:
        copy_out_sql = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)").format(
            select, entry.relation)
        with out_cur.copy(copy_out_sql) as copy_out, in_cur.copy(sql.SQL(
                "COPY {} FROM STDIN (FORMAT binary)").format(archived)) as copy_in:
            for chunk in copy_out:
                copy_in.write(chunk)
        return max(out_cur.rowcount, 0)


def _fingerprint(conn: psycopg.Connection, table: sql.Composed) -> tuple[int, int]:
    """Rows and the sum of their hashes: equal on both sides when the rows are (the archive keeps
    the source's column types, or text, which renders alike)."""
    row = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM {} t"
    ).format(table)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _unchanged(snapshot: SourceSnapshot, target: psycopg.Connection, entry: TableEntry,
               masked: Sequence[str], recorded: dict[str, Any] | None) -> bool:
    """The archived rows are the source's rows as the archive keeps them (masked columns
    empty): nothing to copy again.

    Since the last archive step's snapshot (`recorded`, with its horizon): no row written since
    and as many rows as it archived means no row changed (an update or insert writes a row, a
    deletion lowers the count unless a written row makes up for it). Without a usable horizon,
    both sides' rows are fingerprinted."""
    archived = sql.Identifier(ARCHIVE_SCHEMA, entry.archive_name)
    exists = target.execute("SELECT to_regclass(%s) IS NOT NULL",
                            [archived.as_string(target)]).fetchone()
    if not exists or not exists[0]:
        return False
    recorded = recorded or {}
    horizon, rows = recorded.get("horizon"), recorded.get("archived", {}).get(entry.table)
    if (horizon is not None and rows is not None
            and sorted(recorded.get("masked", {}).get(entry.table, [])) == sorted(masked)
            and snapshot.reaches_back_to(int(horizon))):
        if entry.rows != rows:
            return False
        written = snapshot.conn.execute(sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE age(xmin) <= age(%s::text::xid))").format(
                entry.relation), [str(int(horizon) % 2**32)]).fetchone()
        return written is not None and not written[0]
    target.execute(FIXED_DATESTYLE)  # as the source's snapshot session renders dates
    _, select = _archived_rows(snapshot, entry, masked)
    return _fingerprint(snapshot.conn, sql.SQL("(SELECT {} FROM {})").format(
        select, entry.relation)) == _fingerprint(target, sql.SQL("{}").format(archived))


def archive_unmapped(snapshot: SourceSnapshot, target_url: str, exclude: Sequence[str],
                     reporter: Reporter, *, keep_secrets: bool = False,
                     skip_unchanged: bool = False) -> ArchiveResult:
    """Copy every unmapped, not excluded source table into legacy_archive, its secret columns
    empty unless `keep_secrets`; record the step. `skip_unchanged` (a sync's refresh): copy only
    the tables whose rows differ from the archived ones."""
    entries = source_inventory(snapshot.conn, exclude, snapshot.mapping, statuses=(ARCHIVED,))
    result = ArchiveResult({}, excluded_tables(snapshot.conn, exclude, snapshot.mapping),
                           secrets_kept=keep_secrets)
    with connect(target_url, purpose="target") as target:
        recorded = last_archive(target) if skip_unchanged else None
    if recorded is not None and recorded.get("secrets_kept", False) != keep_secrets:
        recorded = None  # masked then, kept now (or the other way): compare the rows
    reporter.line("=" * 60)
    reporter.line("ARCHIVING UNMAPPED TABLES")
    reporter.line("=" * 60)
    with connect(target_url, purpose="target") as target:
        target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(ARCHIVE_SCHEMA)))
        _grant_to_no_application_role(target)
        target.commit()
        for entry in entries:
            if entry.status != ARCHIVED:
                continue
            secret = [] if keep_secrets else secret_columns(snapshot.conn, entry)
            if skip_unchanged and _unchanged(snapshot, target, entry, secret, recorded):
                result.archived[entry.table] = entry.rows
                if secret:
                    result.masked[entry.table] = secret
                continue
            with reporter.progress(f"archive {entry.table}", entry.rows) as advance:
                rows = _archive_table(snapshot, target, entry, secret)
                # Statistics now, not when autovacuum comes round: `health` flags tables
                # never analysed, and the archive is queried like any other table.
                target.execute(sql.SQL("ANALYZE {}").format(
                    sql.Identifier(ARCHIVE_SCHEMA, entry.archive_name)))
                target.commit()
                advance(rows)
            result.archived[entry.table] = rows
            if secret:
                result.masked[entry.table] = secret
            reporter.line(f"✓ Archived {entry.table}: {rows} rows"
                          + (f"; masked (secrets): {', '.join(secret)}" if secret else ""))
        for stale in sorted(set(archived_counts(target)) - set(result.archived)):
            target.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(ARCHIVE_SCHEMA, stale)))
            reporter.line(f"  dropped {ARCHIVE_SCHEMA}.{stale}: no longer an archived table")
        for table in result.excluded:
            reporter.line(f"! Excluded {table} (matches exclude = {list(exclude)}): not archived")
        target.execute("INSERT INTO migration.run_log (event, detail) VALUES ('archive', %s)",
                       [Jsonb({"archived": result.archived, "excluded": result.excluded,
                               "patterns": list(exclude), "masked": result.masked,
                               "secrets_kept": keep_secrets,
                               # the rows written since are what the next sync copies again
                               "horizon": snapshot.horizon})])
        target.commit()
    return result


def _grant_to_no_application_role(target: psycopg.Connection) -> None:
    """The archive holds old personal data: no application role reads it, whatever a DBA
    granted before."""
    roles = [r[0] for r in target.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                          [list(APPLICATION_ROLES)])]
    for grantee in ["PUBLIC", *roles]:
        who = sql.SQL(grantee) if grantee == "PUBLIC" else sql.Identifier(grantee)
        target.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(
            sql.Identifier(ARCHIVE_SCHEMA), who))
        target.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(
            sql.Identifier(ARCHIVE_SCHEMA), who))


def masked_columns(source: psycopg.Connection, recorded: dict[str, Any] | None,
                   entries: Sequence[TableEntry], *,
                   keep_secrets: bool) -> dict[str, tuple[str, ...]]:
    """Per archived table, its masked columns: as the last archive step (`recorded`) masked
    them, else as the next one will (found in the source, unless `keep_secrets`)."""
    if recorded is not None and "masked" in recorded:
        return {table: tuple(columns) for table, columns in recorded["masked"].items()}
    if keep_secrets:
        return {}
    return {e.table: tuple(found) for e in entries if e.status == ARCHIVED
            for found in [secret_columns(source, e)] if found}
