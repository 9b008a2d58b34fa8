"""Generate the legacy database ``edu`` with the guide's counts, deterministically.

The small tables (people, organizations, courses) are built in Python, where Faker supplies
realistic names, and loaded with COPY. The big tables (enrollments, marks, logs) are produced
server-side with set-based SQL whose randomness comes from md5 of (seed, stream, key), never from
``random()``, so the result is independent of plan, parallelism and server.

The clean profile writes only legitimate data, including every alternative format that
legacy-edu.md documents. The dirty profile runs `edu_migrate.legacy.dirt` as a separate step after
the clean fill, which mutates or adds rows; nothing in the clean fill assumes it is the last writer.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from typing import Any

import bcrypt
import psycopg
from faker import Faker
from psycopg import sql

from edu_migrate.errors import MigrationError
from edu_migrate.legacy.dirt import InjectedDirt, inject

MAPPED_TABLES: tuple[str, ...] = (
    "users",
    "persons",
    "organizations",
    "students",
    "teachers",
    "courses",
    "course_students",
    "grades",
)
UNMAPPED_TABLES: tuple[str, ...] = (
    "rooms",
    "schedules",
    "news",
    "messages",
    "user_sessions",
    "login_logs",
    "users_old",
)
PROFILES: tuple[str, ...] = ("clean", "dirty")

# Row counts at scale 1: the guide's figures for the mapped tables, plausible ones for the rest.
BASE_COUNTS: dict[str, int] = {
    "users": 6_987,
    "persons": 6_987,
    "organizations": 419,
    "students": 6_344,
    "teachers": 424,
    "courses": 6_020,
    "course_students": 118_477,
    "grades": 3_209_747,
    "rooms": 146,
    "schedules": 12_040,
    "news": 612,
    "messages": 48_733,
    "user_sessions": 21_904,
    "login_logs": 187_412,
    "users_old": 3_104,
}
BASE_DISTINCT_COURSES = 1_234
BASE_FACULTIES = 10
BASE_DEPARTMENTS = 58

# The moment the legacy database was copied: nothing in it is later than this.
SNAPSHOT = datetime(2025, 12, 20, 18, 0)
FIRST_TERM_YEAR = 2020
TERM_YEARS = tuple(range(FIRST_TERM_YEAR, FIRST_TERM_YEAR + 6))
TERM_WEEKS_DAYS = 105
FINAL_EXAM_DAY = 125
ADMISSION_YEARS = tuple(range(2017, 2026))
STUDY_YEARS = 4
MIN_ADMINS = 5
GRADE_CHUNKS = 10

USER_STUDENT, USER_TEACHER, USER_ADMIN, USER_STAFF = 1, 2, 3, 4
ORG_UNIVERSITY, ORG_FACULTY, ORG_DEPARTMENT, ORG_PROGRAM = 1, 2, 3, 4

ProgressCallback = Callable[[str, int], None]


@dataclass(frozen=True)
class GenerationSummary:
    scale: float
    profile: str
    seed: int
    row_counts: dict[str, int]
    seconds: float
    dirt: list[InjectedDirt] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------------

UNIVERSITY = ("BBU", "Bakı Biznes Universiteti", "Бакинский университет бизнеса",
              "Baku Business University")

FACULTIES: tuple[tuple[str, str, str], ...] = (
    ("İqtisadiyyat fakültəsi", "Экономический факультет", "Faculty of Economics"),
    ("Biznes idarəetməsi fakültəsi", "Факультет бизнес-администрирования",
     "Faculty of Business Administration"),
    ("Maliyyə və mühasibat fakültəsi", "Факультет финансов и учёта",
     "Faculty of Finance and Accounting"),
    ("Beynəlxalq münasibətlər fakültəsi", "Факультет международных отношений",
     "Faculty of International Relations"),
    ("Hüquq fakültəsi", "Юридический факультет", "Faculty of Law"),
    ("İnformasiya texnologiyaları fakültəsi", "Факультет информационных технологий",
     "Faculty of Information Technology"),
    ("Filologiya fakültəsi", "Филологический факультет", "Faculty of Philology"),
    ("Turizm və xidmət fakültəsi", "Факультет туризма и сервиса",
     "Faculty of Tourism and Services"),
    ("Mühəndislik fakültəsi", "Инженерный факультет", "Faculty of Engineering"),
    ("Təbiət elmləri fakültəsi", "Факультет естественных наук", "Faculty of Natural Sciences"),
)


@dataclass(frozen=True)
class Subject:
    prefix: str
    name_az: str
    name_ru: str
    name_en: str
    faculty: int


SUBJECTS: tuple[Subject, ...] = tuple(
    Subject(*row)
    for row in (
        ("IQT", "İqtisadi nəzəriyyə", "Экономическая теория", "Economic Theory", 0),
        ("MAK", "Makroiqtisadiyyat", "Макроэкономика", "Macroeconomics", 0),
        ("MIK", "Mikroiqtisadiyyat", "Микроэкономика", "Microeconomics", 0),
        ("DUI", "Dünya iqtisadiyyatı", "Мировая экономика", "World Economy", 0),
        ("EKM", "Ekonometrika", "Эконометрика", "Econometrics", 0),
        ("REG", "Regional iqtisadiyyat", "Региональная экономика", "Regional Economics", 0),
        ("MEN", "Menecment", "Менеджмент", "Management", 1),
        ("MAR", "Marketinq", "Маркетинг", "Marketing", 1),
        ("BIZ", "Biznesin təşkili", "Организация бизнеса", "Business Organisation", 1),
        ("INS", "İnsan resurslarının idarə edilməsi", "Управление человеческими ресурсами",
         "Human Resource Management", 1),
        ("LOG", "Logistika", "Логистика", "Logistics", 1),
        ("SAH", "Sahibkarlıq", "Предпринимательство", "Entrepreneurship", 1),
        ("MAL", "Maliyyə", "Финансы", "Finance", 2),
        ("MUH", "Mühasibat uçotu", "Бухгалтерский учёт", "Accounting", 2),
        ("AUD", "Audit", "Аудит", "Auditing", 2),
        ("BNK", "Bank işi", "Банковское дело", "Banking", 2),
        ("SIG", "Sığorta", "Страхование", "Insurance", 2),
        ("VER", "Vergilər və vergitutma", "Налоги и налогообложение", "Taxation", 2),
        ("BMM", "Beynəlxalq münasibətlər", "Международные отношения",
         "International Relations", 3),
        ("DIP", "Diplomatiya", "Дипломатия", "Diplomacy", 3),
        ("SIY", "Siyasi elmlər", "Политология", "Political Science", 3),
        ("BIH", "Beynəlxalq iqtisadi əlaqələr", "Международные экономические отношения",
         "International Economic Relations", 3),
        ("REL", "Regionşünaslıq", "Регионоведение", "Regional Studies", 3),
        ("HUQ", "Dövlət və hüquq nəzəriyyəsi", "Теория государства и права",
         "Theory of State and Law", 4),
        ("KON", "Konstitusiya hüququ", "Конституционное право", "Constitutional Law", 4),
        ("MLK", "Mülki hüquq", "Гражданское право", "Civil Law", 4),
        ("CIN", "Cinayət hüququ", "Уголовное право", "Criminal Law", 4),
        ("BHQ", "Beynəlxalq hüquq", "Международное право", "International Law", 4),
        ("IQH", "İqtisadi hüquq", "Хозяйственное право", "Business Law", 4),
        ("INF", "İnformatika", "Информатика", "Computer Science", 5),
        ("PRO", "Proqramlaşdırma", "Программирование", "Programming", 5),
        ("VBS", "Verilənlər bazası sistemləri", "Системы баз данных", "Database Systems", 5),
        ("KSS", "Kompüter şəbəkələri", "Компьютерные сети", "Computer Networks", 5),
        ("IST", "İnformasiya təhlükəsizliyi", "Информационная безопасность",
         "Information Security", 5),
        ("SUN", "Süni intellekt", "Искусственный интеллект", "Artificial Intelligence", 5),
        ("IQI", "İqtisadi informatika", "Экономическая информатика", "Business Informatics", 5),
        ("AZD", "Azərbaycan dili", "Азербайджанский язык", "Azerbaijani Language", 6),
        ("ING", "İngilis dili", "Английский язык", "English Language", 6),
        ("RUS", "Rus dili", "Русский язык", "Russian Language", 6),
        ("ALM", "Alman dili", "Немецкий язык", "German Language", 6),
        ("TRC", "Tərcümə nəzəriyyəsi", "Теория перевода", "Translation Theory", 6),
        ("ADB", "Azərbaycan ədəbiyyatı", "Азербайджанская литература",
         "Azerbaijani Literature", 6),
        ("TUR", "Turizm", "Туризм", "Tourism", 7),
        ("OTE", "Otelçilik", "Гостиничное дело", "Hospitality Management", 7),
        ("XID", "Xidmət sahəsinin iqtisadiyyatı", "Экономика сферы услуг", "Service Economics", 7),
        ("MDN", "Mədəniyyətşünaslıq", "Культурология", "Cultural Studies", 7),
        ("TAR", "Azərbaycan tarixi", "История Азербайджана", "History of Azerbaijan", 7),
        ("MEX", "Mexanika", "Механика", "Mechanics", 8),
        ("ELK", "Elektrotexnika", "Электротехника", "Electrical Engineering", 8),
        ("ENE", "Energetika", "Энергетика", "Power Engineering", 8),
        ("INZ", "İnşaat mühəndisliyi", "Строительная инженерия", "Civil Engineering", 8),
        ("NEF", "Neft-qaz işi", "Нефтегазовое дело", "Petroleum Engineering", 8),
        ("RIY", "Ali riyaziyyat", "Высшая математика", "Higher Mathematics", 9),
        ("MAT", "Riyazi analiz", "Математический анализ", "Mathematical Analysis", 9),
        ("STA", "Statistika", "Статистика", "Statistics", 9),
        ("FIZ", "Fizika", "Физика", "Physics", 9),
        ("KIM", "Kimya", "Химия", "Chemistry", 9),
        ("EKO", "Ekologiya", "Экология", "Ecology", 9),
    )
)

# Course titles built on a subject: (az, ru, en) templates.
COURSE_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("{}", "{}", "{}"),
    ("{} I", "{} I", "{} I"),
    ("{} II", "{} II", "{} II"),
    ("{} III", "{} III", "{} III"),
    ("{}: giriş kursu", "{}: вводный курс", "Introduction to {}"),
    ("{}: seçmə fənn", "{}: курс по выбору", "{}: elective"),
    ("{}: xüsusi kurs", "{}: спецкурс", "{}: special course"),
    ("{}: seminar", "{}: семинар", "{}: seminar"),
    ("{}: praktikum", "{}: практикум", "{}: practicum"),
    ("{}: müasir problemlər", "{}: современные проблемы", "Contemporary issues in {}"),
    ("{}: tədqiqat metodları", "{}: методы исследования", "Research methods in {}"),
    ("{}: kurs işi", "{}: курсовая работа", "{}: term paper"),
    ("{}: beynəlxalq təcrübə", "{}: международный опыт", "{}: international practice"),
    ("{}: tətbiqi aspektlər", "{}: прикладные аспекты", "Applied {}"),
    ("{}: nəzəriyyə və praktika", "{}: теория и практика", "{}: theory and practice"),
    ("{} (magistratura)", "{} (магистратура)", "{} (graduate)"),
    ("{}: qabaqcıl kurs", "{}: продвинутый курс", "Advanced {}"),
    ("{}: tarix və inkişaf", "{}: история и развитие", "History of {}"),
    ("{}: kompüter modelləşdirməsi", "{}: компьютерное моделирование",
     "Computer modelling in {}"),
    ("{}: peşə etikası", "{}: профессиональная этика", "Professional ethics in {}"),
    ("{}: layihə işi", "{}: проектная работа", "{}: project work"),
    ("{}: yekun seminar", "{}: итоговый семинар", "{}: capstone seminar"),
)

# (level az, level ru, level en) x (sector az, sector ru, sector en, group-name letter)
PROGRAM_VARIANTS: tuple[tuple[tuple[str, str, str], tuple[str, str, str, str]], ...] = tuple(
    (level, sector)
    for level, sector in (
        (("bakalavr", "бакалавриат", "bachelor"), ("Azərbaycan bölməsi", "азерб. сектор",
                                                    "Azerbaijani section", "a")),
        (("bakalavr", "бакалавриат", "bachelor"), ("rus bölməsi", "русский сектор",
                                                    "Russian section", "r")),
        (("magistr", "магистратура", "master"), ("Azərbaycan bölməsi", "азерб. сектор",
                                                 "Azerbaijani section", "a")),
        (("bakalavr", "бакалавриат", "bachelor"), ("ingilis bölməsi", "английский сектор",
                                                    "English section", "i")),
        (("magistr", "магистратура", "master"), ("rus bölməsi", "русский сектор",
                                                 "Russian section", "r")),
        (("magistr", "магистратура", "master"), ("ingilis bölməsi", "английский сектор",
                                                 "English section", "i")),
        (("doktorantura", "докторантура", "doctorate"), ("Azərbaycan bölməsi",
                                                          "азерб. сектор",
                                                          "Azerbaijani section", "a")),
    )
)

TEACHER_POSITIONS: tuple[tuple[str, float], ...] = (
    ("Professor", 0.08), ("Dosent", 0.30), ("Baş müəllim", 0.30), ("Müəllim", 0.22),
    ("Assistent", 0.10),
)
STUDENT_STATUS_WORDS: dict[str, tuple[str, str]] = {
    "active": ("active", "aktiv"),
    "graduated": ("graduated", "məzun"),
    "expelled": ("expelled", "xaric edilib"),
    "academic_leave": ("academic_leave", "akademik məzuniyyət"),
}
PHONE_OPERATORS: tuple[str, ...] = ("50", "51", "55", "70", "77", "99", "10")
PIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
PASSWORD_WORDS: tuple[str, ...] = (
    "şəhər", "günəş", "xəzər", "qələm", "dəniz", "çinar", "lalə", "gülüş", "ağac", "bakı",
    "salam", "kitab", "araz", "ulduz", "parol", "azerbaijan", "qarabağ", "ürək", "sevgi", "ana",
)
BCRYPT_ROUNDS = 4
BCRYPT_SINCE = datetime(2020, 1, 1)
USER_PASSWORD_COLUMN = 3

AZ_TRANSLITERATION = str.maketrans({
    "ə": "e", "ı": "i", "ö": "o", "ü": "u", "ş": "sh", "ç": "ch", "ğ": "g",
})
RU_TRANSLITERATION = str.maketrans({
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z",
    "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
    "щ": "sch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya",
})


# --------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------


def _scaled(base: int, scale: float, minimum: int = 1) -> int:
    """round(base * scale) with halves rounded up (not to even), and at least ``minimum``."""
    return max(minimum, math.floor(base * scale + 0.5))


@dataclass(frozen=True)
class Plan:
    """How many rows of each kind one generation writes."""

    counts: dict[str, int]
    distinct_courses: int
    faculties: int
    departments: int
    programs: int
    admins: int
    staff: int

    @classmethod
    def for_scale(cls, scale: float) -> Plan:
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive number, not {scale!r}")
        counts = {table: _scaled(base, scale) for table, base in BASE_COUNTS.items()}
        # Students need a program, teachers a department and the tree a faculty.
        counts["organizations"] = max(4, counts["organizations"])
        counts["courses"] = max(len(TERM_YEARS) * 2, counts["courses"])
        counts["users"] = max(counts["users"], counts["students"] + counts["teachers"] + 1)
        counts["persons"] = counts["users"]
        counts["users_old"] = min(counts["users_old"], counts["users"])
        if counts["course_students"] > counts["courses"] * counts["students"]:
            raise MigrationError(
                f"scale {scale} is too small: {counts['course_students']} enrollments cannot be "
                f"unique over {counts['courses']} course runs × {counts['students']} students",
                "use a larger --scale, e.g. 0.01")
        units = counts["organizations"] - 1
        faculties = max(1, round(units * BASE_FACULTIES / (BASE_COUNTS["organizations"] - 1)))
        departments = max(1, round(units * BASE_DEPARTMENTS / (BASE_COUNTS["organizations"] - 1)))
        others = counts["users"] - counts["students"] - counts["teachers"]
        admins = min(others, max(MIN_ADMINS, others // 20))
        return cls(
            counts=counts,
            distinct_courses=min(_scaled(BASE_DISTINCT_COURSES, scale), counts["courses"]),
            faculties=faculties,
            departments=departments,
            programs=units - faculties - departments,
            admins=admins,
            staff=others - admins,
        )


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def legacy_password(username: str) -> str:
    """The clear-text password of a generated account; a function of the username alone."""
    digest = hashlib.sha256(f"edu-legacy-password:{username}".encode()).digest()
    word = PASSWORD_WORDS[digest[0] % len(PASSWORD_WORDS)]
    if digest[1] % 4 == 0:
        word = word.capitalize()
    number = int.from_bytes(digest[2:4], "big") % 10_000
    return f"{word}{number:0{2 + digest[4] % 3}d}"


_BCRYPT_ALPHABET = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
)


@dataclass(frozen=True)
class PendingBcrypt:
    """A bcrypt hash still to compute: they are computed together, in parallel."""

    password: bytes
    salt: bytes

    def compute(self) -> str:
        return bcrypt.hashpw(self.password, self.salt).decode()


def _password_hash(password: str, last_login: datetime | None,
                   rng: random.Random) -> str | PendingBcrypt:
    if last_login is not None and last_login >= BCRYPT_SINCE:
        # bcrypt.gensalt() is random; a salt drawn from the seeded generator keeps runs identical.
        salt_bytes = rng.getrandbits(128).to_bytes(16, "big")
        encoded = base64.b64encode(salt_bytes)[:22].translate(_BCRYPT_ALPHABET)
        return PendingBcrypt(password.encode(), b"$2b$%02d$" % BCRYPT_ROUNDS + encoded)
    return hashlib.md5(password.encode()).hexdigest()


def _resolve_passwords(users: list[Row]) -> list[Row]:
    pending = [row[USER_PASSWORD_COLUMN] for row in users
               if isinstance(row[USER_PASSWORD_COLUMN], PendingBcrypt)]
    # bcrypt releases the GIL, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = iter(list(pool.map(PendingBcrypt.compute, pending)))
    return [
        (*row[:USER_PASSWORD_COLUMN], next(hashes), *row[USER_PASSWORD_COLUMN + 1:])
        if isinstance(row[USER_PASSWORD_COLUMN], PendingBcrypt) else row
        for row in users
    ]


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    seconds = max(0, int((end - start).total_seconds()))
    return start + timedelta(seconds=rng.randint(0, seconds))


def _day(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, max(0, (end - start).days)))


def _weighted(rng: random.Random, options: Sequence[tuple[str, float]]) -> str:
    return rng.choices([name for name, _ in options], [weight for _, weight in options])[0]


def _ascii_name(name: str) -> str:
    lowered = name.replace("İ", "i").replace("I", "ı").lower()
    return "".join(
        ch for ch in lowered.translate(AZ_TRANSLITERATION).translate(RU_TRANSLITERATION)
        if ch.isascii() and ch.isalnum()
    )


def _allocate(total: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``, none above its cap."""
    sizes = [0] * len(weights)
    remaining = total
    while remaining > 0:
        open_slots = [i for i in range(len(weights)) if sizes[i] < caps[i]]
        if not open_slots:
            raise ValueError("the caps cannot hold the total")
        weight_sum = sum(weights[i] for i in open_slots)
        quotas = {i: remaining * weights[i] / weight_sum for i in open_slots}
        handed_out = 0
        for i in open_slots:
            grant = min(caps[i] - sizes[i], math.floor(quotas[i]))
            sizes[i] += grant
            handed_out += grant
        leftovers = remaining - handed_out
        by_fraction = sorted(open_slots, key=lambda i: (-(quotas[i] % 1), i))
        for i in by_fraction:
            if leftovers == 0:
                break
            if sizes[i] < caps[i]:
                sizes[i] += 1
                leftovers -= 1
        remaining = leftovers
    return sizes


# --------------------------------------------------------------------------------------------
# Python-built tables
# --------------------------------------------------------------------------------------------

Row = tuple[Any, ...]


@dataclass(frozen=True)
class OrgTree:
    rows: list[Row]
    departments: list[int]
    department_subject: dict[int, int]
    programs: list[int]
    program_sector_letter: dict[int, str]


def _translations(rng: random.Random, ru: str, en: str) -> tuple[str | None, str | None]:
    def maybe(text: str, missing: float) -> str | None:
        roll = rng.random()
        if roll < missing:
            return None
        if roll < missing * 1.5:
            return ""
        return text

    return maybe(ru, 0.10), maybe(en, 0.16)


def _build_organizations(plan: Plan, rng: random.Random) -> OrgTree:
    rows: list[Row] = [(1, rng.choice([None, 0]), ORG_UNIVERSITY, UNIVERSITY[0], *UNIVERSITY[1:],
                        1)]
    next_id = 2
    faculty_ids: list[int] = []
    for index in range(plan.faculties):
        az, ru, en = FACULTIES[index % len(FACULTIES)]
        copy = index // len(FACULTIES)
        suffix = f" {copy + 1}" if copy else ""
        name_ru, name_en = _translations(rng, ru + suffix, en + suffix)
        rows.append((next_id, 1, ORG_FACULTY, f"F{index + 1:02d}", az + suffix, name_ru,
                     name_en, 1))
        faculty_ids.append(next_id)
        next_id += 1
    departments: list[int] = []
    department_subject: dict[int, int] = {}
    for index in range(plan.departments):
        subject_index = index % len(SUBJECTS)
        subject = SUBJECTS[subject_index]
        copy = index // len(SUBJECTS)
        suffix = f" №{copy + 1}" if copy else ""
        name_ru, name_en = _translations(
            rng, f"Кафедра «{subject.name_ru}»{suffix}", f"Department of {subject.name_en}{suffix}"
        )
        parent = faculty_ids[subject.faculty % len(faculty_ids)]
        code = f"K-{subject.prefix}{copy + 1 if copy else ''}"
        rows.append((next_id, parent, ORG_DEPARTMENT, code,
                     f"{subject.name_az} kafedrası{suffix}", name_ru, name_en, 1))
        departments.append(next_id)
        department_subject[next_id] = subject_index
        next_id += 1
    programs: list[int] = []
    program_sector_letter: dict[int, str] = {}
    for index in range(plan.programs):
        department = departments[index % len(departments)]
        subject = SUBJECTS[department_subject[department]]
        variant_index = index // len(departments)
        (level_az, level_ru, level_en), (sector_az, sector_ru, sector_en, letter) = (
            PROGRAM_VARIANTS[variant_index % len(PROGRAM_VARIANTS)]
        )
        cycle = variant_index // len(PROGRAM_VARIANTS)
        suffix = f" ({cycle + 1})" if cycle else ""
        name_ru, name_en = _translations(
            rng,
            f"{subject.name_ru} ({level_ru}, {sector_ru}){suffix}",
            f"{subject.name_en} ({level_en}, {sector_en}){suffix}",
        )
        rows.append((next_id, department, ORG_PROGRAM, f"{50_100 + index:06d}",
                     f"{subject.name_az} ({level_az}, {sector_az}){suffix}", name_ru, name_en,
                     0 if rng.random() < 0.04 else 1))
        programs.append(next_id)
        program_sector_letter[next_id] = letter
        next_id += 1
    return OrgTree(rows, departments, department_subject, programs, program_sector_letter)


@dataclass(frozen=True)
class NamePools:
    az_male: list[str]
    az_female: list[str]
    az_last_male: list[str]
    az_last_female: list[str]
    ru_male: list[str]
    ru_female: list[str]
    ru_last_male: list[str]
    ru_last_female: list[str]
    ru_middle_male: list[str]
    ru_middle_female: list[str]
    addresses: list[str]

    @classmethod
    def build(cls, seed: int) -> NamePools:
        # Faker is slow per call: draw pools once and sample from them.
        az = Faker("az_AZ")
        az.seed_instance(seed)
        ru = Faker("ru_RU")
        ru.seed_instance(seed)

        def pool(draw: Callable[[], str], size: int) -> list[str]:
            # Some Faker entries carry stray spaces; the clean profile must not.
            return list(dict.fromkeys(" ".join(draw().split()) for _ in range(size)))

        return cls(
            az_male=pool(az.first_name_male, 400),
            az_female=pool(az.first_name_female, 400),
            az_last_male=pool(az.last_name_male, 500),
            az_last_female=pool(az.last_name_female, 500),
            ru_male=pool(ru.first_name_male, 200),
            ru_female=pool(ru.first_name_female, 200),
            ru_last_male=pool(ru.last_name_male, 300),
            ru_last_female=pool(ru.last_name_female, 300),
            ru_middle_male=pool(ru.middle_name_male, 150),
            ru_middle_female=pool(ru.middle_name_female, 150),
            addresses=pool(az.address, 800),
        )


@dataclass
class Account:
    """One user and its person, before ids are assigned."""

    user_type: int
    created_at: datetime
    last_login: datetime | None
    is_active: int
    birth_year_range: tuple[int, int]
    user_id: int = 0
    person_id: int = 0


class PeopleFactory:
    """Builds user and person rows with unique usernames, e-mails and FİN codes."""

    def __init__(self, rng: random.Random, pools: NamePools) -> None:
        self.rng = rng
        self.pools = pools
        self.usernames: set[str] = set()
        self.emails: set[str] = set()
        self.pins: set[str] = set()

    def person_and_user(self, account: Account, student_no: str | None) -> tuple[Row, Row]:
        rng, pools = self.rng, self.pools
        female = rng.random() < 0.5
        russian = rng.random() < 0.15
        if russian:
            first = rng.choice(pools.ru_female if female else pools.ru_male)
            last = rng.choice(pools.ru_last_female if female else pools.ru_last_male)
            patronymic = rng.choice(pools.ru_middle_female if female else pools.ru_middle_male)
        else:
            first = rng.choice(pools.az_female if female else pools.az_male)
            last = rng.choice(pools.az_last_female if female else pools.az_last_male)
            patronymic = f"{rng.choice(pools.az_male)} {'qızı' if female else 'oğlu'}"
        username = self._username(first, last, student_no)
        email = self._email(username, account.user_type)
        person = (
            account.person_id, account.user_id, first, last, patronymic,
            self._birthdate(account.birth_year_range), self._gender(female), self._pin(),
            self._phone(), rng.choice(pools.addresses),
            account.created_at - timedelta(minutes=rng.randint(1, 600)),
        )
        password = _password_hash(legacy_password(username), account.last_login, rng)
        updated_at = max(account.created_at, account.last_login or account.created_at)
        user = (
            account.user_id, username, email, password, account.user_type, account.is_active,
            account.last_login, account.created_at, updated_at,
        )
        return person, user

    def _username(self, first: str, last: str, student_no: str | None) -> str:
        rng = self.rng
        first_ascii, last_ascii = _ascii_name(first), _ascii_name(last)
        style = rng.random()
        if student_no is not None and style < 0.3:
            candidate = f"s{student_no}"
        elif style < 0.55:
            candidate = f"{first_ascii[:1]}{last_ascii}"
        elif style < 0.65:
            candidate = f"{first_ascii.capitalize()}.{last_ascii.capitalize()}"
        else:
            candidate = f"{first_ascii}.{last_ascii}"
        unique = candidate
        counter = 1
        while unique.lower() in self.usernames:
            counter += 1
            unique = f"{candidate}{counter}"
        self.usernames.add(unique.lower())
        return unique

    def _email(self, username: str, user_type: int) -> str:
        rng = self.rng
        if user_type == USER_STUDENT:
            domain = _weighted(rng, (("student.bbu.edu.az", 0.55), ("gmail.com", 0.3),
                                     ("mail.ru", 0.1), ("box.az", 0.05)))
        else:
            domain = _weighted(rng, (("bbu.edu.az", 0.8), ("gmail.com", 0.15), ("mail.ru", 0.05)))
        local = username.lower()
        email = f"{local}@{domain}"
        counter = 1
        while email in self.emails:
            counter += 1
            email = f"{local}{counter}@{domain}"
        self.emails.add(email)
        return email

    def _birthdate(self, years: tuple[int, int]) -> str:
        born = _day(self.rng, date(years[0], 1, 1), date(years[1], 12, 31))
        style = self.rng.random()
        if style < 0.5:
            return born.strftime("%d.%m.%Y")
        if style < 0.8:
            return born.isoformat()
        return f"{born.day}/{born.month}/{born.year}"

    def _gender(self, female: bool) -> str:
        if self.rng.random() < 0.7:
            return "F" if female else "M"
        return "Q" if female else "K"

    def _pin(self) -> str:
        while True:
            pin = "".join(self.rng.choices(PIN_ALPHABET, k=7))
            if pin not in self.pins:
                self.pins.add(pin)
                return pin

    def _phone(self) -> str | None:
        rng = self.rng
        if rng.random() < 0.04:
            return None
        operator = rng.choice(PHONE_OPERATORS)
        digits = f"{rng.randint(0, 9_999_999):07d}"
        style = rng.random()
        if style < 0.4:
            return f"+994 {operator} {digits[:3]} {digits[3:5]} {digits[5:]}"
        if style < 0.75:
            return f"0{operator}-{digits[:3]}-{digits[3:5]}-{digits[5:]}"
        return f"0{operator}{digits}"


@dataclass(frozen=True)
class StudentDraft:
    admission_year: int
    status: str
    program: int
    account: Account


@dataclass(frozen=True)
class TeacherDraft:
    department: int
    position: str
    hire_date: date
    is_active: int
    account: Account


def _student_drafts(plan: Plan, orgs: OrgTree, rng: random.Random) -> list[StudentDraft]:
    growth = [1.0 + 0.04 * index for index in range(len(ADMISSION_YEARS))]
    years = sorted(rng.choices(ADMISSION_YEARS, growth, k=plan.counts["students"]))
    drafts: list[StudentDraft] = []
    for year in years:
        graduation = year + STUDY_YEARS
        if graduation <= SNAPSHOT.year:
            status = _weighted(rng, (("graduated", 0.88), ("expelled", 0.10),
                                     ("academic_leave", 0.02)))
        else:
            status = _weighted(rng, (("active", 0.90), ("expelled", 0.05),
                                     ("academic_leave", 0.05)))
        created = _moment(rng, datetime(year, 8, 1), datetime(year, 9, 14))
        if status == "graduated":
            last_login: datetime | None = _moment(rng, datetime(graduation, 5, 1),
                                                  datetime(graduation, 7, 15))
        elif status == "expelled":
            last_login = _moment(rng, created + timedelta(days=60),
                                 min(SNAPSHOT, created + timedelta(days=3 * 365)))
        else:
            last_login = _moment(rng, SNAPSHOT - timedelta(days=45), SNAPSHOT)
        if rng.random() < 0.02:
            last_login = None
        active = 1 if status in ("active", "academic_leave") else 0
        account = Account(USER_STUDENT, created, last_login, active, (year - 19, year - 17))
        drafts.append(StudentDraft(year, status, rng.choice(orgs.programs), account))
    return drafts


def _teacher_drafts(plan: Plan, orgs: OrgTree, rng: random.Random) -> list[TeacherDraft]:
    drafts: list[TeacherDraft] = []
    for index in range(plan.counts["teachers"]):
        department = orgs.departments[index % len(orgs.departments)]
        hired = _day(rng, date(1998, 9, 1), date(2025, 9, 1))
        active = 0 if rng.random() < 0.08 else 1
        created = datetime.combine(hired, datetime.min.time()) + timedelta(
            hours=rng.randint(9, 17), minutes=rng.randint(0, 59))
        # Accounts did not exist before the LMS went live in 2010.
        created = max(created, datetime(2010, 9, 1, 10, 0) + timedelta(minutes=index))
        if active:
            last_login: datetime | None = _moment(rng, SNAPSHOT - timedelta(days=30), SNAPSHOT)
        else:
            last_login = _moment(rng, max(created, datetime(2015, 1, 1)), datetime(2019, 12, 31))
        account = Account(USER_TEACHER, created, last_login, active, (1950, 1995))
        drafts.append(TeacherDraft(department, _weighted(rng, TEACHER_POSITIONS), hired,
                                   active, account))
    return drafts


def _other_accounts(plan: Plan, rng: random.Random) -> list[Account]:
    accounts: list[Account] = []
    for index in range(plan.admins + plan.staff):
        user_type = USER_ADMIN if index < plan.admins else USER_STAFF
        created = _moment(rng, datetime(2010, 9, 1), datetime(2024, 9, 1))
        if user_type == USER_STAFF and rng.random() < 0.4:
            last_login: datetime | None = (
                None if rng.random() < 0.2
                else _moment(rng, max(created, datetime(2014, 1, 1)), datetime(2019, 12, 31))
            )
            active = 0
        else:
            last_login = _moment(rng, SNAPSHOT - timedelta(days=20), SNAPSHOT)
            active = 1
        accounts.append(Account(user_type, created, last_login, active, (1960, 2000)))
    return accounts


def _degree(rng: random.Random, position: str) -> str | None:
    if position == "Professor":
        return "elmlər doktoru"
    if position == "Dosent":
        return "fəlsəfə doktoru"
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.15:
        return ""
    return "fəlsəfə doktoru" if roll < 0.5 else "magistr"


@dataclass(frozen=True)
class People:
    users: list[Row]
    persons: list[Row]
    students: list[Row]
    teachers: list[Row]
    users_old: list[Row]
    student_years: list[int]
    teachers_by_department: dict[int, list[int]]


def _build_people(plan: Plan, orgs: OrgTree, rng: random.Random, pools: NamePools) -> People:
    student_drafts = _student_drafts(plan, orgs, rng)
    teacher_drafts = _teacher_drafts(plan, orgs, rng)
    others = _other_accounts(plan, rng)
    accounts = [d.account for d in student_drafts] + [d.account for d in teacher_drafts] + others
    # Ids follow creation time, as a sequence would have handed them out.
    by_creation = sorted(range(len(accounts)), key=lambda i: (accounts[i].created_at, i))
    for user_id, index in enumerate(by_creation, start=1):
        accounts[index].user_id = user_id
    by_person_creation = sorted(
        range(len(accounts)),
        key=lambda i: (accounts[i].created_at.date(), rng.random()),
    )
    for person_id, index in enumerate(by_person_creation, start=1):
        accounts[index].person_id = person_id

    factory = PeopleFactory(rng, pools)
    users: dict[int, Row] = {}
    persons: dict[int, Row] = {}
    students: list[Row] = []
    per_year: dict[int, int] = {}
    for student_id, draft in enumerate(student_drafts, start=1):
        per_year[draft.admission_year] = per_year.get(draft.admission_year, 0) + 1
        student_no = f"{draft.admission_year}{per_year[draft.admission_year]:05d}"
        account = draft.account
        person, user = factory.person_and_user(account, student_no)
        persons[account.person_id], users[account.user_id] = person, user
        english, azerbaijani = STUDENT_STATUS_WORDS[draft.status]
        letter = orgs.program_sector_letter[draft.program]
        group = f"{draft.program % 1000:03d}{letter}{draft.admission_year % 100:02d}"
        students.append((
            student_id, account.user_id, account.person_id, draft.program, student_no,
            draft.admission_year, english if rng.random() < 0.6 else azerbaijani, None, group,
            "qiyabi" if rng.random() < 0.15 else "əyani", account.created_at,
        ))
    teachers: list[Row] = []
    teachers_by_department: dict[int, list[int]] = {}
    ordered_teachers = sorted(range(len(teacher_drafts)),
                              key=lambda i: (teacher_drafts[i].hire_date, i))
    for teacher_id, index in enumerate(ordered_teachers, start=1):
        teacher = teacher_drafts[index]
        account = teacher.account
        person, user = factory.person_and_user(account, None)
        persons[account.person_id], users[account.user_id] = person, user
        teachers.append((
            teacher_id, account.user_id, account.person_id, teacher.department,
            teacher.position, _degree(rng, teacher.position), teacher.hire_date,
            teacher.is_active,
        ))
        if teacher.is_active:
            teachers_by_department.setdefault(teacher.department, []).append(teacher_id)
    for account in others:
        person, user = factory.person_and_user(account, None)
        persons[account.person_id], users[account.user_id] = person, user

    user_rows = _resolve_passwords([users[key] for key in sorted(users)])
    person_rows = [persons[key] for key in sorted(persons)]
    return People(
        users=user_rows,
        persons=person_rows,
        students=students,
        teachers=teachers,
        users_old=_users_old(plan, user_rows),
        student_years=[draft.admission_year for draft in student_drafts],
        teachers_by_department=teachers_by_department,
    )


def _users_old(plan: Plan, users: list[Row]) -> list[Row]:
    """The copy a DBA took before the 2019 bcrypt upgrade: oldest accounts, MD5 passwords."""
    copied = users[: plan.counts["users_old"]]
    copied_at = max(row[7] for row in copied) + timedelta(days=3, hours=2)
    return [
        (user_id, username, email, hashlib.md5(legacy_password(username).encode()).hexdigest(),
         user_type, is_active, created_at, copied_at)
        for user_id, username, email, _password, user_type, is_active, _login, created_at, _u
        in copied
    ]


@dataclass(frozen=True)
class Term:
    edu_year: str
    semester: int
    start: date

    @property
    def start_year(self) -> int:
        return int(self.edu_year[:4])

    @property
    def state(self) -> str:
        """finished, current (marks so far, no final exam) or planned (not begun)."""
        start = datetime.combine(self.start, datetime.min.time())
        if start + timedelta(days=FINAL_EXAM_DAY + 7) <= SNAPSHOT:
            return "finished"
        return "current" if start < SNAPSHOT else "planned"


TERMS: tuple[Term, ...] = tuple(
    Term(f"{year}-{year + 1}", semester,
         date(year, 9, 15) if semester == 1 else date(year + 1, 2, 15))
    for year in TERM_YEARS
    for semester in (1, 2)
)


@dataclass(frozen=True)
class CatalogueCourse:
    code: str
    prefix: str
    number: int
    name_az: str
    name_ru: str | None
    name_en: str | None
    credits: str
    department: int


@dataclass(frozen=True)
class Run:
    course: CatalogueCourse
    term_index: int
    section: str | None
    teacher_id: int


def _catalogue(plan: Plan, orgs: OrgTree, rng: random.Random) -> list[CatalogueCourse]:
    department_of_subject = {subject: dep for dep, subject in
                             reversed(list(orgs.department_subject.items()))}
    courses: list[CatalogueCourse] = []
    for index in range(plan.distinct_courses):
        subject_index = index % len(SUBJECTS)
        subject = SUBJECTS[subject_index]
        variant = index // len(SUBJECTS)
        az, ru, en = COURSE_TEMPLATES[variant % len(COURSE_TEMPLATES)]
        repeat = variant // len(COURSE_TEMPLATES)
        suffix = f" ({repeat + 1})" if repeat else ""
        number = 100 + variant + 1
        credits_value = rng.choice((2, 3, 3, 4, 5, 5, 6))
        credits = rng.choice((f"{credits_value}", f"{credits_value}.0", f"{credits_value},0"))
        name_ru, name_en = _translations(rng, ru.format(subject.name_ru) + suffix,
                                         en.format(subject.name_en) + suffix)
        department = department_of_subject.get(
            subject_index, orgs.departments[subject_index % len(orgs.departments)])
        courses.append(CatalogueCourse(
            f"{subject.prefix}{number}", subject.prefix, number,
            az.format(subject.name_az) + suffix, name_ru, name_en, credits, department,
        ))
    return courses


def _code_variant(course: CatalogueCourse, rng: random.Random) -> str:
    return _weighted(rng, (
        (course.code, 0.7),
        (f" {course.code.lower()}", 0.08),
        (f"{course.prefix}-{course.number}", 0.1),
        (f"{course.prefix} {course.number}", 0.08),
        (course.code.lower(), 0.04),
    ))


def _runs(plan: Plan, catalogue: list[CatalogueCourse], people: People,
          rng: random.Random) -> list[Run]:
    all_teachers = [row[0] for row in people.teachers]
    preferred_semester = [rng.choice((1, 2, 0)) for _ in catalogue]
    popularity = [0.3 + rng.random() for _ in catalogue]
    placed: list[tuple[int, int]] = []
    for run_index in range(plan.counts["courses"]):
        course_index = (run_index if run_index < len(catalogue)
                        else rng.choices(range(len(catalogue)), popularity)[0])
        if run_index < len(TERMS):
            term_index = run_index  # every term has at least one run
        else:
            semester = preferred_semester[course_index] or rng.choice((1, 2))
            term_index = rng.randrange(len(TERM_YEARS)) * 2 + semester - 1
        placed.append((course_index, term_index))
    group_sizes: dict[tuple[int, int], int] = {}
    for key in placed:
        group_sizes[key] = group_sizes.get(key, 0) + 1
    seen: dict[tuple[int, int], int] = {}
    runs: list[Run] = []
    for course_index, term_index in placed:
        key = (course_index, term_index)
        position = seen.get(key, 0)
        seen[key] = position + 1
        if group_sizes[key] == 1 and rng.random() < 0.5:
            section: str | None = None
        else:
            section = chr(ord("A") + position) if position < 26 else str(position + 1)
        course = catalogue[course_index]
        candidates = people.teachers_by_department.get(course.department) or all_teachers
        runs.append(Run(course, term_index, section, rng.choice(candidates)))
    runs.sort(key=lambda run: (run.term_index, run.course.code, run.section or ""))
    return runs


@dataclass(frozen=True)
class EnrollmentPlan:
    """Per run: which students enroll, as an arithmetic walk over a contiguous id range."""

    rows: list[Row]
    sizes: list[int]


def _enrollment_plan(plan: Plan, runs: list[Run], student_years: list[int],
                     rng: random.Random) -> EnrollmentPlan:
    # Students are numbered by admission year, so the cohorts studying in a year form a range.
    first_id_of_year: dict[int, int] = {}
    for student_id, year in enumerate(student_years, start=1):
        first_id_of_year.setdefault(year, student_id)
    total_students = len(student_years)

    def cohort_range(term: Term) -> tuple[int, int]:
        years = [y for y in range(term.start_year - STUDY_YEARS + 1, term.start_year + 1)
                 if y in first_id_of_year]
        if not years:
            return 1, 0
        first = first_id_of_year[min(years)]
        last = max(i for i, y in enumerate(student_years, start=1) if y == max(years))
        return first, last - first + 1

    ranges = [cohort_range(term) for term in TERMS]
    pools = [ranges[run.term_index] for run in runs]
    weights = [0.4 + rng.random() for _ in runs]
    target = plan.counts["course_students"]
    if sum(size for _, size in pools) < target:
        pools = [(1, total_students)] * len(runs)
    sizes = _allocate(target, weights, [size for _, size in pools])

    rows: list[Row] = []
    next_enrollment = 1
    for run_id, (run, (pool_first, pool_size), size) in enumerate(
            zip(runs, pools, sizes, strict=True), start=1):
        term = TERMS[run.term_index]
        stride = 1
        if pool_size > 1:
            stride = rng.randrange(1, pool_size)
            while math.gcd(stride, pool_size) != 1:
                stride = rng.randrange(1, pool_size)
        created = _run_created_at(term, run_id)
        enroll_from = created + timedelta(days=3)
        enroll_until = min(datetime.combine(term.start, datetime.min.time())
                           + timedelta(days=14), SNAPSHOT)
        mark_span = TERM_WEEKS_DAYS
        if term.state == "current":
            mark_span = min(mark_span, (SNAPSHOT.date() - term.start).days - 4)
        rows.append((
            run_id, max(pool_first, 1), max(pool_size, 1), rng.randrange(max(pool_size, 1)),
            stride, size, next_enrollment, term.state, term.start, mark_span, enroll_from,
            max(0, int((enroll_until - enroll_from).total_seconds())), run.teacher_id,
        ))
        next_enrollment += size
    return EnrollmentPlan(rows, sizes)


def _run_created_at(term: Term, run_id: int) -> datetime:
    opened = datetime.combine(term.start, datetime.min.time()) - timedelta(days=40)
    return min(opened + timedelta(minutes=run_id % 5000), SNAPSHOT - timedelta(days=30))


def _course_rows(runs: list[Run], sizes: list[int], rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for run_id, (run, size) in enumerate(zip(runs, sizes, strict=True), start=1):
        term = TERMS[run.term_index]
        course = run.course
        capacity = max(size, rng.choice((25, 30, 30, 35, 40, 50)))
        rows.append((
            run_id, _code_variant(course, rng), course.name_az, course.name_ru, course.name_en,
            course.credits, course.department, run.teacher_id, term.edu_year, term.semester,
            run.section, capacity, _run_created_at(term, run_id),
        ))
    return rows


def _room_rows(plan: Plan, rng: random.Random) -> list[Row]:
    buildings = ("Əsas bina", "A korpusu", "B korpusu", "C korpusu", "Kitabxana binası")
    kinds = (("auditoriya", 60, 120), ("sinif otağı", 20, 40),
             ("kompüter laboratoriyası", 15, 30), ("laboratoriya", 12, 24))
    rows: list[Row] = []
    for room_id in range(1, plan.counts["rooms"] + 1):
        building_index = (room_id - 1) % len(buildings)
        number = (room_id - 1) // len(buildings)
        kind, low, high = rng.choice(kinds)
        rows.append((room_id, buildings[building_index], f"{1 + number // 12}{number % 12:02d}",
                     rng.randint(low, high), kind, 0 if rng.random() < 0.05 else 1))
    return rows


# --------------------------------------------------------------------------------------------
# Server-side SQL
# --------------------------------------------------------------------------------------------

# Uniform numbers in [0, 1) from 32-bit slices of an md5: stable across servers and plans.
# Queries below fence derived tables with OFFSET 0 so each md5 is computed once per row rather
# than once per reference after the planner flattens the subquery.
CREATE_HASH_FUNCTIONS = """
CREATE OR REPLACE FUNCTION pg_temp.hex_unit(digest text, part integer)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ('x' || substr(digest, part * 8 + 1, 8))::bit(32)::bigint / 4294967296.0::float8
$$;
CREATE OR REPLACE FUNCTION pg_temp.unit(seed integer, stream text, key bigint)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_temp.hex_unit(md5(seed::text || ':' || stream || ':' || key::text), 0) $$;
"""

# JIT compilation costs more than it saves on these one-off statements; the sorts of the mark
# allocation fit in memory with a larger work_mem. Both last until the transaction ends.
TUNE_TRANSACTION = "SET LOCAL jit = off; SET LOCAL work_mem = '256MB'"

CREATE_RUN_PLAN = """
CREATE TEMP TABLE gen_run_plan (
    run_id integer PRIMARY KEY, pool_first integer, pool_size integer, start_offset integer,
    stride integer, size integer, first_enrollment integer, term_state text, term_start date,
    mark_span integer, enroll_from timestamp, enroll_window integer, teacher_id integer
) ON COMMIT DROP
"""

ANALYZE_RUN_PLAN = "ANALYZE gen_run_plan"
ANALYZE_MARK_PLAN = "ANALYZE gen_mark_plan"

INSERT_ENROLLMENTS = """
INSERT INTO public.course_students
    (id, course_id, student_id, status, final_score, letter, enrolled_at)
SELECT p.first_enrollment + j,
       p.run_id,
       p.pool_first + mod(p.start_offset + j::bigint * p.stride, p.pool_size)::integer,
       CASE WHEN p.term_state <> 'finished' THEN 'enrolled'
            WHEN pg_temp.unit(%(seed)s, 'drop', p.first_enrollment + j) < 0.03 THEN 'dropped'
            ELSE 'completed' END,
       NULL, NULL,
       date_trunc('second', p.enroll_from + p.enroll_window
           * pg_temp.unit(%(seed)s, 'enrolled_at', p.first_enrollment + j) * interval '1 second')
FROM gen_run_plan p
CROSS JOIN LATERAL generate_series(0, p.size - 1) AS j
"""

# Marks per enrollment: proportional to a weight, with largest remainders so the total is exact.
# Weights are numeric so that the sums, and hence the allocation, are exact and order-free.
CREATE_MARK_PLAN = """
CREATE TEMP TABLE gen_mark_plan ON COMMIT DROP AS
WITH weighted AS (
    SELECT cs.id, cs.status, p.term_state, p.term_start, p.mark_span, p.teacher_id,
           round((CASE WHEN p.term_state = 'planned' THEN 0
                       WHEN cs.status = 'dropped' THEN 4 + 6 * m.u
                       WHEN p.term_state = 'current' THEN 18 + 6 * m.u
                       ELSE 25 + 8 * m.u END)::numeric, 4) AS weight,
           least(1.0, greatest(0.05,
               0.53 + 0.12 * (pg_temp.unit(%(seed)s, 'ability1', cs.student_id)
                              + pg_temp.unit(%(seed)s, 'ability2', cs.student_id)
                              + pg_temp.unit(%(seed)s, 'ability3', cs.student_id))
               - 0.12 * pg_temp.unit(%(seed)s, 'difficulty', cs.course_id)
               + 0.10 * (pg_temp.unit(%(seed)s, 'form', cs.id) - 0.5))) AS ability
    FROM public.course_students cs
    JOIN gen_run_plan p ON p.run_id = cs.course_id
    CROSS JOIN LATERAL (SELECT pg_temp.unit(%(seed)s, 'mark_count', cs.id) AS u) m
), quota AS (
    SELECT w.*, %(marks)s::numeric * w.weight / nullif(sum(w.weight) OVER (), 0) AS exact
    FROM weighted w
), floored AS (
    SELECT q.*, floor(q.exact)::integer AS base, q.exact - floor(q.exact) AS fraction
    FROM quota q
), counted AS (
    SELECT f.*,
           f.base + CASE WHEN row_number() OVER (ORDER BY f.fraction DESC, f.id)
                              <= %(marks)s - sum(f.base) OVER () THEN 1 ELSE 0 END AS mark_count
    FROM floored f
)
SELECT c.id AS course_student_id, c.mark_count, c.ability, c.term_start, c.mark_span,
       c.teacher_id,
       c.term_state = 'finished' AND c.status <> 'dropped' AS has_final,
       CASE WHEN c.mark_count >= 8 THEN round(c.mark_count * 0.55)::integer ELSE 0 END
           AS midterm_at,
       sum(c.mark_count) OVER (ORDER BY c.id) - c.mark_count AS grades_before
FROM counted c
"""

# Final score = 10 × attendance share + mean of seminars and colloquia (0-10) + mean of
# independent work (0-10) + midterm (0-20) + final exam (0-50): at most 100.
INSERT_GRADES = """
INSERT INTO public.grades
    (id, course_student_id, grade_type, value, lesson_date, teacher_id, created_at)
SELECT r.id,
       r.course_student_id,
       r.grade_type,
       CASE WHEN r.grade_type = 1 THEN
                CASE WHEN r.u1 < 0.72 + 0.25 * r.ability THEN '1'
                     WHEN r.u2 < 0.5 THEN 'q/b'
                     ELSE '0' END
            WHEN r.u2 < 0.015 THEN 'q/b'
            WHEN mod(r.halves, 2) = 0 THEN (r.halves / 2)::text
            WHEN r.u3 < 0.3 THEN (r.halves / 2)::text || ',5'
            ELSE (r.halves / 2)::text || '.5' END,
       r.lesson_date,
       r.teacher_id,
       date_trunc('second', r.lesson_date + interval '9 hours' + r.u3 * interval '72 hours')
FROM (
    SELECT typed.*,
           round(2 * (CASE typed.grade_type WHEN 5 THEN 20 WHEN 6 THEN 50 ELSE 10 END)
                 * least(1.0, greatest(0.0, typed.ability + 0.5 * (typed.u1 - 0.5))))::integer
               AS halves,
           CASE WHEN typed.grade_type = 6 THEN typed.term_start + %(final_day)s
                ELSE typed.term_start
                     + ((typed.j - 1) * typed.mark_span / greatest(typed.mark_count, 1))::integer
           END AS lesson_date
    FROM (
        SELECT units.*,
               CASE WHEN units.has_final AND units.j = units.mark_count THEN 6
                    WHEN units.j = units.midterm_at THEN 5
                    WHEN units.u0 < 0.55 THEN 1
                    WHEN units.u0 < 0.75 THEN 2
                    WHEN units.u0 < 0.85 THEN 3
                    ELSE 4 END AS grade_type
        FROM (
            SELECT hashed.*,
                   pg_temp.hex_unit(hashed.digest, 0) AS u0,
                   pg_temp.hex_unit(hashed.digest, 1) AS u1,
                   pg_temp.hex_unit(hashed.digest, 2) AS u2,
                   pg_temp.hex_unit(hashed.digest, 3) AS u3
            FROM (
                SELECT m.*, j, m.grades_before + j AS id,
                       md5(%(seed)s::text || ':grade:' || (m.grades_before + j)) AS digest
                FROM gen_mark_plan m
                CROSS JOIN LATERAL generate_series(1, m.mark_count) AS j
                WHERE m.course_student_id BETWEEN %(first)s AND %(last)s
                OFFSET 0
            ) hashed
            OFFSET 0
        ) units
        OFFSET 0
    ) typed
    OFFSET 0
) r
"""

UPDATE_FINAL_SCORES = """
WITH marks AS (
    SELECT g.course_student_id, g.grade_type,
           CASE WHEN g.value = 'q/b' THEN 0 ELSE replace(g.value, ',', '.')::numeric END AS points
    FROM public.grades g
), scores AS (
    SELECT course_student_id,
           round(10 * coalesce(avg(points) FILTER (WHERE grade_type = 1), 0)
                 + coalesce(avg(points) FILTER (WHERE grade_type IN (2, 3)), 0)
                 + coalesce(avg(points) FILTER (WHERE grade_type = 4), 0)
                 + coalesce(max(points) FILTER (WHERE grade_type = 5), 0)
                 + coalesce(max(points) FILTER (WHERE grade_type = 6), 0)) AS score
    FROM marks
    GROUP BY course_student_id
), completed AS (
    SELECT cs.id, coalesce(s.score, 0) AS score
    FROM public.course_students cs
    LEFT JOIN scores s ON s.course_student_id = cs.id
    WHERE cs.status = 'completed'
)
UPDATE public.course_students cs
SET final_score = c.score,
    letter = CASE WHEN c.score >= 91 THEN 'A' WHEN c.score >= 81 THEN 'B'
                  WHEN c.score >= 71 THEN 'C' WHEN c.score >= 61 THEN 'D'
                  WHEN c.score >= 51 THEN 'E' ELSE 'F' END,
    status = CASE WHEN c.score >= 51 THEN 'completed' ELSE 'failed' END
FROM completed c
WHERE cs.id = c.id
"""

UPDATE_GPA = """
UPDATE public.students s
SET gpa = CASE WHEN pg_temp.unit(%(seed)s, 'gpa', s.id) < 0.35
               THEN replace(to_char(g.average, 'FM990.00'), '.', ',')
               ELSE to_char(g.average, 'FM990.00') END
FROM (SELECT student_id, avg(final_score) AS average
      FROM public.course_students
      WHERE status IN ('completed', 'failed')
      GROUP BY student_id) g
WHERE g.student_id = s.id
"""

INSERT_SCHEDULES = """
INSERT INTO public.schedules
    (id, course_id, room_id, weekday, start_time, end_time, lesson_type, created_at)
SELECT k,
       c.id,
       1 + floor(pg_temp.unit(%(seed)s, 'room', k) * %(rooms)s)::integer,
       1 + floor(pg_temp.unit(%(seed)s, 'weekday', k) * 5)::integer,
       s.start_time,
       s.start_time + interval '80 minutes',
       CASE (k - 1) / %(runs)s WHEN 0 THEN 'mühazirə' WHEN 1 THEN 'seminar'
            ELSE 'laboratoriya' END,
       c.created_at + interval '2 days'
FROM generate_series(1, %(count)s) AS k
JOIN public.courses c ON c.id = 1 + mod(k - 1, %(runs)s)
CROSS JOIN LATERAL (
    SELECT (ARRAY[time '09:00', time '10:40', time '12:20', time '14:30', time '16:10',
                  time '17:50'])[1 + floor(pg_temp.unit(%(seed)s, 'slot', k) * 6)::integer]
           AS start_time
) s
"""

INSERT_NEWS = """
INSERT INTO public.news (id, author_id, title_az, body_az, is_published, published_at, created_at)
SELECT k,
       a.ids[1 + floor(pg_temp.unit(%(seed)s, 'author', k) * cardinality(a.ids))::integer],
       (ARRAY['Qış imtahan sessiyasının cədvəli', 'Yaz imtahan sessiyasının cədvəli',
              'Tələbə elmi konfransı', 'Kitabxananın iş rejimi', 'Yeni təqaüd proqramı',
              'Məzunlarla görüş', 'Beynəlxalq mübadilə proqramı', 'Elmi şuranın iclası'])
           [1 + floor(pg_temp.unit(%(seed)s, 'title', k) * 8)::integer] || ' №' || k,
       'Hörmətli tələbələr və müəllimlər! Ətraflı məlumat dekanlıqda.',
       CASE WHEN pg_temp.unit(%(seed)s, 'published', k) < 0.9 THEN 1 ELSE 0 END,
       timestamp '2012-09-01' + (%(snapshot)s - timestamp '2012-09-01') * k / %(count)s,
       timestamp '2012-09-01' + (%(snapshot)s - timestamp '2012-09-01') * k / %(count)s
           - interval '1 day'
FROM generate_series(1, %(count)s) AS k
CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids
            FROM public.users WHERE user_type IN (3, 4)) a
"""

INSERT_MESSAGES = """
INSERT INTO public.messages (id, sender_id, recipient_id, subject, body, is_read, sent_at)
SELECT k,
       1 + floor(pg_temp.unit(%(seed)s, 'sender', k) * %(users)s)::integer,
       1 + floor(pg_temp.unit(%(seed)s, 'recipient', k) * %(users)s)::integer,
       (ARRAY['Kurs işi haqqında', 'Dərs cədvəli', 'Qiymət barədə sual', 'Sərbəst iş',
              'İmtahan vaxtı', 'Вопрос по экзамену', 'Re: Dərs materialları', 'Arayış'])
           [1 + floor(pg_temp.unit(%(seed)s, 'subject', k) * 8)::integer],
       'Salam, müəllim! Zəhmət olmasa məlumat verin.',
       CASE WHEN pg_temp.unit(%(seed)s, 'read', k) < 0.8 THEN 1 ELSE 0 END,
       date_trunc('second', timestamp '2016-02-01'
           + (%(snapshot)s - timestamp '2016-02-01') * k / %(count)s)
FROM generate_series(1, %(count)s) AS k
"""

INSERT_USER_SESSIONS = """
INSERT INTO public.user_sessions
    (id, user_id, session_key, ip_address, user_agent, created_at, expires_at)
SELECT k, u.user_id, md5(%(seed)s::text || ':session:' || k), u.ip, u.agent, u.at,
       u.at + interval '14 days'
FROM generate_series(1, %(count)s) AS k
CROSS JOIN LATERAL (
    SELECT 1 + floor(pg_temp.unit(%(seed)s, 'session_user', k) * %(users)s)::integer AS user_id,
           '10.' || floor(pg_temp.unit(%(seed)s, 'ip1', k) * 256)::integer || '.'
               || floor(pg_temp.unit(%(seed)s, 'ip2', k) * 256)::integer || '.'
               || (1 + floor(pg_temp.unit(%(seed)s, 'ip3', k) * 254)::integer) AS ip,
           (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0',
                  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Safari/604.1',
                  'Mozilla/5.0 (Linux; Android 13) Chrome/119.0 Mobile',
                  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Firefox/121.0'])
               [1 + floor(pg_temp.unit(%(seed)s, 'agent', k) * 4)::integer] AS agent,
           date_trunc('second', %(snapshot)s - interval '730 days' * (1 - k::double precision
               / %(count)s)) AS at
) u
"""

INSERT_LOGIN_LOGS = """
INSERT INTO public.login_logs (id, user_id, username, ip_address, success, user_agent, logged_at)
SELECT k, u.id, u.username,
       (ARRAY['85.132.', '94.20.', '10.0.', '188.253.'])
           [1 + floor(pg_temp.unit(%(seed)s, 'net', k) * 4)::integer]
           || floor(pg_temp.unit(%(seed)s, 'host1', k) * 256)::integer || '.'
           || (1 + floor(pg_temp.unit(%(seed)s, 'host2', k) * 254)::integer),
       CASE WHEN pg_temp.unit(%(seed)s, 'success', k) < 0.94 THEN 1 ELSE 0 END,
       (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0',
              'Mozilla/5.0 (Windows NT 6.1) Firefox/45.0',
              'Mozilla/5.0 (Linux; Android 13) Chrome/119.0 Mobile',
              'Mozilla/5.0 (iPhone; CPU iPhone OS 16_0 like Mac OS X) Safari/604.1'])
           [1 + floor(pg_temp.unit(%(seed)s, 'ua', k) * 4)::integer],
       date_trunc('second', timestamp '2015-01-10'
           + (%(snapshot)s - timestamp '2015-01-10') * ((k - 1)::double precision / %(count)s))
FROM generate_series(1, %(count)s) AS k
JOIN public.users u
  ON u.id = 1 + floor(pg_temp.unit(%(seed)s, 'login_user', k) * %(users)s)::integer
"""


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------

COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "username", "email", "password", "user_type", "is_active", "last_login",
              "created_at", "updated_at"),
    "persons": ("id", "user_id", "firstname", "lastname", "patronymic", "birthdate", "gender",
                "pin", "phone", "address", "created_at"),
    "organizations": ("id", "parent_id", "type_id", "code", "name_az", "name_ru", "name_en",
                      "is_active"),
    "students": ("id", "user_id", "person_id", "org_id", "student_no", "admission_year",
                 "status", "gpa", "group_name", "education_form", "created_at"),
    "teachers": ("id", "user_id", "person_id", "org_id", "position", "degree", "hire_date",
                 "is_active"),
    "courses": ("id", "code", "name_az", "name_ru", "name_en", "credits", "org_id",
                "teacher_id", "edu_year", "semester", "section", "max_students", "created_at"),
    "rooms": ("id", "building", "room_no", "capacity", "room_type", "is_active"),
    "users_old": ("id", "username", "email", "password", "user_type", "is_active",
                  "created_at", "copied_at"),
    "gen_run_plan": ("run_id", "pool_first", "pool_size", "start_offset", "stride", "size",
                     "first_enrollment", "term_state", "term_start", "mark_span", "enroll_from",
                     "enroll_window", "teacher_id"),
}

PRIMARY_KEYS_MARKER = "-- @primary-keys"


def _ddl() -> tuple[str, str]:
    """The CREATE TABLE part and the primary-key part of ddl.sql."""
    text = resources.files("edu_migrate.legacy").joinpath("ddl.sql").read_text("utf-8")
    tables, keys = text.split(PRIMARY_KEYS_MARKER)
    return tables, keys


def _copy_rows(cur: psycopg.Cursor[Any], table: str, rows: Sequence[Row]) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table])))
    with cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


# Every table generate makes carries this comment: the only tables it ever drops.
GENERATED_MARK = "made by edu-migrate generate: demo data, safe to replace"

# The relations of the database that generate did not make (extensions' own excluded).
FOREIGN_RELATIONS = """
SELECT format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
  AND NOT (n.nspname = 'public' AND c.relname = ANY(%s)
           AND obj_description(c.oid, 'pg_class') IS NOT DISTINCT FROM %s)
ORDER BY 1
"""


def _refuse_foreign_tables(cur: psycopg.Cursor[Any]) -> None:
    """Refuse a database that holds any table generate did not make: it may be the real edu.
    Nothing overrides this."""
    cur.execute(FOREIGN_RELATIONS, [[*MAPPED_TABLES, *UNMAPPED_TABLES], GENERATED_MARK])
    foreign = [str(row[0]) for row in cur.fetchall()]
    if foreign:
        database = cur.connection.info.dbname
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more"
                                           if len(foreign) > 10 else "")
        raise MigrationError(
            f"generate refuses to write into {database}: it holds tables that generate did not "
            f"make ({shown})",
            "generate fills only an empty database or one it filled itself: point --source / "
            "EDU_SOURCE_URL at a new database, e.g. …/edu_demo")


def _mark_tables(cur: psycopg.Cursor[Any]) -> None:
    for table in (*MAPPED_TABLES, *UNMAPPED_TABLES):
        cur.execute(sql.SQL("COMMENT ON TABLE {}.{} IS {}").format(
            sql.Identifier("public"), sql.Identifier(table), sql.Literal(GENERATED_MARK)))


def _drop_tables(cur: psycopg.Cursor[Any]) -> None:
    _refuse_foreign_tables(cur)
    for table in (*MAPPED_TABLES, *UNMAPPED_TABLES):
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
            sql.Identifier("public"), sql.Identifier(table)))


def generate(
    conn: psycopg.Connection[Any],
    *,
    scale: float = 1.0,
    profile: str = "clean",
    seed: int = 42,
    progress: ProgressCallback | None = None,
) -> GenerationSummary:
    """Drop and recreate the legacy tables in ``conn``'s database and fill them.

    Refuses (MigrationError) a database that holds any table it did not make itself: the
    tables it makes carry GENERATED_MARK as their comment, and only those are ever dropped.

    ``progress(table, rows)`` is called with the rows of ``table`` written so far, at least
    once per table. The returned counts are read back from the database.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    started = time.perf_counter()
    plan = Plan.for_scale(scale)
    report: ProgressCallback = progress or (lambda _table, _rows: None)

    rng = random.Random(seed)
    orgs = _build_organizations(plan, rng)
    people = _build_people(plan, orgs, rng, NamePools.build(seed))
    catalogue = _catalogue(plan, orgs, rng)
    runs = _runs(plan, catalogue, people, rng)
    enrollment_plan = _enrollment_plan(plan, runs, people.student_years, rng)
    small_tables: dict[str, list[Row]] = {
        "users": people.users,
        "persons": people.persons,
        "organizations": orgs.rows,
        "students": people.students,
        "teachers": people.teachers,
        "courses": _course_rows(runs, enrollment_plan.sizes, rng),
        "rooms": _room_rows(plan, rng),
        "users_old": people.users_old,
    }
    params: dict[str, Any] = {
        "seed": seed,
        "snapshot": SNAPSHOT,
        "users": plan.counts["users"],
        "runs": plan.counts["courses"],
        "rooms": plan.counts["rooms"],
        "marks": plan.counts["grades"],
        "final_day": FINAL_EXAM_DAY,
    }
    tables_ddl, keys_ddl = _ddl()
    with conn.transaction(), conn.cursor() as cur:
        _drop_tables(cur)
        cur.execute(TUNE_TRANSACTION)
        cur.execute(tables_ddl)
        _mark_tables(cur)
        cur.execute(CREATE_HASH_FUNCTIONS)
        for table, rows in small_tables.items():
            _copy_rows(cur, table, rows)
            report(table, len(rows))

        cur.execute(CREATE_RUN_PLAN)
        _copy_rows(cur, "gen_run_plan", enrollment_plan.rows)
        cur.execute(ANALYZE_RUN_PLAN)
        cur.execute(INSERT_ENROLLMENTS, params)
        report("course_students", cur.rowcount)
        cur.execute(CREATE_MARK_PLAN, params)
        cur.execute(ANALYZE_MARK_PLAN)
        _insert_grades(cur, plan, params, report)
        cur.execute(UPDATE_FINAL_SCORES)
        cur.execute(UPDATE_GPA, params)

        for table, statement in (
            ("schedules", INSERT_SCHEDULES),
            ("news", INSERT_NEWS),
            ("messages", INSERT_MESSAGES),
            ("user_sessions", INSERT_USER_SESSIONS),
            ("login_logs", INSERT_LOGIN_LOGS),
        ):
            cur.execute(statement, {**params, "count": plan.counts[table]})
            report(table, cur.rowcount)

        cur.execute(keys_ddl)
        dirt = inject(cur, seed, _count_rows(cur)) if profile == "dirty" else []
        row_counts = _count_rows(cur)
    with conn.transaction(), conn.cursor() as cur:
        for table in (*MAPPED_TABLES, *UNMAPPED_TABLES):
            cur.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier("public"),
                                                       sql.Identifier(table)))
    return GenerationSummary(scale=scale, profile=profile, seed=seed, row_counts=row_counts,
                             seconds=time.perf_counter() - started, dirt=dirt)


def _insert_grades(cur: psycopg.Cursor[Any], plan: Plan, params: dict[str, Any],
                   report: ProgressCallback) -> None:
    # Chunks by enrollment id only to report progress; the rows do not depend on them.
    enrollments = plan.counts["course_students"]
    chunk = max(1, math.ceil(enrollments / GRADE_CHUNKS))
    written = 0
    for first in range(1, enrollments + 1, chunk):
        cur.execute(INSERT_GRADES, {**params, "first": first, "last": first + chunk - 1})
        written += cur.rowcount
        report("grades", written)


def _count_rows(cur: psycopg.Cursor[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in (*MAPPED_TABLES, *UNMAPPED_TABLES):
        cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier("public"),
                                                                 sql.Identifier(table)))
        row = cur.fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts
