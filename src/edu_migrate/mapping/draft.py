"""A first mapping, drafted from the source's catalogue: a proposal for a person to read.

Each legacy table is matched to the source table whose name and columns fit it best, and each
legacy column to the source column whose name (or a synonym in English, Azerbaijani or Russian,
transliterated) and type fit it best; the id to the table's primary key. Every choice is written
with its confidence and the candidates it beat. Where nothing fits well enough, or two candidates
fit equally well, the entry is a TODO, which `mapping check` and `preflight` refuse: the draft
never guesses silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from difflib import SequenceMatcher

import psycopg

from edu_migrate.mapping import (
    ID_COLUMN,
    LEGACY_COLUMNS,
    MAY_SHARE_A_TABLE,
)

# A candidate below this is not proposed; two within AMBIGUITY of each other are not chosen.
ACCEPT = 0.75
AMBIGUITY = 0.04
TABLE_ACCEPT = 0.6
REJECTED_SHOWN = 3
REJECTED_FROM = 0.5
WIDEST_ALIGNED = 64

CATALOGUE = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(pk.conkey = ARRAY[a.attnum], false)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY n.nspname, c.relname, a.attnum
"""

TABLE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "users": ("user", "auth_user", "account", "accounts", "login", "logins", "istifadeci",
              "istifadeciler", "polzovatel", "polzovateli", "uchetnye_zapisi"),
    "persons": ("person", "people", "profile", "profiles", "individual", "shexs", "shexsler",
                "sexs", "sexsler", "lichnost", "lichnosti", "fizicheskie_litsa"),
    "organizations": ("organization", "org", "orgs", "organisation", "units", "org_units",
                      "struktur", "struktura", "qurum", "qurumlar", "podrazdeleniya",
                      "organizatsii"),
    "students": ("student", "learner", "learners", "telebe", "telebeler", "studenty"),
    "teachers": ("teacher", "instructor", "instructors", "lecturer", "lecturers", "muellim",
                 "muellimler", "prepodavatel", "prepodavateli", "staff"),
    "courses": ("course", "course_runs", "subjects", "subject", "fenn", "fennler", "kurs",
                "kurslar", "kursy", "predmety", "disciplines"),
    "course_students": ("course_student", "enrollment", "enrollments", "enrolments",
                        "registrations", "qeydiyyat", "kurs_telebe", "zapisi"),
    "grades": ("grade", "marks", "mark", "scores", "qiymet", "qiymetler", "ocenki", "ocenka",
               "jurnal", "journal"),
}

COLUMN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "username": ("login", "user_name", "istifadeci_adi", "imya_polzovatelya", "account"),
    "email": ("e_mail", "mail", "email_address", "poct", "elektron_poct", "pochta"),
    "password": ("passwd", "pwd", "pass", "parol", "sifre", "password_hash", "pass_hash",
                 "hash"),
    "user_type": ("type", "role", "kind", "tip", "rol", "user_role", "account_type"),
    "is_active": ("active", "enabled", "aktiv", "aktivdir", "activ", "status_active"),
    "last_login": ("last_login_at", "last_seen", "son_giris", "posledniy_vhod", "last_visit"),
    "created_at": ("created", "date_created", "creation_date", "create_date", "yaradilib",
                   "yaradilma_tarixi", "sozdano", "data_sozdaniya", "inserted_at"),
    "updated_at": ("updated", "modified", "modified_at", "date_modified", "changed_at",
                   "yenilenib", "izmeneno", "data_izmeneniya"),
    "firstname": ("first_name", "fname", "given_name", "name", "ad", "adi", "imya", "imia",
                  "im"),
    "lastname": ("last_name", "lname", "surname", "family_name", "soyad", "soyadi", "familiya",
                 "familia", "famil"),
    "patronymic": ("middle_name", "father_name", "ata_adi", "ataadi", "otchestvo",
                   "otcestvo"),
    "birthdate": ("birth_date", "date_of_birth", "dob", "born", "dogum_tarixi", "dogum",
                  "data_rozhdeniya", "den_rozhdeniya"),
    "gender": ("sex", "cins", "cinsi", "pol"),
    "pin": ("fin", "fin_code", "fin_kod", "personal_code", "personal_no", "national_id"),
    "phone": ("telefon", "tel", "mobile", "phone_number", "mobil", "nomer_telefona"),
    "address": ("unvan", "adres", "addr", "adress", "yasayis_yeri"),
    "user_id": ("account_id", "login_id", "istifadeci_id", "polzovatel_id", "auth_user_id"),
    "person_id": ("people_id", "profile_id", "shexs_id", "lichnost_id", "individual_id"),
    "org_id": ("organization_id", "unit_id", "department_id", "program_id", "kafedra_id",
               "struktur_id", "faculty_id", "podrazdelenie_id"),
    "parent_id": ("parent", "parent_org_id", "ust_id", "valideyn_id", "roditel_id"),
    "type_id": ("type", "org_type", "unit_type", "tip", "tip_id", "kind"),
    "code": ("kod", "short_code", "shifr", "cipher"),
    "name_az": ("ad_az", "adi_az", "title_az", "name", "ad", "adi"),
    "name_ru": ("ad_ru", "adi_ru", "title_ru", "nazvanie"),
    "name_en": ("ad_en", "adi_en", "title_en", "title"),
    "student_no": ("student_number", "card_no", "card_number", "ticket_no", "telebe_no",
                   "bilet_no", "nomer_bileta", "matrikul"),
    "admission_year": ("entry_year", "year_admitted", "enrollment_year", "qebul_ili",
                       "god_postupleniya"),
    "status": ("state", "veziyyet", "status_code", "sostoyanie"),
    "gpa": ("average", "avg_score", "orta_bal", "ortabal", "sredniy_ball"),
    "group_name": ("group", "grp", "qrup", "qrup_adi", "gruppa"),
    "education_form": ("study_form", "form", "tehsil_formasi", "tehsil_forma",
                       "forma_obucheniya"),
    "position": ("vezife", "title", "post", "job_title", "dolzhnost"),
    "degree": ("elmi_derece", "academic_degree", "derece", "stepen", "uchenaya_stepen"),
    "hire_date": ("hired_at", "hired_on", "employed_at", "hire_dt", "ise_qebul_tarixi",
                  "data_priema", "start_date"),
    "credits": ("kredit", "credit", "ects", "kreditler", "kredity"),
    "teacher_id": ("instructor_id", "lecturer_id", "muellim_id", "prepodavatel_id",
                   "staff_id"),
    "edu_year": ("academic_year", "study_year", "tedris_ili", "uchebnyy_god", "year"),
    "semester": ("term", "semestr", "yariil", "period"),
    "section": ("bolme", "sektsiya", "group", "potok"),
    "max_students": ("capacity", "limit", "max_count", "seats", "tutum", "limit_students"),
    "course_id": ("kurs_id", "course_run_id", "fenn_id", "subject_id", "predmet_id"),
    "student_id": ("telebe_id", "learner_id", "student"),
    "final_score": ("score", "total", "total_score", "yekun_bal", "yekun", "itog",
                    "itogovyy_ball"),
    "letter": ("grade_letter", "letter_grade", "herf", "bukva"),
    "enrolled_at": ("enrollment_date", "registered_at", "enrolled_on", "qeydiyyat_tarixi",
                    "data_zapisi"),
    "course_student_id": ("enrollment_id", "enrolment_id", "registration_id",
                          "kurs_telebe_id", "qeydiyyat_id"),
    "grade_type": ("type", "mark_type", "kind", "qiymet_novu", "qiymet_tipi", "tip_ocenki"),
    "value": ("mark", "score", "qiymet", "grade", "bal", "ball", "ocenka"),
    "lesson_date": ("date", "dars_tarixi", "class_date", "data_zanyatiya", "lesson_day"),
}

_LETTERS = str.maketrans({
    "ə": "e", "ı": "i", "ş": "s", "ç": "c", "ğ": "g", "ö": "o", "ü": "u", "а": "a", "б": "b",
    "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i", "й": "y",
    "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "",
    "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya", "і": "i",
})


def _letters(name: str) -> str:
    """A name in plain Latin letters and digits only: İstifadəçi_Adı → istifadeciadi."""
    latin = name.lower().replace("i̇", "i").translate(_LETTERS)
    return "".join(ch for ch in latin if ch.isascii() and ch.isalnum())


@dataclass(frozen=True)
class Candidate:
    name: str
    score: float
    why: str

    def shown(self) -> str:
        return f"{self.name} {self.score:.0%}"


def _name_score(legacy: str, found: str, synonyms: tuple[str, ...]) -> tuple[float, str]:
    source = _letters(found)
    if found == legacy:
        return 1.0, "the same name"
    if source == _letters(legacy):
        return 0.97, f"the same letters as {legacy}"
    if source in {_letters(s) for s in synonyms}:
        return 0.9, f"a synonym of {legacy}"
    best = max(SequenceMatcher(None, _letters(n), source).ratio() for n in (legacy, *synonyms))
    return best * 0.92, f"a name like {legacy}"


def _category(type_name: str) -> str:
    if type_name in ("smallint", "integer", "bigint"):
        return "integer"
    if type_name.startswith(("numeric", "real", "double")):
        return "number"
    if type_name.startswith(("timestamp", "date")):
        return "time"
    if type_name == "boolean":
        return "boolean"
    if type_name.startswith(("text", "character", "varchar", "citext")):
        return "text"
    return "other"


# How well a source type serves a staged type: (staged category, source category) → factor.
TYPE_FIT: dict[tuple[str, str], float] = {
    ("integer", "integer"): 1.0, ("integer", "boolean"): 0.95, ("integer", "number"): 0.75,
    ("integer", "text"): 0.7, ("number", "number"): 1.0, ("number", "integer"): 0.95,
    ("number", "text"): 0.7, ("time", "time"): 1.0, ("time", "text"): 0.8,
}


def _type_fit(staged_type: str, source_type: str) -> tuple[float, str]:
    staged, source = _category(staged_type), _category(source_type)
    if staged == "text":
        return (1.0 if source == "text" else 0.9), ""
    factor = TYPE_FIT.get((staged, source), 0.4)
    note = "" if staged == source else f"; {source_type} in the source, staged as {staged_type}"
    return factor, note


@dataclass
class ColumnProposal:
    legacy: str
    staged_type: str
    chosen: Candidate | None
    rejected: list[Candidate]
    source_type: str | None = None
    todo: str | None = None

    def toml_value(self) -> str:
        if self.chosen is None:
            return "{ todo = " + json.dumps(self.todo, ensure_ascii=False) + " }"
        name = self.chosen.name
        if _category(self.staged_type) == "integer" and self.source_type == "boolean":
            quoted = '"' + name.replace('"', '""') + '"'
            return "{ sql = " + json.dumps(
                f"CASE WHEN {quoted} THEN 1 WHEN NOT {quoted} THEN 0 END") + " }"
        return json.dumps(name, ensure_ascii=False)

    def comment(self) -> str:
        if self.chosen is None:
            return "TODO: map it by hand; preflight refuses a TODO"
        text = f"{self.chosen.score:.0%}: {self.chosen.why}"
        if self.rejected:
            text += "; rejected " + ", ".join(c.shown() for c in self.rejected)
        return text


@dataclass
class TableProposal:
    legacy: str
    chosen: Candidate | None
    rejected: list[Candidate]
    columns: list[ColumnProposal] = field(default_factory=list)

    @property
    def todo(self) -> list[str]:
        if self.chosen is None:
            return [self.legacy]
        return [f"{self.legacy}.{c.legacy}" for c in self.columns if c.chosen is None]


@dataclass
class Draft:
    database: str
    tables: list[TableProposal]
    drafted_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def todo(self) -> list[str]:
        return [item for table in self.tables for item in table.todo]

    def renamed(self) -> list[str]:
        """legacy.column → source column, for every proposal that is not the legacy name."""
        return [f"{t.legacy}.{c.legacy} → {c.chosen.name}" for t in self.tables if t.chosen
                for c in t.columns if c.chosen and c.chosen.name != c.legacy]

    def proposals(self) -> dict[str, tuple[str | None, dict[str, str | None]]]:
        """Per legacy table: the source table and each column's source (None: a TODO)."""
        return {t.legacy: (t.chosen.name if t.chosen else None,
                           {c.legacy: c.chosen.name if c.chosen else None for c in t.columns})
                for t in self.tables}

    def render(self) -> str:
        lines = [
            f"# Legacy mapping drafted by `edu-migrate mapping draft` from the database "
            f"{self.database}",
            f"# on {self.drafted_at:%Y-%m-%d %H:%M} UTC. A proposal: read every line. Each "
            "choice says how sure",
            "# the draft is (100%: the name of legacy-edu.md) and which candidates it rejected.",
            "# A TODO is what it could not map: preflight refuses it until you map it by hand.",
            "# Then: `edu-migrate mapping check --mapping FILE` (docs/mapping.md).",
        ]
        for table in self.tables:
            lines.append("")
            if table.chosen is None:
                rejected = ", ".join(c.shown() for c in table.rejected) or "none"
                lines.append(f"# {table.legacy}: TODO, no source table fits well enough "
                             f"(rejected {rejected})")
                lines.append(f"[mapping.{table.legacy}]")
                lines.append("todo = " + json.dumps(
                    f"name the source table of {table.legacy}: table = \"schema.table\"") + "")
                continue
            lines.append(f"# {table.legacy} ← {table.chosen.name}: {table.chosen.score:.0%}, "
                         f"{table.chosen.why}")
            if table.rejected:
                lines.append("#   rejected " + ", ".join(c.shown() for c in table.rejected))
            lines.append(f"[mapping.{table.legacy}]")
            lines.append("table = " + json.dumps(table.chosen.name, ensure_ascii=False))
            lines.append(f"[mapping.{table.legacy}.columns]")
            width = min(WIDEST_ALIGNED, max(len(f"{c.legacy} = {c.toml_value()}")
                                             for c in table.columns))
            for column in table.columns:
                entry = f"{column.legacy} = {column.toml_value()}"
                lines.append(f"{entry:<{width}}  # {column.comment()}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SourceTable:
    schema: str
    name: str
    columns: dict[str, str]  # name → type, in table order
    primary_key: str | None

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}"


def read_catalogue(conn: psycopg.Connection) -> list[SourceTable]:
    found: dict[tuple[str, str], tuple[dict[str, str], list[str]]] = {}
    for schema, table, column, kind, is_key in conn.execute(CATALOGUE).fetchall():
        columns, keys = found.setdefault((schema, table), ({}, []))
        columns[column] = kind
        if is_key:
            keys.append(column)
    return [SourceTable(s, t, cols, keys[0] if keys else None)
            for (s, t), (cols, keys) in found.items()]


def _column_candidates(legacy: str, staged_type: str, table: SourceTable) -> list[Candidate]:
    candidates = []
    for name, kind in table.columns.items():
        if legacy == ID_COLUMN and name == table.primary_key:
            candidates.append(Candidate(name, 1.0, "the primary key"))
            continue
        score, why = _name_score(legacy, name, COLUMN_SYNONYMS.get(legacy, ()))
        factor, note = _type_fit(staged_type, kind)
        candidates.append(Candidate(name, round(score * factor, 3), why + note))
    return sorted(candidates, key=lambda c: (-c.score, c.name))


def _propose_columns(legacy: str, table: SourceTable) -> list[ColumnProposal]:
    """Each legacy column's best source column; a source column serves one legacy column, the
    one it fits best."""
    ranked = {column: _column_candidates(column, staged_type, table)
              for column, staged_type in LEGACY_COLUMNS[legacy]}
    pairs = sorted(((c.score, column, c) for column, cands in ranked.items() for c in cands),
                   key=lambda p: (-p[0], p[1], p[2].name))
    taken: dict[str, Candidate] = {}
    used: set[str] = set()
    for score, column, candidate in pairs:
        if score < ACCEPT or column in taken or candidate.name in used:
            continue
        taken[column] = candidate
        used.add(candidate.name)
    proposals = []
    for column, staged_type in LEGACY_COLUMNS[legacy]:
        cands = ranked[column]
        chosen = taken.get(column)
        others = [c for c in cands if c is not chosen and c.score >= REJECTED_FROM]
        others = others[:REJECTED_SHOWN]
        todo = None
        if chosen is not None and chosen.why != "the primary key" and any(
                c.score > chosen.score - AMBIGUITY and c.name not in used for c in others):
            todo = (f"{column}: {chosen.shown()} and "
                    f"{next(c.shown() for c in others if c.score > chosen.score - AMBIGUITY)} "
                    "fit about as well; choose one")
            others = [chosen, *others]
            chosen = None
        elif chosen is None:
            best = ", ".join(c.shown() for c in cands[:REJECTED_SHOWN]) or "no columns"
            todo = f"no source column fits {column} (best: {best})"
        elif _category(staged_type) == "time" and \
                _category(table.columns[chosen.name]) == "text":
            # Read under the server's DateStyle, 05/12/2020 would be a date, maybe the wrong one.
            todo = (f"{chosen.name} is a text date: give its format, e.g. {{ sql = "
                    f"\"to_date({chosen.name}, 'DD.MM.YYYY')\" }}")
            others = [chosen, *others]
            chosen = None
        proposals.append(ColumnProposal(column, staged_type, chosen, others,
                                        table.columns.get(chosen.name) if chosen else None, todo))
    return proposals


def _table_score(legacy: str, table: SourceTable) -> Candidate:
    score, why = _name_score(legacy, table.name, TABLE_SYNONYMS.get(legacy, ()))
    columns = LEGACY_COLUMNS[legacy]
    found = sum(1 for column, staged_type in columns
                if _column_candidates(column, staged_type, table)[0].score >= ACCEPT)
    coverage = found / len(columns)
    total = 0.35 * score + 0.65 * coverage
    return Candidate(table.shown, round(total, 3),
                     f"{why}; {found} of {len(columns)} columns found")


def draft_mapping(conn: psycopg.Connection) -> Draft:
    """Propose a mapping for every legacy table from the source's catalogue."""
    tables = read_catalogue(conn)
    by_name = {t.shown: t for t in tables}
    scored = {legacy: sorted((_table_score(legacy, t) for t in tables),
                             key=lambda c: (-c.score, c.name)) for legacy in LEGACY_COLUMNS}
    order = sorted(LEGACY_COLUMNS, key=lambda legacy: -(scored[legacy][0].score
                                                         if scored[legacy] else 0))
    owner: dict[str, str] = {}
    proposals: dict[str, TableProposal] = {}
    for legacy in order:
        ranked = scored[legacy]
        chosen = next((c for c in ranked if c.score >= TABLE_ACCEPT and (
            c.name not in owner or frozenset({legacy, owner[c.name]}) in MAY_SHARE_A_TABLE)),
            None)
        rejected = [c for c in ranked if c is not chosen][:REJECTED_SHOWN]
        proposal = TableProposal(legacy, chosen, rejected)
        if chosen is not None:
            owner.setdefault(chosen.name, legacy)
            proposal.columns = _propose_columns(legacy, by_name[chosen.name])
        proposals[legacy] = proposal
    return Draft(str(conn.info.dbname), [proposals[legacy] for legacy in LEGACY_COLUMNS])
