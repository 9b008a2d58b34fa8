"""Password hashes: the legacy ones (unsalted MD5 of the UTF-8 bytes, bcrypt) still verify after
the migration; new hashes are argon2id, and every legacy hash becomes one at its account's first
successful login.

A login attempt costs at least one argon2 computation, whether the account is unknown, hashed
with MD5, bcrypt or argon2, and whether the password is right or wrong (a right legacy password
pays it as its new argon2 hash). A bcrypt account costs its bcrypt on top (twice for a password
not typed in NFC), so equal cost is finished by the caller: `check_login` says how long the
verification took, and the API holds every failure until the slowest verification it has seen
(edu_migrate.web.database). So the time of a failure tells nothing about which accounts exist or
how they are hashed. Argon2 takes 64 MiB per computation:
at most HASHING_SLOTS run at once, so a flood of logins queues instead of exhausting memory.

Passwords are compared in Unicode NFC (the form new hashes are made of); a legacy hash is also
tried with the password exactly as typed, the bytes the old system hashed.

Nothing here logs, returns or raises anything that contains a password or a hash.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MODERN_ALGO = "argon2"
LEGACY_ALGOS = ("md5", "bcrypt")
# bcrypt looks at the first 72 bytes of a password only; legacy hashes were made that way, and
# newer releases of the library refuse longer input instead of truncating it.
BCRYPT_MAX_BYTES = 72
# Concurrent hash computations, each up to 64 MiB, and how long a login waits for one.
HASHING_SLOTS = max(1, min(4, os.cpu_count() or 1))
SLOT_WAIT_SECONDS = 5.0

_hasher = PasswordHasher()
hashing_slots = threading.BoundedSemaphore(HASHING_SLOTS)


class HashingBusy(Exception):
    """Every hashing slot stayed taken for SLOT_WAIT_SECONDS: try again shortly."""


@contextmanager
def _hashing_slot() -> Iterator[None]:
    if not hashing_slots.acquire(timeout=SLOT_WAIT_SECONDS):
        raise HashingBusy
    try:
        yield
    finally:
        hashing_slots.release()


@cache
def _unknown_account_hash() -> str:
    # Verified when no real verification costs an argon2 computation.
    return _hasher.hash("no account has this password")


def _forms(password: str) -> list[str]:
    """The NFC form first; then the password as typed, when that differs."""
    normal = unicodedata.normalize("NFC", password)
    return [normal] if normal == password else [normal, password]


def hash_password(password: str) -> str:
    with _hashing_slot():
        return _hasher.hash(_forms(password)[0])


def _verify_md5(password: str, stored: str) -> bool:
    digest = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest()
    # Bytes: a stored value with non-ASCII characters is simply no match.
    return hmac.compare_digest(digest.encode(), stored.lower().encode("utf-8", "replace"))


def _verify_bcrypt(password: str, stored: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode("utf-8")[:BCRYPT_MAX_BYTES], stored.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False


def _verify_argon2(password: str, stored: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_LEGACY_VERIFIERS = {"md5": _verify_md5, "bcrypt": _verify_bcrypt}


def _matches(password: str, stored: str, algo: str) -> bool:
    """Does `password` match the stored hash of algorithm `algo`? Unknown algorithms never do."""
    if algo == MODERN_ALGO:
        return _verify_argon2(_forms(password)[0], stored)
    verifier = _LEGACY_VERIFIERS.get(algo)
    return verifier is not None and any(verifier(form, stored) for form in _forms(password))


def needs_rehash(stored: str, algo: str) -> bool:
    """Every legacy scheme is replaced; an argon2 hash made with weaker parameters too."""
    if algo != MODERN_ALGO:
        return True
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


@dataclass(frozen=True)
class LoginCheck:
    matches: bool
    new_hash: str | None = None  # the argon2 hash to store instead of a legacy one
    seconds: float = 0.0  # the verification's own time, the wait for a slot not included


# bcrypt at the cost most legacy systems used (PHP's password_hash default): a failure costs at
# least this much bcrypt from the first login on, before a real bcrypt account is seen.
CALIBRATION_BCRYPT = "$2b$10$QGVkdS1taWdyYXRlIGNhbO1LFz1Hh3Y5t0cTl9Zz1WnD4u6pJf4G."


@cache
def calibration_seconds() -> float:
    """What a failed login on a bcrypt account of the usual cost costs: one argon2 and one
    bcrypt verification."""
    with _hashing_slot():
        started = time.perf_counter()
        _verify_argon2("calibration", _unknown_account_hash())
        _verify_bcrypt("calibration", CALIBRATION_BCRYPT)
        return time.perf_counter() - started


def check_login(password: str, stored: str | None, algo: str | None) -> LoginCheck:
    """Verify a login against an account's stored hash (None: no such account), at the cost of
    at least one argon2 computation in every case. An argon2 hash is never replaced here (the
    database refuses it: only a legacy hash is upgraded at login), even one of weaker
    parameters."""
    with _hashing_slot():
        started = time.perf_counter()
        check = _check_login(password, stored, algo)
        return LoginCheck(check.matches, check.new_hash, time.perf_counter() - started)


def _check_login(password: str, stored: str | None, algo: str | None) -> LoginCheck:
    if stored is None or algo is None:
        _verify_argon2(password, _unknown_account_hash())
        return LoginCheck(False)
    if algo == MODERN_ALGO:
        return LoginCheck(_matches(password, stored, algo))
    if not _matches(password, stored, algo):
        _verify_argon2(password, _unknown_account_hash())
        return LoginCheck(False)
    return LoginCheck(True, _hasher.hash(_forms(password)[0]))
