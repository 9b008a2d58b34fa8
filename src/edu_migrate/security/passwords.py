"""Password hashes: the legacy ones (unsalted MD5 of the UTF-8 bytes, bcrypt) still verify after
the migration; new hashes are argon2id. An account still on MD5 gets an argon2 hash at its first
successful login.

Nothing here logs, returns or raises anything that contains a password or a hash.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import cache

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MODERN_ALGO = "argon2"
# bcrypt looks at the first 72 bytes of a password only; legacy hashes were made that way, and
# newer releases of the library refuse longer input instead of truncating it.
BCRYPT_MAX_BYTES = 72

_hasher = PasswordHasher()


@cache
def _unknown_account_hash() -> str:
    # Verified when the account does not exist, so that a wrong username takes as long as a
    # wrong password and the response time does not tell which usernames exist.
    return _hasher.hash("no account has this password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify_md5(password: str, stored: str) -> bool:
    digest = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest()
    return hmac.compare_digest(digest, stored.lower())


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


_VERIFIERS = {"md5": _verify_md5, "bcrypt": _verify_bcrypt, MODERN_ALGO: _verify_argon2}


def verify(password: str, stored: str, algo: str) -> bool:
    """Does `password` match the stored hash of algorithm `algo`? Unknown algorithms never do."""
    verifier = _VERIFIERS.get(algo)
    return verifier is not None and verifier(password, stored)


def verify_unknown_account(password: str) -> bool:
    """Spend the time of a real verification; always False."""
    _verify_argon2(password, _unknown_account_hash())
    return False


def needs_rehash(stored: str, algo: str) -> bool:
    """MD5 is broken for passwords; an argon2 hash made with weaker parameters is outdated."""
    if algo == "md5":
        return True
    if algo == MODERN_ALGO:
        try:
            return _hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True
    return False
