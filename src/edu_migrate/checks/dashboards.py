"""The guide's "Student dashboard loads", "Teacher dashboard loads" and "Admin panel accessible",
checked the way people see them: in headless Chromium, signed in through the page's own form.

A page passes when it answers without an HTTP error, logs no console error, and shows what the
database says its user has: a student their courses, every mark and final score; a teacher their
courses, every student on their rosters and every mark; an administrator the counts of users,
students and courses, and a search that finds a user and a course. Numbers are compared as
values (8.50 in the database is 8.5 or 8,5 on a page), and each mark must appear as often as the
database holds it, so a page that drops marks fails even when some equal numbers remain.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from edu_migrate.checks.endpoints import Account, CutoverCheck
from edu_migrate.errors import PreconditionFailed
from edu_migrate.files import owner_only_folder, write_private_file
from edu_migrate.pg.connect import connect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PAGES = {"student": "/student", "teacher": "/teacher", "admin": "/admin"}
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
# No network beyond the pages, no profile, no background services.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A page's search box: the first of these.
SEARCH_BOX = "input[type=search], input[name=q], input[name=search], input[name=query]"
USERNAME_BOX = ("input:not([type=hidden]):not([type=password]):not([type=submit])"
                ":not([type=checkbox]):not([type=radio]):not([type=button])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# A thousands separator: between digits, before a group of exactly three.
_GROUPING = re.compile(r"(?<=\d)[,.'\u00a0\u202f ](?=\d{3}(?!\d))")
SHOWN_MISSING = 5


@dataclass(frozen=True)
class Expected:
    """What one role's page must show, from the database."""

    texts: frozenset[str] = frozenset()
    numbers: Counter[Decimal] = field(default_factory=Counter)
    counts: Mapping[str, int] = field(default_factory=dict)
    # Search for the key; the page must then show the value.
    searches: Mapping[str, str] = field(default_factory=dict)


@cache
def _sql(name: str) -> bytes:
    return resources.files("edu_migrate.checks").joinpath(f"dashboard_{name}.sql").read_bytes()


def expectations(target_url: str, accounts: Mapping[str, Account]) -> dict[str, Expected]:
    """Per role with an account, what its page must show, read from edu_v2 by a user that
    row-level security does not filter."""
    found: dict[str, Expected] = {}
    with connect(target_url, purpose="target") as conn:
        for role in ("student", "teacher"):
            if role in accounts:
                rows = conn.execute(_sql(role), {"username": accounts[role].username}).fetchall()
                found[role] = Expected(
                    texts=frozenset(str(v) for kind, v in rows if kind == "text"),
                    numbers=Counter(Decimal(str(v)) for kind, v in rows if kind == "number"))
        if "admin" in accounts:
            student = accounts["student"].username if "student" in accounts else None
            rows = conn.execute(_sql("admin"), {"student": student}).fetchall()
            found["admin"] = Expected(
                counts={str(what): int(n) for kind, what, n in rows if kind == "count"},
                searches={str(term): str(shows) for kind, term, shows in rows if kind == "find"})
    return found


def page_urls(base_url: str, given: Mapping[str, str]) -> dict[str, str]:
    """The pages to check: those given (the university's own), else each role's page that
    `edu-migrate serve` has at `base_url`."""
    if given:
        return {role: given[role] for role in PAGES if role in given}
    return {role: base_url.rstrip("/") + path for role, path in PAGES.items()}


def save_screenshot(folder: Path, name: str, png: bytes) -> Path:
    """A dashboard's screenshot (marks, rosters): 0600 from its first byte, in a 0700 folder."""
    return write_private_file(owner_only_folder(folder) / f"dashboard-{name}.png", png)


def find_chromium() -> str:
    found = next((path for name in BROWSER_NAMES if (path := shutil.which(name))), None)
    if found is None:
        raise PreconditionFailed("--browser needs Chromium, and none is installed",
                                 "apt-get install chromium (Debian, Ubuntu)")
    return found


def check_pages(urls: Mapping[str, str], accounts: Mapping[str, Account],
                expected: Mapping[str, Expected], *, screenshots: Path | None = None,
                timeout: float = 30.0) -> list[CutoverCheck]:
    """Sign in as each role and check its page; screenshots go to `screenshots` when given."""
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    checks: list[CutoverCheck] = []
    if screenshots is not None:
        owner_only_folder(screenshots)  # they show marks and rosters
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            for role, url in urls.items():
                account = accounts.get(role)
                if account is None:
                    checks.append(CutoverCheck(f"Browser: {role} page", False,
                                               f"no account to sign in with: pass --{role} "
                                               "USER:PASS"))
                    continue
                visit = _Visit(role, url, account, expected.get(role, Expected()), screenshots)
                checks.extend(visit.run(browser, timeout))
        finally:
            browser.close()
    return checks


@dataclass
class _Visit:
    role: str
    url: str
    account: Account
    expected: Expected
    screenshots: Path | None
    checks: list[CutoverCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    status: int = 0

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(CutoverCheck(f"Browser: {self.role} {name}", passed, detail))
        return passed

    def run(self, browser: Browser, timeout: float) -> list[CutoverCheck]:
        from playwright.sync_api import Error

        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(timeout * 1000)
        page = context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed",
                lambda r: self.errors.append(f"{r.url} failed: {r.failure or 'no answer'}"))
        try:
            if self._sign_in(page) and self._loaded(page):
                self._shows(page)
        except Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.check("page", False, f"{self.url}: {first[:200]}")
        finally:
            context.close()
        return self.checks

    def _sign_in(self, page: Page) -> bool:
        """Open the page, which must ask for a password, and sign in through its form."""
        page.goto(self.url, wait_until="load")
        password = page.locator("input[type=password]")
        if not password.count():
            return self.check("sign-in", False,
                              f"{self.url} showed its page without asking anybody to sign in")
        form = page.locator("form", has=password)
        form.locator(USERNAME_BOX).first.fill(self.account.username)
        password.first.fill(self.account.password)
        form_page = _without_query(page.url)
        with page.expect_navigation(wait_until="load") as navigation:
            password.first.press("Enter")
        self.status = navigation.value.status if navigation.value else 0
        if page.locator("input[type=password]").count():
            return self.check(f"sign-in ({self.account.username})", False,
                              f"{self.status}, the sign-in form came back")
        if self.status >= 400 and _without_query(page.url) == form_page:
            # Refused where it was sent, not on the page it led to (that is the page's check).
            return self.check(f"sign-in ({self.account.username})", False,
                              f"{self.status} from the sign-in form")
        return self.check(f"sign-in ({self.account.username})", True, "through the page's form")

    def _loaded(self, page: Page) -> bool:
        """The page itself, where the sign-in led to it, or opened again: did it answer?"""
        status = self.status
        if _without_query(page.url) != _without_query(self.url):
            response = page.goto(self.url, wait_until="load")
            status = response.status if response else 0
        shot = self._screenshot(page, self.role)
        errors = list(self.errors)
        detail = (f"{status} from {self.url}, {len(errors)} console errors"
                  + (f" ({errors[0][:150]})" if errors else "")
                  + (f"; screenshot {shot}" if shot else ""))
        answered = 200 <= status < 400
        self.check("page loads", answered and not errors, detail)
        # A page with console errors may still show its data: that is worth knowing too.
        return answered

    def _screenshot(self, page: Page, name: str) -> str | None:
        if self.screenshots is None:
            return None
        return save_screenshot(self.screenshots, name, page.screenshot(full_page=True)).name

    def _shows(self, page: Page) -> None:
        text = _visible_text(page)
        expected = self.expected
        if expected.texts or expected.numbers:
            missing_texts = sorted(t for t in expected.texts if t.casefold() not in text.casefold())
            missing_numbers = expected.numbers - _numbers(text)
            wanted, lacking = expected.numbers.total(), missing_numbers.total()
            texts = ("course codes and their name" if self.role == "student"
                     else "course codes and student numbers")
            detail = (f"{len(expected.texts) - len(missing_texts)} of {len(expected.texts)} "
                      f"{texts}; {wanted - lacking} of {wanted} marks and final scores")
            if missing_texts:
                detail += f"; missing {', '.join(missing_texts[:SHOWN_MISSING])}"
            if lacking:
                shown = ", ".join(f"{_plain(v)}×{n}" for v, n in
                                  missing_numbers.most_common(SHOWN_MISSING))
                detail += f"; marks missing: {shown}"
            self.check("page shows their courses and marks", not missing_texts and not lacking,
                       detail)
        if expected.counts:
            flat = _GROUPING.sub("", text)
            missing = [f"{what} ({n:,})" for what, n in expected.counts.items()
                       if not re.search(rf"(?<![\d.,]){n}(?![\d]|[.,]\d)", flat)]
            self.check("page shows the counts", not missing,
                       "shows " + ", ".join(f"{n:,} {what}" for what, n in expected.counts.items()
                                            if f"{what} ({n:,})" not in missing)
                       + (f"; missing {', '.join(missing)}" if missing else ""))
        for term, shows in expected.searches.items():
            self._search(page, term, shows)

    def _search(self, page: Page, term: str, shows: str) -> None:
        box = page.locator(SEARCH_BOX)
        if not box.count():
            self.check(f"search for “{term}”", False,
                       "no search box (an input of type search, or named q, search or query)")
            return
        self.errors.clear()
        box.first.fill(term)
        with page.expect_navigation(wait_until="load") as navigation:
            box.first.press("Enter")
        status = navigation.value.status if navigation.value else 0
        found = shows.casefold() in _visible_text(page).casefold()
        self._screenshot(page, f"{self.role}-search")
        self.check(f"search for “{term}”", 200 <= status < 400 and found and not self.errors,
                   f"{status}, " + ("finds " if found else "does not show ") + shows
                   + (f", {len(self.errors)} console errors" if self.errors else ""))


def _without_query(url: str) -> str:
    return urlsplit(url)._replace(query="", fragment="").geturl()


def _visible_text(page: Page) -> str:
    """The page's text as rendered, with every collapsed section opened first."""
    page.eval_on_selector_all("details", "all => all.forEach(d => { d.open = true; })")
    return page.inner_text("body")


def _numbers(text: str) -> Counter[Decimal]:
    return Counter(Decimal(n.replace(",", ".")) for n in _NUMBER.findall(text))


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}"
